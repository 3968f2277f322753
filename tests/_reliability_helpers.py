"""Test-only hooks and tiny configs for tests/test_reliability.py.

The tools import this module through the configs' ``custom_imports`` (the tests put tests/ on
PYTHONPATH). The hooks crash a training run at a chosen moment: SIGKILL after an iteration, or
SIGKILL while a checkpoint is being saved (after its temporary file is written, before the
rename), or make the loss NaN.
"""
import math
import os
import os.path as osp
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

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
    """Fill the first parameter with NaN before training iteration ``iteration`` (1-based)."""

    def __init__(self, iteration):
        self.iteration = iteration

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration:
            next(runner.model.parameters()).data.fill_(math.nan)


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
    'seg': ("[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),"
            " dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]",
            "[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),"
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
