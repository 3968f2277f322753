"""Mixed precision: the ``--amp`` flag of the tools, on a GPU or a CPU.

On CUDA, training uses mmengine's ``AmpOptimWrapper`` (float16 autocast with dynamic loss
scaling). mmengine's wrapper needs CUDA; on a CPU it becomes :class:`CPUAutocastOptimWrapper`:
bfloat16 autocast, which needs no loss scaling. Inference (``tools/test.py --amp``,
``tools/image_demo.py --amp``) runs under :func:`inference_autocast`: bfloat16 on both.
"""
from contextlib import contextmanager

import torch
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.optim import OptimWrapper
from mmengine.structures import BaseDataElement

from .device import adapt_to_device

AMP_WRAPPERS = ('AmpOptimWrapper', 'CPUAutocastOptimWrapper')


class CPUAutocastOptimWrapper(OptimWrapper):
    """OptimWrapper that runs the forward pass under CPU autocast (bfloat16 by default).

    Accepts and ignores ``loss_scale`` so that an ``AmpOptimWrapper`` config converts in place.
    """

    def __init__(self, *args, dtype='bfloat16', loss_scale=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def enable_amp(cfg: Config, cuda_available=None) -> Config:
    """The training ``--amp`` flag: ``AmpOptimWrapper`` with dynamic loss scaling, then the
    device adaptation (:func:`~mmmv.engine.device.adapt_to_device`: bfloat16 CPU autocast
    without CUDA). Callers need nothing else."""
    if cfg.optim_wrapper.get('type', 'OptimWrapper') not in AMP_WRAPPERS:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    return adapt_to_device(cfg, cuda_available)


def inference_autocast(device, enabled=True, force=False):
    """The inference ``--amp`` flag: a ``torch.autocast`` context in bfloat16 for ``device`` (a
    ``torch.device`` or a name such as 'cuda:0'); a no-op context when ``enabled`` is False.
    On a CPU without native bfloat16 it warns and stays float32 unless ``force``
    (``--amp-force``; :func:`mmmv.env.amp_allowed`). mmcv's NMS / RoIPool take float32 inside
    it, and RoIAlign reads bfloat16 in mmmv's kernel (``import mmmv`` arranges both)."""
    from ..env import amp_allowed
    enabled = enabled and amp_allowed(device, force)
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


def to_float32(element):
    """Cast the half-precision float tensors of a data sample (nested elements included) to
    float32 in place; integer tensors (labels, masks) stay as they are. Returns ``element``."""
    for key in element.keys():  # data fields (predictions), not metainfo
        value = element.get(key)
        if isinstance(value, BaseDataElement):
            to_float32(value)
        elif isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16):
            setattr(element, key, value.float())
    return element


class Float32Evaluator(Evaluator):
    """mmengine's Evaluator that hands its metrics predictions in float32: under bfloat16
    autocast a detector's boxes and scores come out in bfloat16, which numpy (and so mmdet's
    CocoMetric) cannot read."""

    def process(self, data_samples, data_batch=None):
        samples = [to_float32(s) for s in data_samples if isinstance(s, BaseDataElement)]
        super().process(samples or data_samples, data_batch)


def enable_test_amp(cfg: Config, force=False) -> Config:
    """``tools/test.py --amp``: mmengine's test loop runs under its autocast (``test_cfg.fp16``):
    bfloat16 on a CPU, float16 on CUDA, and the metrics read float32 predictions
    (:class:`Float32Evaluator`). On a CPU without native bfloat16 it warns and stays float32
    unless ``force`` (:func:`mmmv.env.amp_allowed`)."""
    from ..env import amp_allowed
    if amp_allowed('cuda' if torch.cuda.is_available() else 'cpu', force):
        cfg.test_cfg = dict(cfg.get('test_cfg') or dict(type='TestLoop'), fp16=True)
        metrics = cfg.get('test_evaluator')
        if metrics is not None and not (isinstance(metrics, dict) and 'metrics' in metrics):
            cfg.test_evaluator = dict(type='Float32Evaluator', metrics=metrics)
    return cfg
