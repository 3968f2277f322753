"""mmmv's hooks. :func:`mmmv.registry.register_all_modules` registers them in mmengine's root
HOOKS registry (which mmdet's and mmseg's fall back to); :func:`mmmv.engine.load_config` adds
them to every config the tools load:

- :class:`FiniteLossHook`: stops training at the first non-finite loss, naming the iteration
  (and the ranks), on every rank at once.
- :class:`RNGStateHook`: saves the python / numpy / torch (CPU and CUDA) random states in every
  checkpoint and restores them on resume; validation does not consume them.
- :class:`CheckpointFitHook`: a checkpoint loaded to test or to resume must fit the model.
- :class:`PrepareInferenceHook` (``tools/test.py``): prepares the model for inference before
  testing (MambaVision's BatchNorm folded into the convs, segmentation logits channels-last).
- :class:`CrashSafeCheckpointHook` (replaces mmengine's ``CheckpointHook``): removes outdated
  checkpoints only after the new one and ``last_checkpoint`` are written, and writes
  ``last_checkpoint`` atomically, so a run killed at any moment leaves a resumable work dir.
"""
from .checkpoint_fit_hook import CheckpointFitHook
from .checkpoint_hook import CrashSafeCheckpointHook
from .finite_loss_hook import FiniteLossHook
from .prepare_inference_hook import PrepareInferenceHook
from .rng_state_hook import RNGStateHook, get_rng_state, set_rng_state

__all__ = ['CheckpointFitHook', 'CrashSafeCheckpointHook', 'FiniteLossHook',
           'PrepareInferenceHook', 'RNGStateHook', 'get_rng_state', 'set_rng_state']
