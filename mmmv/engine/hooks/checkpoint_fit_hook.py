"""A checkpoint loaded to test or to resume must fit the model."""
import logging

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint

from ...checkpoint.fit import (CheckpointMismatchError, checkpoint_mismatches, describe_mismatch,
                               unwrap_model)


class CheckpointFitHook(Hook):
    """A checkpoint loaded to test or to resume must fit the model exactly.

    mmengine loads state dicts non-strictly and only logs a warning when a tensor has another
    shape or is missing, so testing a checkpoint of another arch evaluates a partly random model.
    This hook raises :class:`~mmmv.checkpoint.fit.CheckpointMismatchError`, naming the keys and
    shapes, before the first test or validation batch of a run that loaded such a checkpoint
    (``tools/test.py``) and before the first training iteration of a resumed run (``--resume``).
    Fine-tuning from ``load_from`` (iteration 0, typically another number of classes) keeps
    mmengine's behaviour: the mismatches are logged as a warning.

    mmengine calls ``after_load_checkpoint`` for ``load_from`` and ``resume`` alike, before it
    sets the resumed iteration; the decision waits for ``before_train`` / ``before_val`` /
    ``before_test``, which run after loading, so only public runner state is read.
    """

    priority = 'LOW'  # after hooks that rewrite the checkpoint (EMA)

    def __init__(self):
        self._mismatch = None

    def after_load_checkpoint(self, runner, checkpoint):
        state = checkpoint.get('state_dict', checkpoint)
        shapes, missing, unexpected = checkpoint_mismatches(unwrap_model(runner.model).state_dict(),
                                                            state)
        self._mismatch = (shapes, missing, unexpected) if shapes or missing else None

    def _message(self, runner, resumed):
        name = runner.cfg.get('load_from')
        if not name and resumed:
            name = find_latest_checkpoint(runner.work_dir)
        return describe_mismatch(repr(name) if name else '(resumed)', *self._mismatch)

    def before_train(self, runner):
        if self._mismatch is None:
            return
        resumed = runner.iter > 0 or runner.epoch > 0
        message = self._message(runner, resumed)
        self._mismatch = None
        if resumed:
            raise CheckpointMismatchError(message)
        print_log(message + ' (load_from: loading the rest)', logger='current',
                  level=logging.WARNING)

    def _raise_pending(self, runner):
        if self._mismatch is not None:
            raise CheckpointMismatchError(self._message(runner, resumed=False))

    def before_val(self, runner):
        self._raise_pending(runner)

    def before_test(self, runner):
        self._raise_pending(runner)
