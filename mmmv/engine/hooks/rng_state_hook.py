"""Save the random state in every checkpoint and restore it on resume."""
import logging
import random

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log

RNG_KEY = 'rng_state'


def get_rng_state() -> dict:
    """Python, numpy, torch CPU (and initialised CUDA) random states as tensors and plain Python
    values, which load under mmmv's weights-only allow-list."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    cuda = (torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized() else [])
    return dict(
        python=dict(version=version, internal=list(internal), gauss_next=gauss_next),
        numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state(),
        cuda=list(cuda),
        world_size=get_world_size())


def _host_bytes(state: torch.Tensor) -> torch.Tensor:
    """A generator state as the CPU uint8 tensor ``torch.set_rng_state`` and
    ``torch.cuda.set_rng_state`` take. mmengine resumes with ``map_location=get_device()``, so
    on a GPU machine the states arrive as CUDA tensors."""
    return state.to('cpu', torch.uint8)


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned, whatever device its tensors were loaded to.

    The CUDA states are restored when this machine has as many GPUs as the saving one had.
    """
    py = state['python']
    random.setstate((py['version'], tuple(py['internal']), py['gauss_next']))
    npy = state['numpy']
    keys = npy['keys'].to('cpu').numpy().astype(np.uint32)
    np.random.set_state((npy['kind'], keys, npy['pos'], npy['has_gauss'],
                         npy['cached_gaussian']))
    torch.set_rng_state(_host_bytes(state['torch']))
    cuda = state.get('cuda') or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_host_bytes(s) for s in cuda])


class _RestoreAfterSkip:
    """Stands in for IterBasedTrainLoop's dataloader iterator while the loop skips the batches
    a resumed run has already trained on; restores the random state just before the first new
    batch is drawn, then puts the real iterator back."""

    def __init__(self, loop, skip, state):
        self.loop, self.inner, self.skip, self.state = loop, loop.dataloader_iterator, skip, state
        self.seen = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.seen == self.skip:
            set_rng_state(self.state)
            self.loop.dataloader_iterator = self.inner
        self.seen += 1
        return next(self.inner)


class RNGStateHook(Hook):
    """Save the random state in checkpoints; restore it when training resumes.

    mmengine re-seeds a resumed run with the config's seed; then the model is initialised and the
    dataloader replays the trained batches (to advance the sampler), all of which draw random
    numbers, so the resumed run's dropout, drop-path and augmentation differ from the
    uninterrupted run's. This hook stores the state at the moment of saving under
    ``checkpoint['rng_state']`` (tensors and plain Python values: it loads under the safe
    allow-list) and, on resume, restores it right after mmengine's replay, before the first new
    batch is loaded. With the same seed, data, thread count and deterministic kernels, the resumed
    run then ends with the same weights as the uninterrupted one.

    Validation runs with its own copy of the state (saved in ``before_val`` and put back in
    ``after_val``), so an uninterrupted run that validates at a checkpoint draws the same numbers
    as a resumed run that does not.

    Multi-process runs store rank 0's state only and do not restore it (each rank has its own
    state); a resumed multi-process run is reproducible but not bitwise equal to an
    uninterrupted one. ``load_from`` (fine-tuning, iteration 0) restores nothing.
    """

    priority = 'VERY_LOW'

    def __init__(self):
        self._pending = None
        self._outside_val = None

    def before_save_checkpoint(self, runner, checkpoint):
        # a checkpoint written during validation (save_best) stores the training state
        checkpoint[RNG_KEY] = self._outside_val or get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint):
        self._pending = checkpoint.get(RNG_KEY)

    def before_train(self, runner):
        state, self._pending = self._pending, None
        if runner.iter == 0 and runner.epoch == 0:
            return  # a fresh run or fine-tuning from load_from
        if state is None:
            print_log('the resumed checkpoint holds no random state (written without mmmv\'s '
                      'RNGStateHook): the run continues with other random numbers than an '
                      'uninterrupted run would', logger='current', level=logging.WARNING)
            return
        if get_world_size() > 1 or state.get('world_size', 1) > 1:
            print_log('multi-process run: random states are not restored on resume',
                      logger='current')
            return
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop: restore after the replay
            loop.dataloader_iterator = _RestoreAfterSkip(loop, runner.iter, state)
        else:
            set_rng_state(state)
        print_log(f'the random state of iteration {runner.iter} (from the checkpoint) is '
                  'restored before the first new batch is loaded', logger='current')

    def before_val(self, runner):
        self._outside_val = get_rng_state()

    def after_val(self, runner):
        if self._outside_val is not None:
            set_rng_state(self._outside_val)
            self._outside_val = None
