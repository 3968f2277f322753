"""Prepare the model for inference once, before testing."""
from mmengine.hooks import Hook

from ..inference import prepare_for_inference


class PrepareInferenceHook(Hook):
    """Before the test loop, put the model in eval mode and prepare it for inference once
    (:func:`mmmv.engine.inference.prepare_for_inference`: MambaVision's BatchNorm layers folded
    into the convs, segmentation logits channels-last). ``tools/test.py`` adds it. A fused model
    cannot train again, so configs whose validation alternates with training do not get it.
    """

    priority = 'LOW'  # after the checkpoint is loaded and checked

    def before_test_epoch(self, runner) -> None:
        prepare_for_inference(runner.model)
