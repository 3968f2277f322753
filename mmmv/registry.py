"""The one place that registers mmmv's modules into OpenMMLab registries (mmengine's public
``Registry.register_module``).

The model code depends on torch, timm and mmengine only; mmdet and mmseg appear here. Each
downstream library that is installed gets the backbone under its own name and under the alias
``MM_mamba_vision`` used by NVIDIA's released configs. The hooks and wrappers go to mmengine's
root registries, which mmdet's and mmseg's fall back to.
"""
import importlib

from mmengine.registry import EVALUATOR, HOOKS, MODEL_WRAPPERS, OPTIM_WRAPPERS

from .engine import (CheckpointFitHook, CPUAutocastOptimWrapper, CPUDistributedDataParallel,
                     CrashSafeCheckpointHook, FiniteLossHook, Float32Evaluator,
                     PrepareInferenceHook, RNGStateHook)
from .models import MambaVision, MM_mamba_vision

# NVIDIA's configs name the backbone MM_mamba_vision and use its keywords (the adapter)
BACKBONES = {'MambaVision': MambaVision, 'MM_mamba_vision': MM_mamba_vision}
DOWNSTREAM_REGISTRIES = ('mmdet.registry', 'mmseg.registry')
HOOK_CLASSES = (FiniteLossHook, RNGStateHook, CheckpointFitHook, CrashSafeCheckpointHook,
                PrepareInferenceHook)


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
    """Register the backbone (and its NVIDIA-keyword alias), the CPU optimizer and DDP wrappers,
    the float32 evaluator of ``--amp`` testing and mmmv's hooks. Idempotent."""
    for registry in downstream_model_registries():
        for name, module in BACKBONES.items():
            registry.register_module(name=name, module=module, force=True)
    OPTIM_WRAPPERS.register_module(module=CPUAutocastOptimWrapper, force=True)
    MODEL_WRAPPERS.register_module(module=CPUDistributedDataParallel, force=True)
    EVALUATOR.register_module(module=Float32Evaluator, force=True)
    for hook in HOOK_CLASSES:
        HOOKS.register_module(module=hook, force=True)
