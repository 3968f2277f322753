"""The modules that are exported: a segmentor's logits, a detector's backbone + neck features.

Both take the normalised image batch (N, 3, H, W) exactly as the config's data preprocessor hands
it to the model (mean subtracted, divided by std, padded).
"""
import torch.nn as nn

from mmmv.errors import UserError, check_file
from mmmv.models.mambavision import MambaVision


def tensor_bytes(*modules):
    """Bytes of the parameters and buffers of ``modules`` (None entries skipped)."""
    tensors = [t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())]
    return sum(t.numel() * t.element_size() for t in tensors)


class SegmentorLogits(nn.Module):
    """(N, 3, H, W) -> (N, num_classes, H, W): ``segmentor.encode_decode(inputs, metas)``, the
    logits resized to the input size (mmseg's ``predict`` before its argmax and un-padding)."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs):
        size = inputs.shape[-2:]
        # the decode head resizes its logits to the first image's img_shape; all share one size
        metas = [dict(img_shape=size, pad_shape=size, ori_shape=size)]
        return self.segmentor.encode_decode(inputs, metas)

    def weight_bytes(self):
        """Bytes of the weights the logits depend on (the auxiliary head's are not)."""
        model = self.segmentor
        return tensor_bytes(model.backbone, getattr(model, 'neck', None), model.decode_head)


class DetectorFeatures(nn.Module):
    """(N, 3, H, W) -> tuple of the neck's maps (N, C, H_i, W_i) in order: what
    ``detector.extract_feat(inputs)`` returns and the detector's heads read."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, inputs):
        return tuple(self.detector.extract_feat(inputs))

    def weight_bytes(self):
        """Bytes of the backbone's and the neck's weights."""
        return tensor_bytes(self.detector.backbone, getattr(self.detector, 'neck', None))


def build_exportable(config, checkpoint=None, cfg_options=None):
    """The module to export for a detector or segmentor config, on the CPU in eval mode.

    Without ``checkpoint`` the weights are random (drawn from a fixed seed; no pretrained
    download: the backbone's ``init_cfg`` is dropped), else loaded from the file, which must fit
    the model exactly. MambaVision's fast paths are off, so the published computation is traced.

    Returns (module, task): :class:`SegmentorLogits` for 'mmseg', :class:`DetectorFeatures` for
    'mmdet'.
    """
    from mmmv.checkpoint.fit import load_checkpoint_exact
    from mmmv.engine import load_config, task_of
    from mmmv.flops import build_model

    if checkpoint is not None:
        check_file(checkpoint, 'checkpoint', 'Give a checkpoint of this config, or none for '
                   'random weights')
    cfg = load_config(config, cfg_options, work_dir='.')
    task = task_of(cfg)
    model = build_model(cfg)  # random weights, fast paths off, SyncBN reverted, eval
    if not any(isinstance(m, MambaVision) for m in model.modules()):
        raise UserError('config file', config, 'builds no MambaVision backbone',
                        'Give one of the configs in configs/det or configs/seg')
    if checkpoint is not None:
        load_checkpoint_exact(model, checkpoint)
    wrapper = SegmentorLogits(model) if task == 'mmseg' else DetectorFeatures(model)
    return wrapper.eval(), task


def check_batch(batch):
    """``batch`` if it is a positive int, else a :class:`UserError` naming ``--batch``."""
    if batch < 1:
        raise UserError('--batch', batch, 'must be at least 1')
    return batch
