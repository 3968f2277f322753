"""Safe checkpoint loading: real mmengine checkpoints load, code-carrying pickles never run."""
import argparse
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader, Runner
from torch.utils.data import Dataset

import mmmv  # noqa: F401  (installs the safe loaders)
from mmmv.checkpoint import (UnsafeCheckpointError, convert_backbone_state_dict,
                             load_checkpoint_file)


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x, mode='loss'):
        return dict(loss=(self.linear(torch.stack(x)) - 1).pow(2).mean())


class _ToyData(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(x=torch.full((2, ), float(index)))


def _runner(work_dir, max_iters, resume=False):
    return Runner(
        model=_ToyModel(), work_dir=str(work_dir), resume=resume,
        train_dataloader=dict(dataset=_ToyData(), batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2)],
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        randomness=dict(seed=0))


class _Marker:
    """Unpickling this runs `open(path, 'w')`: the marker file appears if code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


@pytest.fixture
def runner_checkpoint(tmp_path):
    runner = _runner(tmp_path / 'run', max_iters=4)
    runner.train()
    return tmp_path / 'run' / 'iter_4.pth', runner


def test_runner_checkpoint_loads_with_weights_only(runner_checkpoint):
    path, runner = runner_checkpoint
    checkpoint = load_checkpoint_file(str(path))
    assert checkpoint['meta']['iter'] == 4
    assert 'train/loss' in checkpoint['message_hub']['log_scalars']
    torch.testing.assert_close(checkpoint['state_dict']['linear.weight'],
                               runner.model.linear.weight.detach())


def test_runner_resumes_through_mmengine(runner_checkpoint, tmp_path):
    path, trained = runner_checkpoint
    resumed = _runner(path.parent, max_iters=6, resume=True)
    resumed.train()
    assert resumed.iter == 6
    assert resumed.message_hub.get_info('iter') is not None


def test_namespace_checkpoint_loads(tmp_path):
    path = tmp_path / 'mambavision_tiny_1k.pth.tar'
    weights = {'levels.0.blocks.0.conv1.weight': torch.randn(2, 2, 3, 3),
               'norm.weight': torch.ones(2), 'head.weight': torch.zeros(1000, 2)}
    torch.save({'state_dict': weights, 'args': argparse.Namespace(model='mamba_vision_T', lr=1e-3),
                'epoch': 300}, path)
    state, dropped = convert_backbone_state_dict(load_checkpoint_file(str(path)))
    assert list(state) == ['levels.0.blocks.0.conv1.weight']
    assert dropped == ['head.weight', 'norm.weight']


@pytest.mark.parametrize('loader', ['mmmv', 'mmengine'])
def test_code_carrying_pickle_is_refused(tmp_path, loader):
    marker = tmp_path / 'marker'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _Marker(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match='allow-list'):
        if loader == 'mmmv':
            load_checkpoint_file(str(path))
        else:
            CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()


class _GetattrPayload:
    """Pickles as getattr(HistoryBuffer, 'update'): a getattr outside the allowed four."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, 'update'))


def test_getattr_is_restricted(tmp_path):
    path = tmp_path / 'evil_getattr.pth'
    torch.save({'payload': _GetattrPayload()}, path)
    with pytest.raises(UnsafeCheckpointError, match='getattr'):
        load_checkpoint_file(str(path))


def test_unsafe_load_needs_explicit_opt_in(tmp_path, monkeypatch):
    path = tmp_path / 'custom.pth'
    torch.save({'payload': _Marker(str(tmp_path / 'marker'))}, path)
    monkeypatch.setenv('MMMV_UNSAFE_LOAD', '1')
    with pytest.warns(UserWarning, match='arbitrary code'):
        load_checkpoint_file(str(path))
    assert (tmp_path / 'marker').exists()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))


def test_unsafe_error_is_an_unpickling_error():
    assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)


@pytest.mark.parametrize('prefix,extra', [('backbone.', {'neck.lateral.weight': torch.ones(1)}),
                                          ('model.', {}), ('module.', {})])
def test_prefixes_are_stripped(prefix, extra):
    weights = {prefix + 'patch_embed.conv_down.0.weight': torch.ones(1),
               prefix + 'head.weight': torch.ones(1), **extra}
    state, dropped = convert_backbone_state_dict({'state_dict': weights})
    assert list(state) == ['patch_embed.conv_down.0.weight']
    assert prefix + 'head.weight' in dropped or 'head.weight' in dropped
