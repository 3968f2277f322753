"""Safe checkpoint loading: real mmengine checkpoints load, code-carrying pickles never run, and
every other bad file gets a one-line diagnosis naming it."""
import argparse
import gzip
import io
import os.path as osp
import pickle
import subprocess
import sys
import tarfile
import zipfile

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

import mmmv  # noqa: F401  (installs the safe loaders)
from _reliability_helpers import Marker, toy_runner
from mmmv.checkpoint import (CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError,
                             convert_backbone_state_dict, load_checkpoint_file)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture
def runner_checkpoint(tmp_path):
    runner = toy_runner(tmp_path / 'run', max_iters=4)
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
    resumed = toy_runner(path.parent, max_iters=6, resume=True)
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
    torch.save({'state_dict': {}, 'payload': Marker(str(marker))}, path)
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
    torch.save({'payload': Marker(str(tmp_path / 'marker'))}, path)
    monkeypatch.setenv('MMMV_UNSAFE_LOAD', '1')
    with pytest.warns(UserWarning, match='arbitrary code'):
        load_checkpoint_file(str(path))
    assert (tmp_path / 'marker').exists()


def test_missing_file_is_named(tmp_path):
    path = tmp_path / 'nope.pth'
    with pytest.raises(CheckpointNotFoundError, match=f"checkpoint '{path}': does not exist"):
        load_checkpoint_file(str(path))
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)


def test_unsafe_error_is_an_unpickling_error():
    assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)
    assert issubclass(UnsafeCheckpointError, CheckpointError)


def _png():
    import cv2
    import numpy as np
    return cv2.imencode('.png', np.zeros((4, 4, 3), np.uint8))[1].tobytes()


def _tar():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as archive:
        info = tarfile.TarInfo('weights.txt')
        info.size = 3
        archive.addfile(info, io.BytesIO(b'abc'))
    return buffer.getvalue()


def _zip():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        archive.writestr('readme.txt', 'not weights')
    return buffer.getvalue()


def _torch_file(**entries):
    buffer = io.BytesIO()
    torch.save({'state_dict': {'w': torch.ones(64, 64)}, **entries}, buffer)
    return buffer.getvalue()


# (file name, contents, what the message must say)
BAD_FILES = [
    ('notes.txt', b'these are my notes\n', 'is not a checkpoint: it is text'),
    ('photo.pth', None, 'is not a checkpoint: it is a PNG image'),
    ('weights.tar', None, 'is not a checkpoint: it is a tar archive'),
    ('weights.pth.gz', gzip.compress(b'x' * 100), 'is not a checkpoint: it is a gzip archive'),
    ('weights.zip', None, 'is not a checkpoint: it is a zip archive that is not a PyTorch'),
    ('page.pth', b'<!DOCTYPE html><html><body>Sign in</body></html>', 'an HTML page'),
    ('lfs.pth', b'version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n',
     'a Git LFS pointer'),
    ('empty.pth', b'', 'is empty (0 bytes)'),
    ('half.pth', 'half', 'is truncated or corrupt'),
    ('half.safetensors', 'half-safetensors', 'is truncated or corrupt'),
]


@pytest.mark.parametrize('name, data, why', BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_is_diagnosed_in_one_line(tmp_path, name, data, why):
    if data is None:
        data = {'photo.pth': _png, 'weights.tar': _tar, 'weights.zip': _zip}[name]()
    elif data == 'half':
        whole = _torch_file()
        data = whole[:len(whole) // 2]
    elif data == 'half-safetensors':
        from safetensors.torch import save
        whole = save({'w': torch.ones(64, 64)})
        data = whole[:len(whole) // 2]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(str(path))
    message = str(info.value)
    assert message.startswith(f"checkpoint '{path}': ") and why in message, message
    assert '\n' not in message and 'UNSAFE' not in message and 'unsafe' not in message
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_folder_names_the_file_its_last_checkpoint_names(tmp_path):
    (tmp_path / 'iter_300.pth').write_bytes(_torch_file())
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_300.pth'))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(str(tmp_path))
    assert str(info.value) == (
        f"checkpoint '{tmp_path}': is a folder, not a file. Its last_checkpoint names "
        f"'{tmp_path / 'iter_300.pth'}': pass that file.")
    (tmp_path / 'last_checkpoint').unlink()
    with pytest.raises(CheckpointError, match="Pass one of the checkpoint files in it: "
                                              "iter_300.pth"):
        load_checkpoint_file(str(tmp_path))


def test_convert_tool_diagnoses_a_text_file_in_one_line(tmp_path):
    notes = tmp_path / 'notes.txt'
    notes.write_text('not a checkpoint\n')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'convert_checkpoint.py'),
                           str(notes), str(tmp_path / 'out.pth'), '--arch', 'tiny'],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: checkpoint '{notes}': is not a checkpoint: it is "
                                   'text. Give a .pth / .pth.tar / .safetensors checkpoint file.')
    assert not (tmp_path / 'out.pth').exists()


INIT_DETECTOR_SCRIPT = """
import sys
import torch
from mmdet.apis import init_detector
model = init_detector(sys.argv[1], sys.argv[2], device='cpu')
expected = torch.load(sys.argv[2], weights_only=False)['state_dict']
assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
print('loaded', len(expected))
"""


def test_mmdet_init_detector_loads_mmengine_checkpoints_with_custom_imports(tmp_path):
    """mmdet's own API, with mmmv only through the config's custom_imports, reads a training
    checkpoint (HistoryBuffer, numpy scalars: off torch's default weights-only list)."""
    import numpy as np
    config = tmp_path / 'retina.py'
    config.write_text(f"""
_base_ = ['{ROOT}/configs/det/retinanet_mambavision_t_coco_1x.py']
model = dict(backbone=dict(arch=dict(_delete_=True, dim=16, in_dim=8, depths=(1, 1, 2, 1),
                                     num_heads=(1, 2, 2, 4)), init_cfg=None),
             neck=dict(in_channels=[32, 64, 128]))
""")
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(str(config))
    init_default_scope('mmdet')
    state = MODELS.build(cfg.model).state_dict()
    history = HistoryBuffer()
    history.update(0.5)
    path = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1, 'seed': np.int64(7)}, 'state_dict': state,
                'message_hub': {'log_scalars': {'loss': history}}}, path)
    script = tmp_path / 'init.py'
    script.write_text(INIT_DETECTOR_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(config), str(path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'loaded {len(state)}' in proc.stdout


@pytest.mark.parametrize('prefix,extra', [('backbone.', {'neck.lateral.weight': torch.ones(1)}),
                                          ('model.', {}), ('module.', {})])
def test_prefixes_are_stripped(prefix, extra):
    weights = {prefix + 'patch_embed.conv_down.0.weight': torch.ones(1),
               prefix + 'head.weight': torch.ones(1), **extra}
    state, dropped = convert_backbone_state_dict({'state_dict': weights})
    assert list(state) == ['patch_embed.conv_down.0.weight']
    assert prefix + 'head.weight' in dropped or 'head.weight' in dropped
