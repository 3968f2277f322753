"""mmmv: MambaVision backbones for OpenMMLab.

``import mmmv`` registers everything the package defines into mmdet's and mmseg's registries
(so configs can use ``custom_imports = dict(imports=['mmmv'])``) and routes mmengine's checkpoint
loading through mmmv's safe loader.
"""
from .checkpoint import install_checkpoint_io
from .models import MambaVision
from .ops import selective_scan
from .registry import register_all_modules

__version__ = '0.1.0'
__all__ = ['MambaVision', 'selective_scan', '__version__']

install_checkpoint_io()
register_all_modules()
