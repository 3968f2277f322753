"""Running mmmv models with mmengine's Runner, on GPUs or CPUs (after mmdet's ``mmdet/engine``).

- :mod:`.hooks`: FiniteLossHook, RNGStateHook, CheckpointFitHook, CrashSafeCheckpointHook,
  PrepareInferenceHook.
- :mod:`.config`: :func:`load_config` (what every tool does to a config), :func:`task_of`.
- :mod:`.device`: :func:`adapt_to_device` (a GPU config on a CPU), the CPU DDP wrapper.
- :mod:`.amp`: ``--amp`` for training (:func:`enable_amp`) and inference
  (:func:`inference_autocast`), the CPU autocast optimizer wrapper.
- :mod:`.inference`: :func:`prepare_for_inference` (once, before the first image).
- :mod:`.mmcv_ops`: mmcv's NMS / RoIAlign / RoIPool in float32 under CPU autocast, RoIAlign's
  CPU inference by mmmv's kernel.
- :mod:`.distributed`: ``LOCAL_RANK``, the CPU process group, its teardown.
- :mod:`.resume`: which checkpoint ``--resume`` continues from.
- :mod:`.runner`: :func:`build_runner`.
- :mod:`.evaluation`: what ``tools/test.py``'s flags change in a config.
- :mod:`.mmengine_internals`: every private mmengine method or attribute mmmv relies on.
"""
from .amp import (CPUAutocastOptimWrapper, Float32Evaluator, enable_amp, enable_test_amp,
                  inference_autocast)
from .config import TASKS, add_reliability_hooks, load_config, task_of
from .device import CPUDistributedDataParallel, adapt_to_device
from .distributed import export_local_rank, init_cpu_distributed, release_distributed
from .evaluation import (enable_inference_preparation, enable_result_dump, enable_tta,
                         enable_visualization)
from .hooks import (CheckpointFitHook, CrashSafeCheckpointHook, FiniteLossHook,
                    PrepareInferenceHook, RNGStateHook, get_rng_state, set_rng_state)
from .inference import cast_autocast_weights, channels_last_logits, prepare_for_inference
from .mmcv_ops import mmcv_ops_in_float32
from .resume import find_resume_checkpoint
from .runner import build_runner

__all__ = [
    'CPUAutocastOptimWrapper', 'Float32Evaluator', 'enable_amp', 'enable_test_amp',
    'inference_autocast', 'TASKS', 'add_reliability_hooks', 'load_config', 'task_of',
    'CPUDistributedDataParallel', 'adapt_to_device', 'export_local_rank', 'init_cpu_distributed',
    'release_distributed', 'enable_inference_preparation', 'enable_result_dump', 'enable_tta',
    'enable_visualization', 'CheckpointFitHook', 'CrashSafeCheckpointHook', 'FiniteLossHook',
    'PrepareInferenceHook', 'cast_autocast_weights', 'channels_last_logits', 'prepare_for_inference', 'RNGStateHook', 'get_rng_state', 'set_rng_state', 'mmcv_ops_in_float32',
    'find_resume_checkpoint', 'build_runner'
]
