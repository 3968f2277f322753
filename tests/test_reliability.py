"""Reliability and security: safe checkpoint loading on every path, exact resume after a crash,
clear errors for bad input, mixed precision.

Tool runs (marked slow) use 64x64 demo data in a temporary folder and configs that inherit the
demo configs with a tiny backbone (tests/_reliability_helpers.py), one thread each.
"""
import importlib
import importlib.util
import math
import os
import os.path as osp
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModule
from mmengine.runner import CheckpointLoader

import _reliability_helpers as helpers
from _reliability_helpers import Marker, ToyModel, toy_runner
from mmmv.checkpoint import UnsafeCheckpointError, atomic_write, load_checkpoint_file
from mmmv.engine import (add_reliability_hooks, build_runner, find_resume_checkpoint,
                         get_rng_state, load_config, mmcv_ops_in_float32, set_rng_state)
from mmmv.checkpoint.fit import (CheckpointMismatchError, check_checkpoint_fits,
                                 load_checkpoint_exact)
from mmmv.input_checks import DataFileError, FileNamingPipeline, check_dataset_paths
from mmmv.models import MambaVision

ROOT = helpers.ROOT
TESTS = osp.dirname(osp.abspath(__file__))
TOOLS = osp.join(ROOT, 'tools')
MMMV_HOOKS = ('FiniteLossHook', 'RNGStateHook', 'CheckpointFitHook', 'CrashSafeCheckpointHook')


def _load_tool_module(name):
    spec = importlib.util.spec_from_file_location(name, osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(cwd, tool, *args, ok=True):
    """Run tools/<tool> in ``cwd`` with one thread; returns (returncode, stdout + stderr)."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1',
           'PYTHONPATH': os.pathsep.join([TESTS, os.environ.get('PYTHONPATH', '')])}
    proc = subprocess.run([sys.executable, osp.join(TOOLS, tool), *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    if ok:
        assert proc.returncode == 0, out[-4000:]
    return proc.returncode, out


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """A folder whose data/demo holds 64x64 demo data (8 training, 4 validation images)."""
    root = tmp_path_factory.mktemp('reliability')
    make_demo_data = _load_tool_module('make_demo_data').make_demo_data
    make_demo_data(str(root / 'data' / 'demo'), num_train=8, num_val=4, size=64, verbose=False)
    return root


def code_carrying_checkpoint(folder):
    """An mmengine-looking checkpoint whose pickle would create ``folder/marker``."""
    marker = folder / 'marker'
    path = folder / 'evil.pth'
    torch.save({'meta': {'iter': 2}, 'state_dict': {}, 'payload': Marker(str(marker))}, path)
    return path, marker


def refusal(path):
    return f"checkpoint '{path}': refused to load it"


# ================================================================== 1. safe loading everywhere
def test_every_mmengine_scheme_goes_through_the_allow_list(tmp_path):
    """Local paths (and URLs: tests/test_checkpoint_url.py) are read by mmmv's loaders; every
    other scheme's torch.load runs weights-only (torch's default) with mmmv's allow-list added
    process-wide."""
    evil, marker = code_carrying_checkpoint(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(refusal(evil))):
        CheckpointLoader.load_checkpoint(str(evil), map_location='cpu')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(str(evil), map_location='cpu')  # what mmengine's other schemes call
    assert not marker.exists()


class _LinearWithInitCfg(BaseModule):

    def __init__(self, init_cfg):
        super().__init__(init_cfg=init_cfg)
        self.linear = nn.Linear(2, 2)


@pytest.mark.parametrize('module', ['backbone', 'mmengine_module'])
def test_init_cfg_pretrained_refuses_code_carrying_checkpoint(tmp_path, module):
    evil, marker = code_carrying_checkpoint(tmp_path)
    init_cfg = dict(type='Pretrained', checkpoint=str(evil))
    model = (MambaVision(arch=helpers.TINY_ARCH, init_cfg=init_cfg) if module == 'backbone' else
             _LinearWithInitCfg(init_cfg))
    with pytest.raises(UnsafeCheckpointError, match=re.escape(refusal(evil))):
        model.init_weights()
    assert not marker.exists()


def test_convert_checkpoint_refuses_code_carrying_checkpoint(tmp_path):
    evil, marker = code_carrying_checkpoint(tmp_path)
    code, out = run_tool(tmp_path, 'convert_checkpoint.py', evil, tmp_path / 'out.pth', ok=False)
    assert code != 0
    assert f'error: {refusal(evil)}' in out and '--unsafe-load' in out
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


def test_unsafe_load_is_explicit_and_warns(tmp_path):
    evil, marker = code_carrying_checkpoint(tmp_path)
    _, out = run_tool(tmp_path, 'convert_checkpoint.py', evil, tmp_path / 'out.pth',
                      '--unsafe-load')
    assert 'a malicious checkpoint can run arbitrary code' in out
    assert marker.exists()  # the user asked for full unpickling: the pickle's code did run


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['test', 'image_demo', 'train_resume'])
def test_tools_refuse_code_carrying_checkpoint(demo, tmp_path, tool):
    config = helpers.write_tiny_config(tmp_path, 'seg')
    evil, marker = code_carrying_checkpoint(tmp_path)
    image = demo / 'data' / 'demo' / 'ade' / 'images' / 'validation' / '000000.jpg'
    args = {
        'test': ('test.py', config, evil, '--work-dir', tmp_path / 'work'),
        'image_demo': ('image_demo.py', config, evil, image, '--out-file', tmp_path / 'out.png'),
        'train_resume': ('train.py', config, '--resume', evil, '--work-dir', tmp_path / 'work'),
    }[tool]
    code, out = run_tool(demo, *args, ok=False)
    assert code != 0
    assert f'error: {refusal(evil)}' in out, out[-3000:]
    assert not marker.exists()


# ================================================================== 2. crash and resume
def test_killed_atomic_write_leaves_the_previous_file(tmp_path):
    """A process killed while writing a checkpoint leaves the old file intact; the partial data
    sits in a hidden temporary file that nothing loads."""
    target = tmp_path / 'iter_4.pth'
    atomic_write(str(target), b'old' * 1000)
    pid = os.fork()
    if pid == 0:  # the child: cut the written data in half, then die before the rename
        try:
            def truncate_and_die(fd):
                os.ftruncate(fd, 1500)
                os.kill(os.getpid(), signal.SIGKILL)

            os.fsync = truncate_and_die
            atomic_write(str(target), b'new' * 1000)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert target.read_bytes() == b'old' * 1000
    partial = list(tmp_path.glob('.iter_4.pth.*.tmp'))
    assert len(partial) == 1 and partial[0].stat().st_size == 1500


def test_atomic_write_keeps_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write(str(tmp_path / 'a.pth'), b'x')
        with open(tmp_path / 'b.pth', 'wb') as f:
            f.write(b'x')
    finally:
        os.umask(umask)
    assert (tmp_path / 'a.pth').stat().st_mode == (tmp_path / 'b.pth').stat().st_mode


class _FailingSave(Exception):
    pass


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """mmengine's CheckpointHook deletes the kept checkpoint before writing the next one; with
    max_keep_ckpts=1 a crash while saving left nothing to resume from."""
    from mmengine.hooks import Hook

    class FailSaveAt4(Hook):

        def before_save_checkpoint(self, runner, checkpoint):
            if checkpoint['meta']['iter'] == 4:
                raise _FailingSave

    runner = toy_runner(tmp_path, custom_hooks=[FailSaveAt4()])
    with pytest.raises(_FailingSave):
        runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')


def test_resume_checkpoint_falls_back_to_the_newest_file(tmp_path):
    assert find_resume_checkpoint(str(tmp_path)) is None
    for name in ('iter_2.pth', 'iter_10.pth', 'epoch_3.pth', 'best_iter_12.pth'):
        (tmp_path / name).write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_12.pth'))  # deleted since
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_10.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')


def test_rng_state_round_trips_through_the_safe_loader(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    torch.save({'rng_state': get_rng_state()}, tmp_path / 'c.pth')
    expected = (random.random(), np.random.standard_normal(3), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(load_checkpoint_file(str(tmp_path / 'c.pth'))['rng_state'])
    got = (random.random(), np.random.standard_normal(3), torch.rand(3))
    assert got[0] == expected[0]
    assert np.array_equal(got[1], expected[1]) and torch.equal(got[2], expected[2])


def test_rng_state_restores_from_a_checkpoint_loaded_to_another_device(tmp_path, monkeypatch):
    """mmengine resumes with map_location=get_device(): on a GPU machine the stored states
    arrive as CUDA tensors, which torch.set_rng_state, torch.cuda.set_rng_state_all and numpy
    refuse. Simulated with tensors that report cuda:0 and refuse host access; one CUDA device
    whose set_rng_state_all records what it is given."""
    torch.manual_seed(3)
    np.random.seed(2)
    state = get_rng_state()
    state['cuda'] = [torch.arange(16, dtype=torch.uint8)]  # one GPU's generator state
    torch.save({'rng_state': state}, tmp_path / 'c.pth')
    expected = (np.random.standard_normal(3), torch.rand(3))
    loaded = helpers.on_another_device(load_checkpoint_file(str(tmp_path / 'c.pth')))
    assert loaded['rng_state']['torch'].device.type == 'cuda'
    restored = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'set_rng_state_all', restored.extend)
    torch.manual_seed(9)
    np.random.seed(9)
    set_rng_state(loaded['rng_state'])
    got = (np.random.standard_normal(3), torch.rand(3))
    assert np.array_equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert len(restored) == 1 and type(restored[0]) is torch.Tensor
    assert restored[0].device.type == 'cpu' and restored[0].dtype == torch.uint8
    assert torch.equal(restored[0], state['cuda'][0])


def test_toy_run_resumes_to_the_same_weights(tmp_path):
    """In-process: an interrupted run resumed by mmengine plus RNGStateHook matches an
    uninterrupted one exactly (dropout and random data draw from the restored state)."""
    hooks = [dict(type='RNGStateHook')]
    full = toy_runner(tmp_path / 'full', custom_hooks=hooks)
    full.train()
    first = toy_runner(tmp_path / 'part', max_iters=3, custom_hooks=hooks, max_keep_ckpts=-1)
    first.train()  # stops after iteration 3 (as if killed): resume from iteration 2
    (tmp_path / 'part' / 'iter_3.pth').unlink()
    (tmp_path / 'part' / 'last_checkpoint').write_text(str(tmp_path / 'part' / 'iter_2.pth'))
    resumed = toy_runner(tmp_path / 'part', custom_hooks=hooks, resume=True)
    resumed.train()
    assert torch.equal(resumed.model.linear.weight, full.model.linear.weight)
    assert torch.equal(resumed.model.linear.bias, full.model.linear.bias)


def _same_training_state(a, b):
    assert a['meta']['iter'] == b['meta']['iter']
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
    for index, state in a['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(value, b['optimizer']['state'][index][name]), (index, name)
    assert a['param_schedulers'] == b['param_schedulers']


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(demo, tmp_path):
    """tools/train.py killed with SIGKILL between checkpoints, then again while saving, and
    resumed with --resume (auto) ends with bitwise the weights of an uninterrupted run."""
    def config(name, **kwargs):
        return helpers.write_tiny_config(tmp_path, 'seg', name=name, max_iters=6, **kwargs)

    full, work = tmp_path / 'full', tmp_path / 'work'
    # A: uninterrupted, keeping every checkpoint
    run_tool(demo, 'train.py', config('a.py', max_keep_ckpts=-1), '--work-dir', full)
    # B: killed after iteration 3, between the checkpoints of iterations 2 and 4
    code, _ = run_tool(demo, 'train.py', config('b.py', hooks=[dict(
        type='KillAfterIterHook', iteration=3)]), '--work-dir', work, ok=False)
    assert code == -signal.SIGKILL
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
    # C: resumes from iteration 2; killed while saving iteration 4, after the temporary file is
    # written and before the rename (the demo config keeps one checkpoint: max_keep_ckpts=1)
    code, out = run_tool(demo, 'train.py', config('c.py', hooks=[dict(
        type='KillBeforeRenameHook', iteration=4)]), '--work-dir', work, '--resume', ok=False)
    assert code == -signal.SIGKILL
    assert 'resumed epoch: 0, iter: 2' in out
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')
    unrenamed = list(work.glob('.iter_4.pth.*.tmp'))
    assert len(unrenamed) == 1
    # what C trained after resuming is exactly A's iteration 4
    _same_training_state(load_checkpoint_file(str(unrenamed[0])),
                         load_checkpoint_file(str(full / 'iter_4.pth')))
    # D: resumes from iteration 2 again and finishes
    _, out = run_tool(demo, 'train.py', config('d.py'), '--work-dir', work, '--resume')
    assert 'resumed epoch: 0, iter: 2' in out
    assert not list(work.glob('.*.tmp'))
    assert all(hook in out for hook in MMMV_HOOKS), 'the tools run with mmmv\'s hooks'
    _same_training_state(load_checkpoint_file(str(work / 'iter_6.pth')),
                         load_checkpoint_file(str(full / 'iter_6.pth')))


# ================================================================== 3. clear errors
def test_load_config_adds_the_reliability_hooks(tmp_path):
    cfg = load_config(helpers.DEMO_CONFIGS['seg'], work_dir=str(tmp_path))
    names = [hook['type'] for hook in cfg.custom_hooks]
    assert [n for n in names if n in MMMV_HOOKS] == list(MMMV_HOOKS[:3])
    assert cfg.default_hooks.checkpoint.type == 'CrashSafeCheckpointHook'
    add_reliability_hooks(cfg)
    assert [hook['type'] for hook in cfg.custom_hooks] == names  # no duplicates
    listed = load_config(helpers.DEMO_CONFIGS['seg'], work_dir=str(tmp_path), cfg_options={
        'custom_hooks': [dict(type='FiniteLossHook', key='decode.loss_ce')]})
    assert [h['type'] for h in listed.custom_hooks].count('FiniteLossHook') == 1
    assert listed.custom_hooks[0]['key'] == 'decode.loss_ce'


@pytest.mark.parametrize('task,layout', [('seg', 'data/ade/ADEChallengeData2016/{images,'),
                                         ('det', 'data/coco/{train2017,val2017,annotations}')])
def test_missing_data_root_says_how_to_get_the_data(tmp_path, monkeypatch, task, layout):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(helpers.DEMO_CONFIGS[task], work_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_paths(cfg, ['train_dataloader'])
    message = str(info.value)
    assert "data_root 'data/demo/" in message and str(tmp_path) in message
    assert 'python tools/make_demo_data.py' in message and '`make demo`' in message
    assert layout in message


def test_train_tool_stops_before_building_when_data_is_missing(tmp_path):
    code, out = run_tool(tmp_path, 'train.py', helpers.DEMO_CONFIGS['seg'], '--work-dir',
                         tmp_path / 'work', ok=False)
    assert code != 0
    assert "error: data_root 'data/demo/ade'" in out
    assert 'tools/make_demo_data.py' in out
    assert 'Hooks will be executed' not in out  # failed before the runner was built


@pytest.mark.parametrize('option,value,named', [
    ('train_dataloader.dataset.ann_file', 'annotations/nope.json',
     "annotation file 'data/demo/coco/annotations/nope.json' of train_dataloader.dataset."
     'ann_file'),
    ('val_evaluator.ann_file', 'data/demo/coco/annotations/gone.json',
     "annotation file 'data/demo/coco/annotations/gone.json' of val_evaluator.ann_file"),
    ('train_dataloader.dataset.data_prefix.img', 'train_images/',
     "folder 'data/demo/coco/train_images/' of train_dataloader.dataset.data_prefix.img"),
])
def test_missing_annotation_file_or_folder_is_named(demo, monkeypatch, option, value, named):
    monkeypatch.chdir(demo)
    cfg = load_config(helpers.DEMO_CONFIGS['det'], work_dir=str(demo / 'work'))
    check_dataset_paths(cfg, ['train_dataloader', 'val_dataloader'], ['val_evaluator'])
    cfg.merge_from_dict({option: value})
    with pytest.raises(FileNotFoundError, match=re.escape(named)):
        check_dataset_paths(cfg, ['train_dataloader', 'val_dataloader'], ['val_evaluator'])


@pytest.mark.parametrize('target,content,problem', [
    ('images/training/000003.jpg', b'', 'is empty (0 bytes)'),
    ('images/training/000003.jpg', b'\xff\xd8\xff\xe0 not a jpeg' * 8, 'cannot be decoded'),
    ('annotations/training/000003.png', b'\x89PNG\r\n\x1a\n broken' * 8, 'cannot be decoded'),
], ids=['empty_image', 'corrupt_image', 'corrupt_label_map'])
def test_bad_file_in_the_dataset_is_named(demo, tmp_path, monkeypatch, target, content, problem):
    shutil.copytree(demo / 'data', tmp_path / 'data')
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / 'data' / 'demo' / 'ade' / target
    bad.write_bytes(content)
    cfg = load_config(helpers.write_tiny_config(tmp_path, 'seg'), work_dir=str(tmp_path / 'w'))
    runner = build_runner(cfg)  # the runner the tools use: its dataloaders name bad files
    dataset = runner.build_dataloader(cfg.train_dataloader).dataset
    assert isinstance(dataset.pipeline, FileNamingPipeline)
    index = next(i for i in range(len(dataset))
                 if dataset.get_data_info(i)['img_path'].endswith('000003.jpg'))
    with pytest.raises(DataFileError, match=re.escape(f"'data/demo/ade/{target}' {problem}")):
        dataset[index]
    dataset[(index + 1) % len(dataset)]  # good samples still load


def test_init_cfg_checkpoint_of_another_arch_names_keys_and_shapes(tmp_path):
    path = tmp_path / 'mambavision_tiny.pth'
    torch.save({'state_dict': MambaVision(arch='tiny').state_dict()}, path)
    small = MambaVision(arch='small', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match=re.escape(
            'patch_embed.conv_down.0.weight: checkpoint (32, 3, 3, 3), model (64, 3, 3, 3)')):
        small.init_weights()


def _other_arch_segmentor_checkpoint(folder):
    """A checkpoint of the tiny segmentor built with a wider backbone (helpers.OTHER_ARCH)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(helpers.write_tiny_config(folder, 'seg', name='other.py',
                                                    arch=helpers.OTHER_ARCH))
    path = folder / 'other_arch.pth'
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict(), 'meta': {}}, path)
    return path


OTHER_ARCH_MISMATCH = ('backbone.patch_embed.conv_down.3.weight: checkpoint (24, 16, 3, 3), '
                       'model (16, 16, 3, 3)')


def test_load_checkpoint_exact_names_keys_and_shapes(tmp_path):
    path = tmp_path / 'c.pth'
    torch.save({'state_dict': {'weight': torch.zeros(3, 2)}}, path)
    model = nn.Linear(2, 2)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint_exact(model, str(path))
    message = str(info.value)
    assert 'weight: checkpoint (3, 2), model (2, 2)' in message and 'bias' in message
    assert str(path) in message


def test_checkpoint_fit_sees_through_tta_wrappers():
    """tools/test.py --tta wraps the model in a TTA model (keys 'module.*'); mmengine loads the
    checkpoint into the inner model, and so does the check."""
    from mmengine.model import BaseTTAModel

    class TTA(BaseTTAModel):

        def merge_preds(self, data_samples_list):
            return data_samples_list

    inner = ToyModel()
    tta = TTA(module=inner)
    check_checkpoint_fits(tta, {'state_dict': inner.state_dict()}, 'c.pth')
    wrong = {**inner.state_dict(), 'linear.weight': torch.zeros(3, 2)}
    with pytest.raises(CheckpointMismatchError, match=re.escape(
            'linear.weight: checkpoint (3, 2), model (1, 2)')):
        check_checkpoint_fits(tta, {'state_dict': wrong}, 'c.pth')


def test_image_demo_rejects_checkpoint_of_another_arch(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(demo)
    path = _other_arch_segmentor_checkpoint(tmp_path)
    cfg = load_config(helpers.write_tiny_config(tmp_path, 'seg'))
    with pytest.raises(CheckpointMismatchError, match=re.escape(OTHER_ARCH_MISMATCH)):
        _load_tool_module('image_demo').init_model(cfg, str(path), 'cpu')


@pytest.mark.slow
def test_test_tool_rejects_checkpoint_of_another_arch(demo, tmp_path):
    """mmengine only warns on shape mismatches and tests a partly random model; tools/test.py
    stops with the keys and shapes."""
    path = _other_arch_segmentor_checkpoint(tmp_path)
    config = helpers.write_tiny_config(tmp_path, 'seg')
    code, out = run_tool(demo, 'test.py', config, path, '--work-dir', tmp_path / 'w', ok=False)
    assert code != 0
    assert f"error: checkpoint '{path}'" in out and 'does not fit the model' in out, out[-3000:]
    assert OTHER_ARCH_MISMATCH in out
    assert str(path) in out and not (tmp_path / 'w' / 'metrics.json').exists()


def test_nan_loss_stops_training_at_its_iteration(tmp_path):
    runner = toy_runner(tmp_path, custom_hooks=[dict(type='FiniteLossHook'),
                                                 dict(type='NaNWeightsHook', iteration=3)])
    with pytest.raises(FloatingPointError, match=r'loss became nan at iteration 3\b') as info:
        runner.train()
    assert str(tmp_path / 'iter_2.pth') in str(info.value)
    assert not (tmp_path / 'iter_4.pth').exists()


def test_nan_loss_on_one_rank_stops_every_rank(tmp_path):
    """Two gloo processes; only rank 1's loss becomes NaN (at iteration 3). Both stop with
    FloatingPointError in that iteration: a rank that raised alone would leave the other one in
    DDP's next gradient all-reduce."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': os.pathsep.join([TESTS, os.environ.get('PYTHONPATH', '')])}
    procs = []
    for rank in range(2):
        code = (f'import _reliability_helpers as h; h.ddp_worker({str(tmp_path)!r}, '
                f'{str(tmp_path / "store")!r}, {rank}, 2, nan_rank=1, nan_iteration=3)')
        procs.append(subprocess.Popen([sys.executable, '-c', code], env={**env, 'LOCAL_RANK':
                                      str(rank)}, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=150)[0])
    finally:
        for proc in procs:
            proc.kill()
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode != 0, out[-3000:]
        assert 'FloatingPointError: loss became' in out, (rank, out[-3000:])
        assert 'at iteration 3 on rank 1' in out, (rank, out[-3000:])
    assert 'loss became nan at iteration 3 on rank 1' in outputs[1]


def test_overflowing_gradients_under_loss_scaling_do_not_stop_training(tmp_path, monkeypatch):
    """AMP's GradScaler skips a step whose scaled gradients overflow and lowers the scale; the
    loss is finite and FiniteLossHook lets training go on. mmengine's AmpOptimWrapper with the
    CPU GradScaler (the CUDA one needs a GPU); the gradient of iteration 3 is infinite."""
    from mmengine.optim import AmpOptimWrapper
    from mmengine.optim.optimizer import amp_optimizer_wrapper

    class InfiniteGrad(torch.autograd.Function):

        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * math.inf

    class InfiniteGradAt3(ToyModel):
        calls = 0

        def forward(self, x, mode='loss'):
            InfiniteGradAt3.calls += 1
            loss = super().forward(x, mode)['loss']
            return dict(loss=InfiniteGrad.apply(loss) if self.calls == 3 else loss)

    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    model = InfiniteGradAt3()
    wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=2.**10)
    runner = toy_runner(tmp_path, model=model, optim_wrapper=wrapper, param_scheduler=None,
                        custom_hooks=[dict(type='FiniteLossHook')])
    runner.train()
    assert runner.iter == 6
    assert wrapper.loss_scaler.get_scale() == 2.**9  # one step skipped, the scale halved
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ================================================================== 4. mixed precision
def test_mixer_scans_in_float32_under_cpu_autocast(monkeypatch):
    from mmmv.models.mixers import MambaVisionMixer
    scan_module = importlib.import_module('mmmv.ops.selective_scan')  # the module, not the op
    seen = []
    run = scan_module._run_own_backend

    def spy(name, *args):
        dtypes = {a.dtype for a in args if isinstance(a, torch.Tensor)}
        seen.append((dtypes, torch.is_autocast_enabled('cpu')))
        return run(name, *args)

    monkeypatch.setattr(scan_module, '_run_own_backend', spy)
    torch.manual_seed(0)
    mixer = MambaVisionMixer(32)
    x = torch.randn(2, 49, 32)
    expected = mixer(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = mixer(x)
    assert seen[-1] == ({torch.float32}, False)  # the scan itself: float32, autocast off
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    torch.testing.assert_close(y.float(), expected, rtol=0.05,
                               atol=0.05 * expected.abs().max().item())


def test_mmcv_ops_take_bfloat16_under_cpu_autocast():
    from mmcv.ops import RoIAlign, nms
    mmcv_ops_in_float32()
    feats = torch.randn(1, 4, 16, 16, requires_grad=True)
    rois = torch.tensor([[0., 1., 1., 10., 10.], [0., 2., 3., 12., 14.]])
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = RoIAlign((2, 2), 1.0)(feats.bfloat16(), rois.bfloat16())
        _, keep = nms(boxes.bfloat16(), scores.bfloat16(), 0.5)
    assert out.dtype == torch.bfloat16 and keep.tolist() == [0, 2]
    out.float().sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


@pytest.mark.slow
@pytest.mark.parametrize('task', ['seg', 'det'])
def test_amp_training_keeps_losses_finite(demo, tmp_path, task):
    config = helpers.write_tiny_config(tmp_path, task, max_iters=4)
    _, out = run_tool(demo, 'train.py', config, '--amp', '--work-dir', tmp_path / 'w')
    assert 'mixed precision runs as bfloat16 CPU autocast' in out
    losses = re.findall(r'Iter\(train\) \[\s*\d+/4\].*?  loss: (\S+)', out)
    assert len(losses) == 4 and all(math.isfinite(float(v)) for v in losses), losses
