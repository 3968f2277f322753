"""mmmv: MambaVision backbones for OpenMMLab. `import mmmv` registers everything it defines."""
__version__ = '0.1.0'
