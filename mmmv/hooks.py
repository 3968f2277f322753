"""Hooks that make training stop loudly and resume exactly.

:func:`mmmv.runtime.load_config` adds them to every config the tools load (see
:func:`mmmv.runtime.add_reliability_hooks`):

- :class:`FiniteLossHook`: stops training at the first non-finite loss, naming the iteration.
- :class:`RNGStateHook`: saves the python / numpy / torch (CPU and CUDA) random states in every
  checkpoint and restores them on resume, so a resumed run continues the random streams of the
  uninterrupted one; validation does not consume them.
- :class:`CheckpointFitHook`: a checkpoint loaded to test or to resume must fit the model.
- :class:`CrashSafeCheckpointHook` (replaces mmengine's ``CheckpointHook``): removes outdated
  checkpoints only after the new one and ``last_checkpoint`` are written, and writes
  ``last_checkpoint`` atomically, so a run killed at any moment leaves a resumable work dir.
"""
import glob
import logging
import math
import os
import os.path as osp
import random

import numpy as np
import torch
from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import BaseLoop

from .checkpoint import atomic_write
from .input_checks import (CheckpointMismatchError, checkpoint_mismatches, describe_mismatch,
                           unwrap_model)

RNG_KEY = 'rng_state'


def _log(msg, level=logging.INFO):
    print_log(msg, logger='current', level=level)


# ------------------------------------------------------------------------ non-finite loss
class FiniteLossHook(Hook):
    """Raise ``FloatingPointError`` as soon as the training loss is NaN or infinite.

    Reads the loss that mmengine's RuntimeInfoHook has already copied to the message hub as a
    Python float (it calls ``.item()`` on every logged value each iteration), so the check is one
    ``math.isfinite`` per iteration and adds no device synchronisation. It runs before the
    CheckpointHook of the same iteration: no checkpoint with non-finite weights is written.

    Args:
        key (str): The logged value to check. Defaults to 'loss' (the sum the optimizer steps on).
    """

    priority = 'ABOVE_NORMAL'  # after RuntimeInfoHook (VERY_HIGH), before logger and checkpoint

    def __init__(self, key='loss'):
        self.key = key

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        scalars = runner.message_hub.log_scalars
        name = f'train/{self.key}'
        if name in scalars:
            value = scalars[name].current()
        elif isinstance(outputs, dict) and self.key in outputs:
            value = float(outputs[self.key])  # not logged by mmengine: read it ourselves
        else:
            return
        if math.isfinite(value):
            return
        parts = []
        for key in (outputs or {}):
            logged = scalars.get(f'train/{key}')
            if key != self.key and logged is not None and not math.isfinite(logged.current()):
                parts.append(f'{key}={logged.current()}')
        detail = f" (non-finite terms: {', '.join(parts)})" if parts else ''
        last = runner.message_hub.get_info('last_ckpt')
        resume = (f' The last checkpoint written is {last}; `tools/train.py CONFIG --resume` '
                  'continues from it.' if last else '')
        raise FloatingPointError(
            f'loss became {value} at iteration {runner.iter + 1}{detail}; training stopped '
            '(no checkpoint of this iteration was written). Lower the learning rate, add '
            f'gradient clipping or check the data.{resume}')


# ------------------------------------------------------------------------ random state
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


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py = state['python']
    random.setstate((py['version'], tuple(py['internal']), py['gauss_next']))
    npy = state['numpy']
    np.random.set_state((npy['kind'], npy['keys'].numpy().astype(np.uint32), npy['pos'],
                         npy['has_gauss'], npy['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda') or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


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
            _log('the resumed checkpoint holds no random state (written without mmmv\'s '
                 'RNGStateHook): the run continues with other random numbers than an '
                 'uninterrupted run would', logging.WARNING)
            return
        if get_world_size() > 1 or state.get('world_size', 1) > 1:
            _log('multi-process run: random states are not restored on resume')
            return
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop: restore after the replay
            loop.dataloader_iterator = _RestoreAfterSkip(loop, runner.iter, state)
        else:
            set_rng_state(state)
        _log(f'the random state of iteration {runner.iter} (from the checkpoint) is restored '
             'before the first new batch is loaded')

    def before_val(self, runner):
        self._outside_val = get_rng_state()

    def after_val(self, runner):
        if self._outside_val is not None:
            set_rng_state(self._outside_val)
            self._outside_val = None


# ------------------------------------------------------------------------ checkpoint fit
class CheckpointFitHook(Hook):
    """A checkpoint loaded to test or to resume must fit the model exactly.

    mmengine loads state dicts non-strictly and only logs a warning when a tensor has another
    shape or is missing, so testing a checkpoint of another arch evaluates a partly random model.
    This hook raises :class:`~mmmv.input_checks.CheckpointMismatchError`, naming the keys and
    shapes, when a checkpoint is loaded by ``tools/test.py`` (any run that is not training) or
    for ``--resume``. Fine-tuning from ``load_from`` (typically another number of classes) keeps
    mmengine's behaviour: the mismatches are logged as a warning.
    """

    priority = 'LOW'  # after hooks that rewrite the checkpoint (EMA)

    def after_load_checkpoint(self, runner, checkpoint):
        state = checkpoint.get('state_dict', checkpoint)
        shapes, missing, unexpected = checkpoint_mismatches(unwrap_model(runner.model).state_dict(),
                                                            state)
        if not (shapes or missing):
            return
        resuming = bool(getattr(runner, '_resume', False))
        # Runner.train builds the train loop before loading; Runner.test/val never do.
        training = isinstance(getattr(runner, '_train_loop', None), BaseLoop)
        name = self._name(runner)
        message = describe_mismatch(name, shapes, missing, unexpected)
        if resuming or not training:
            raise CheckpointMismatchError(message)
        _log(message + ' (load_from: loading the rest)', logging.WARNING)

    @staticmethod
    def _name(runner):
        cfg = getattr(runner, 'cfg', None) or {}
        name = cfg.get('load_from') or getattr(runner, '_load_from', None)
        if not name and getattr(runner, '_resume', False):
            path = osp.join(runner.work_dir, 'last_checkpoint')
            if osp.isfile(path):
                with open(path) as f:
                    name = f.read().strip()
        return repr(name) if name else '(resumed)'


# ------------------------------------------------------------------------ checkpoint files
class CrashSafeCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook, safe to kill at any moment.

    mmengine's hook deletes the oldest kept checkpoint *before* writing the new one and writes
    ``last_checkpoint`` with a plain ``open('w')``. With ``max_keep_ckpts=1`` a run killed while
    saving ``iter_4.pth`` has already deleted ``iter_2.pth``, and ``last_checkpoint`` still names
    it: ``--resume`` fails. This hook writes the new checkpoint (atomically, through mmmv's
    AtomicLocalBackend), then ``last_checkpoint`` (atomically), and only then deletes the
    outdated checkpoint. Before training it removes the temporary files that a save interrupted
    by a kill leaves behind (``.iter_4.pth.*.tmp``). Same arguments as ``CheckpointHook``.
    """

    def before_train(self, runner):
        super().before_train(runner)
        if not is_main_process() or not osp.isdir(self.out_dir):
            return
        for path in glob.glob(osp.join(self.out_dir, '.*.tmp')):
            os.unlink(path)
            _log(f'removed {path}, left by a checkpoint save that was interrupted')

    def _save_checkpoint_with_step(self, runner, step, meta):
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), str(self.last_ckpt).encode())
        if outdated is not None and outdated != step:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints are folders
                self.file_backend.rmtree(path)


HOOK_CLASSES = (FiniteLossHook, RNGStateHook, CheckpointFitHook, CrashSafeCheckpointHook)
