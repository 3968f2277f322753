"""mmmv: MambaVision backbones for OpenMMLab.

``import mmmv`` (or ``custom_imports = dict(imports=['mmmv'])`` in a config) changes these
process-wide settings, here and nowhere else, each through a named function:

1. :func:`mmmv.registry.register_all_modules`: the backbone in mmdet's and mmseg's MODELS (as
   ``MambaVision`` and ``MM_mamba_vision``), mmmv's hooks and CPU wrappers in mmengine's
   registries.
2. :func:`mmmv.checkpoint.install_checkpoint_io`: mmengine's checkpoint loaders go through mmmv's
   allow-listed ``torch.load`` and its local file writes become atomic.
3. :func:`mmmv.engine.mmcv_ops_in_float32`: mmcv's NMS / RoIAlign / RoIPool take float32 inputs
   under CPU autocast, and mmcv's RoIAlign module runs mmmv's multi-threaded kernel in CPU
   inference (the same numbers).
"""
from .checkpoint import install_checkpoint_io
from .engine import mmcv_ops_in_float32
from .models import MambaVision
from .ops import selective_scan
from .registry import register_all_modules

__version__ = '0.1.0'
__all__ = ['MambaVision', 'selective_scan', '__version__']

register_all_modules()
install_checkpoint_io()
mmcv_ops_in_float32()
