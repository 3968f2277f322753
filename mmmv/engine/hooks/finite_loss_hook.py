"""Stop training at the first non-finite loss, on every rank at once."""
import math

import torch
from mmengine.dist import all_reduce, get_rank, get_world_size
from mmengine.hooks import Hook


class FiniteLossHook(Hook):
    """Raise ``FloatingPointError`` as soon as the training loss is NaN or infinite.

    Reads the loss that mmengine's RuntimeInfoHook has already copied to the message hub as a
    Python float (it calls ``.item()`` on every logged value each iteration), so a one-process run
    pays one ``math.isfinite`` per iteration and no device synchronisation. It runs before the
    CheckpointHook of the same iteration: no checkpoint with non-finite weights is written.

    Mixed precision (``AmpOptimWrapper``, fp16): the loss checked is the unscaled one. Gradients
    that overflow under loss scaling make GradScaler skip the step and lower the scale; the loss
    stays finite and training goes on, as GradScaler intends. A non-finite *loss* is divergence
    (no loss scale makes it finite again) and stops the run.

    Distributed runs: each rank logs its own loss. The ranks all-reduce one flag per rank every
    iteration (a tensor of ``world_size`` numbers), so when any rank's loss is non-finite every
    rank raises in the same iteration, naming the ranks; a rank raising alone would leave the
    others waiting in DDP's next gradient all-reduce.

    Args:
        key (str): The logged value to check. Defaults to 'loss' (the sum the optimizer steps on).
    """

    priority = 'ABOVE_NORMAL'  # after RuntimeInfoHook (VERY_HIGH), before logger and checkpoint

    def __init__(self, key='loss'):
        self.key = key

    def _loss(self, runner, outputs):
        """This rank's loss (a float), or None where this iteration logged none."""
        scalars = runner.message_hub.log_scalars
        name = f'train/{self.key}'
        if name in scalars:
            return scalars[name].current()
        if isinstance(outputs, dict) and self.key in outputs:
            return float(outputs[self.key])  # not logged by mmengine: read it ourselves
        return None

    @staticmethod
    def _non_finite_ranks(value):
        """The ranks whose loss is non-finite (``value`` is this rank's, None: none logged)."""
        bad = value is not None and not math.isfinite(value)
        world_size = get_world_size()
        if world_size == 1:
            return [0] if bad else []
        flags = torch.zeros(world_size)
        flags[get_rank()] = float(bad)
        all_reduce(flags)  # mmengine moves it to the backend's device (NCCL: the GPU)
        return [rank for rank, flag in enumerate(flags.tolist()) if flag]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        value = self._loss(runner, outputs)
        ranks = self._non_finite_ranks(value)
        if not ranks:
            return
        detail = ''
        if value is not None and not math.isfinite(value):
            scalars = runner.message_hub.log_scalars
            parts = [f'{key}={scalars[f"train/{key}"].current()}' for key in (outputs or {})
                     if key != self.key and f'train/{key}' in scalars
                     and not math.isfinite(scalars[f'train/{key}'].current())]
            detail = f" (non-finite terms: {', '.join(parts)})" if parts else ''
            what = f'loss became {value}'
        else:
            what = 'loss became non-finite'
        where = f' on rank {", ".join(map(str, ranks))}' if get_world_size() > 1 else ''
        last = runner.message_hub.get_info('last_ckpt')
        resume = (f' The last checkpoint written is {last}; `tools/train.py CONFIG --resume` '
                  'continues from it.' if last else '')
        raise FloatingPointError(
            f'{what} at iteration {runner.iter + 1}{where}{detail}; training stopped (no '
            'checkpoint of this iteration was written). Lower the learning rate, add gradient '
            f'clipping or check the data.{resume}')
