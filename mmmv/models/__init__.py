"""MambaVision model code (depends on torch, timm layers and mmengine only)."""
from .mambavision import ARCH_SETTINGS, MambaVision
from .mixers import Attention, MambaVisionMixer, fast_paths

__all__ = ['ARCH_SETTINGS', 'Attention', 'MambaVision', 'MambaVisionMixer', 'fast_paths']
