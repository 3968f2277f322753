"""Fold MambaVision's BatchNorm layers into its convs before testing."""
from mmengine.hooks import Hook

from mmmv.models import fuse_conv_bn


class FuseConvBNHook(Hook):
    """Before the test loop, put the model in eval mode and fold the BatchNorm layers of its
    MambaVision backbone into the convs once (:func:`mmmv.models.fuse_conv_bn`), so inference
    runs no BatchNorm. ``tools/test.py`` adds it. A fused model cannot train again, so configs
    whose validation alternates with training do not get it.
    """

    priority = 'LOW'  # after the checkpoint is loaded and checked

    def before_test_epoch(self, runner) -> None:
        fuse_conv_bn(runner.model.eval())
