"""Prepare the model for inference once, before testing."""
import torch
from mmengine.hooks import Hook

from ..inference import prepare_for_inference


class PrepareInferenceHook(Hook):
    """Before the test loop, put the model in eval mode and prepare it for inference once
    (:func:`mmmv.engine.inference.prepare_for_inference`: MambaVision's BatchNorm layers folded
    into the convs, segmentation logits channels-last; when the test loop runs a CPU model under
    bfloat16 autocast, ``tools/test.py --amp``, the weights autocast casts stored in bfloat16).
    ``tools/test.py`` adds it. A fused model cannot train again, so configs whose validation
    alternates with training do not get it.
    """

    priority = 'LOW'  # after the checkpoint is loaded and checked

    def before_test_epoch(self, runner) -> None:
        on_cpu = next(runner.model.parameters()).device.type == 'cpu'
        cpu_amp = on_cpu and getattr(runner.test_loop, 'fp16', False)
        prepare_for_inference(runner.model, torch.bfloat16 if cpu_amp else None)
