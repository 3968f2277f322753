"""MambaVision model code (depends on torch, timm layers, mmengine and
mmmv.errors only)."""
from .config_check import check_backbone_cfg
from .mambavision import ARCH_SETTINGS, MambaVision, fuse_conv_bn
from .mixers import Attention, MambaVisionMixer
from .nvidia_compat import MM_mamba_vision

__all__ = ['ARCH_SETTINGS', 'Attention', 'MambaVision', 'MambaVisionMixer', 'MM_mamba_vision',
           'check_backbone_cfg', 'fuse_conv_bn']
