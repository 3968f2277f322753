"""Test-only hooks, toy runs and tiny configs for the reliability and runtime tests.

The tools import this module through the configs' ``custom_imports`` (the tests put tests/ on
PYTHONPATH). The hooks crash a training run at a chosen moment: SIGKILL after an iteration, or
SIGKILL while a checkpoint is being saved (after its temporary file is written, before the
rename), or make the loss NaN. :func:`toy_runner` builds an in-process Runner of a 2-parameter
model; :func:`ddp_worker` runs one rank of it on gloo. :func:`on_another_device` stands a CPU
tensor in for a CUDA one.
"""
import itertools
import math
import os
import os.path as osp
import signal

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from torch.utils.data import Dataset

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIGS = {
    'seg': osp.join(ROOT, 'configs', 'seg', 'demo_upernet_mambavision_t.py'),
    'det': osp.join(ROOT, 'configs', 'det', 'demo_cascade_mambavision_t.py'),
}
# A 4-stage MambaVision far narrower and shallower than tiny: the tool runs cost seconds.
TINY_ARCH = dict(dim=16, in_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 4))
OTHER_ARCH = dict(dim=24, in_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 4))


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class KillAfterIterHook(Hook):
    """SIGKILL this process right after training iteration ``iteration`` (1-based)."""

    priority = 'LOWEST'

    def __init__(self, iteration):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:
            _die()


@HOOKS.register_module()
class KillBeforeRenameHook(Hook):
    """SIGKILL this process while it saves the checkpoint of iteration ``iteration``: after the
    temporary file is completely written, before it is renamed to ``iter_<iteration>.pth``."""

    def __init__(self, iteration):
        self.iteration = iteration

    def before_save_checkpoint(self, runner, checkpoint):
        if checkpoint['meta']['iter'] != self.iteration:
            return
        target = f'iter_{self.iteration}.pth'
        replace = os.replace

        def replace_or_die(src, dst, *args, **kwargs):
            if osp.basename(str(dst)) == target:
                _die()
            return replace(src, dst, *args, **kwargs)

        os.replace = replace_or_die


@HOOKS.register_module()
class NaNWeightsHook(Hook):
    """Fill the first parameter with NaN before training iteration ``iteration`` (1-based), on
    every rank or only on rank ``rank``."""

    def __init__(self, iteration, rank=None):
        self.iteration, self.rank = iteration, rank

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration and self.rank in (None, runner.rank):
            next(runner.model.parameters()).data.fill_(math.nan)


class Marker:
    """Unpickling this calls open(path, 'w'): the marker file appears if the pickle's code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


class ToyModel(BaseModel):
    """y = linear(dropout(x)) with loss mean((y - 1)^2); ``x`` is a list of (2,) tensors."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x, mode='loss'):
        return dict(loss=(self.linear(self.drop(torch.stack(x))) - 1).pow(2).mean())


class ToyData(Dataset):
    """8 random samples: ``x`` is 2 times ``index`` plus uniform noise in [0, 1)."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(x=torch.full((2, ), float(index)) + torch.rand(2))


_RUN_IDS = itertools.count()


def toy_runner(work_dir, max_iters=6, custom_hooks=(), resume=False, max_keep_ckpts=1,
               model=None, **kwargs):
    """A Runner of :class:`ToyModel` (or ``model``) with dropout and random data, AdamW, a
    warm-up schedule and a CrashSafeCheckpointHook every 2 iterations. Each one has its own
    experiment name, hence its own MessageHub, even when several start within a second.
    ``kwargs`` go to the Runner (``launcher``, ``cfg``, ``optim_wrapper``)."""
    torch.manual_seed(0)  # the model is built here, before the Runner seeds everything
    settings = dict(optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
                    param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                                          end=4)])
    settings.update(kwargs)
    return Runner(
        model=model or ToyModel(), work_dir=str(work_dir), resume=resume,
        experiment_name=f'toy_{next(_RUN_IDS)}_{os.getpid()}_{osp.basename(str(work_dir))}',
        train_dataloader=dict(dataset=ToyData(), batch_size=2,
                              sampler=dict(type='InfiniteSampler', shuffle=True)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CrashSafeCheckpointHook', interval=2,
                                           by_epoch=False, max_keep_ckpts=max_keep_ckpts)),
        custom_hooks=list(custom_hooks), randomness=dict(seed=0), **settings)


def ddp_worker(work_dir, init_file, rank, world_size, nan_rank, nan_iteration):
    """One rank of a toy training on gloo in which rank ``nan_rank``'s weights (hence its loss)
    become NaN at iteration ``nan_iteration``, with FiniteLossHook. Run as its own process, with
    ``LOCAL_RANK`` set."""
    import torch.distributed as dist

    import mmmv  # noqa: F401  (mmmv's hooks and CPU DDP wrapper in the registries)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world_size)
    try:
        toy_runner(osp.join(work_dir, str(rank)), launcher='pytorch',
                   cfg=dict(model_wrapper_cfg=dict(type='CPUDistributedDataParallel')),
                   custom_hooks=[dict(type='FiniteLossHook'),
                                 dict(type='NaNWeightsHook', iteration=nan_iteration,
                                      rank=nan_rank)]).train()
    finally:
        dist.destroy_process_group()


class _OnAnotherDevice(torch.Tensor):
    """A tensor that reports ``device`` (e.g. cuda:0) and refuses every operation but a copy to
    the CPU, as a CUDA tensor does for code that needs host memory (``.numpy()``,
    ``torch.set_rng_state``)."""

    @staticmethod
    def __new__(cls, data, device):
        return torch.Tensor._make_wrapper_subclass(cls, data.shape, dtype=data.dtype,
                                                   device=torch.device(device),
                                                   strides=data.stride())

    def __init__(self, data, device):
        self.host = data

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get('device') == torch.device('cpu'):
            return args[0].host.to(dtype=kwargs.get('dtype') or args[0].host.dtype)
        raise RuntimeError(f'{func} needs a CPU tensor, got one on {args[0].device}')


def on_another_device(obj, device='cuda:0'):
    """``obj`` (nested dicts / lists / tuples) with every tensor as if loaded to ``device``
    (``torch.load(map_location=device)``)."""
    if isinstance(obj, torch.Tensor):
        return _OnAnotherDevice(obj, device)
    if isinstance(obj, dict):
        return {k: on_another_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_another_device(v, device) for v in obj)
    return obj


def _tiny_model(task, arch):
    dims = [arch['dim'] * 2**i for i in range(4)]
    arch = dict(arch, _delete_=True)
    if task == 'seg':
        return dict(data_preprocessor=dict(size=(64, 64)), backbone=dict(arch=arch),
                    decode_head=dict(in_channels=dims, channels=16),
                    auxiliary_head=dict(in_channels=dims[2], channels=16))
    return (f'dict(backbone=dict(arch={arch!r}),\n'
            f'     neck=dict(in_channels={dims!r}, out_channels=32),\n'
            '     rpn_head=dict(in_channels=32, feat_channels=32),\n'
            '     roi_head=dict(bbox_roi_extractor=dict(out_channels=32),\n'
            '                   mask_roi_extractor=dict(out_channels=32),\n'
            '                   bbox_head=[dict(h, in_channels=32, conv_out_channels=32,\n'
            '                                   fc_out_channels=64)\n'
            '                              for h in _base_.model.roi_head.bbox_head],\n'
            '                   mask_head=dict(in_channels=32, conv_out_channels=32)))')


PIPELINES = {
    'seg': ("[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),"
            " dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]",
            "[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),"
            " dict(type='PackSegInputs')]"),
    'det': ("[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, "
            "with_mask=True), dict(type='Resize', scale=(64, 64), keep_ratio=True), "
            "dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]",
            "[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),"
            " dict(type='LoadAnnotations', with_bbox=True, "
            "with_mask=True), dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', "
            "'ori_shape', 'img_shape', 'scale_factor'))]"),
}


def write_tiny_config(folder, task, name=None, arch=TINY_ARCH, max_iters=6, hooks=(),
                      max_keep_ckpts=1, extra=''):
    """A config inheriting the demo config of ``task`` ('seg' or 'det') for 64x64 demo data
    (``make_demo_data.py --size 64``): a tiny backbone and heads, no resizing, no validation,
    ``max_iters`` iterations, a checkpoint every 2 (``max_keep_ckpts`` kept; the demo configs
    keep 1), a log line every iteration, seed 0 and deterministic kernels. ``hooks``: test hooks
    (dicts) for ``custom_hooks``. Returns the path.
    """
    train, test = PIPELINES[task]
    model = _tiny_model(task, arch)
    text = f'''_base_ = [{DEMO_CONFIGS[task]!r}]
custom_imports = dict(imports=['mmmv', '_reliability_helpers'], allow_failed_imports=False)
model = {model!s}
train_dataloader = dict(dataset=dict(pipeline={train}))
test_dataloader = dict(dataset=dict(pipeline={test}))
val_dataloader = None
val_cfg = None
val_evaluator = None
train_cfg = dict(max_iters={max_iters}, val_interval=1000)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=2, max_keep_ckpts={max_keep_ckpts}))
randomness = dict(seed=0, deterministic=True)
custom_hooks = {list(hooks)!r}
{extra}
'''
    path = osp.join(str(folder), name or f'tiny_{task}.py')
    with open(path, 'w') as f:
        f.write(text)
    return path
