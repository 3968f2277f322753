"""The one place that registers mmmv's modules into OpenMMLab registries.

The model code depends on torch, timm and mmengine only; mmdet and mmseg appear here. Each
downstream library that is installed gets the backbone under its own name and under the alias
``MM_mamba_vision`` used by NVIDIA's released configs.
"""
import importlib

from mmengine.registry import HOOKS, MODEL_WRAPPERS, OPTIM_WRAPPERS

from .hooks import HOOK_CLASSES
from .models import MM_mamba_vision, MambaVision
from .runtime import CPUAutocastOptimWrapper, CPUDistributedDataParallel

# NVIDIA's configs' name builds through its keyword adapter (mmmv/models/nvidia_compat.py)
BACKBONES = {'MambaVision': MambaVision, 'MM_mamba_vision': MM_mamba_vision}
BACKBONE_NAMES = tuple(BACKBONES)
DOWNSTREAM_REGISTRIES = ('mmdet.registry', 'mmseg.registry')


def downstream_model_registries():
    """MODELS of every installed downstream library (mmdet, mmseg)."""
    registries = []
    for module_name in DOWNSTREAM_REGISTRIES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name.split('.')[0]:
                raise
            continue
        registries.append(module.MODELS)
    return registries


def register_all_modules():
    """Register the backbone (both names), the CPU optimizer and DDP wrappers and mmmv's hooks
    (in mmengine's root HOOKS registry, which mmdet's and mmseg's registries fall back to)."""
    for registry in downstream_model_registries():
        for name, module in BACKBONES.items():
            registry.register_module(name=name, module=module, force=True)
    OPTIM_WRAPPERS.register_module(module=CPUAutocastOptimWrapper, force=True)
    MODEL_WRAPPERS.register_module(module=CPUDistributedDataParallel, force=True)
    for hook in HOOK_CLASSES:
        HOOKS.register_module(module=hook, force=True)
