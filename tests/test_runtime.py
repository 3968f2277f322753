"""mmmv.engine and mmmv.cli: registration, what `import mmmv` changes, the CPU / GPU adaptation
of configs, the shared command-line flags, and GPU conditions simulated on the CPU (MPI's
variables, a broken mamba-ssm, TF32)."""
import argparse
import importlib
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import OPTIM_WRAPPERS

import _reliability_helpers as helpers
import mmmv
from mmmv.cli import add_amp_argument, add_runner_arguments, parse_runner_arguments
from mmmv.engine import (CPUAutocastOptimWrapper, adapt_to_device, enable_amp, enable_result_dump,
                         enable_visualization, export_local_rank, inference_autocast,
                         release_distributed, task_of)
from mmmv.engine.mmengine_internals import INTERNALS, changed_internals
from mmmv.registry import BACKBONES, downstream_model_registries

ROOT = helpers.ROOT


def _cfg(scope='mmdet', **extra):
    return Config(dict(
        default_scope=scope,
        env_cfg=dict(dist_cfg=dict(backend='nccl')),
        model=dict(type='Toy', backbone=dict(type='MambaVision'),
                   heads=[dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
                          dict(norm_cfg=dict(type='GN', num_groups=2))],
                   decode_head=dict(norm_cfg=dict(type='MMSyncBN'))),
        optim_wrapper=dict(type='AmpOptimWrapper', loss_scale='dynamic',
                           optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(visualization=dict(type='Vis', draw=False)),
        visualizer=dict(type='Visualizer'),
        test_evaluator=dict(type='IoUMetric'),
        **extra))


def test_import_registers_in_mmdet_and_mmseg():
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    registries = downstream_model_registries()
    assert DET_MODELS in registries and SEG_MODELS in registries
    for registry in (DET_MODELS, SEG_MODELS):
        for name, module in BACKBONES.items():
            assert registry.get(name) is module
        assert registry.get('MambaVision') is mmmv.MambaVision
    assert OPTIM_WRAPPERS.get('CPUAutocastOptimWrapper') is CPUAutocastOptimWrapper


def test_nvidia_config_keywords_build_through_registry():
    from mmdet.registry import MODELS
    with MODELS.switch_scope_and_registry('mmdet') as registry:  # whatever scope runs now
        backbone = registry.build(dict(
            type='MM_mamba_vision', dim=32, in_dim=16, depths=[1, 1, 2, 1],
            num_heads=[1, 2, 2, 4], window_size=[8, 8, 4, 2], mlp_ratio=4., drop_path_rate=0.1,
            norm_layer='ln2d', layer_scale=None, out_indices=(1, 3)))
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 8, 8), (1, 256, 2, 2)]


def test_cpu_adaptation():
    cfg = adapt_to_device(_cfg(), cuda_available=False)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model.heads[0].norm_cfg.type == 'BN'
    assert cfg.model.heads[1].norm_cfg.type == 'GN'
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert cfg.optim_wrapper.type == 'CPUAutocastOptimWrapper'


def test_gpu_config_left_alone():
    cfg = adapt_to_device(_cfg(), cuda_available=True)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert cfg.model.heads[0].norm_cfg.type == 'SyncBN'
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'


def test_enable_amp_adapts_to_the_device_itself():
    on_gpu = _cfg()
    on_gpu.optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))
    enable_amp(on_gpu, cuda_available=True)
    assert on_gpu.optim_wrapper.type == 'AmpOptimWrapper'
    assert on_gpu.optim_wrapper.loss_scale == 'dynamic'
    cfg = _cfg()
    cfg.optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))
    enable_amp(cfg, cuda_available=False)  # no second call of adapt_to_device needed
    assert cfg.optim_wrapper.type == 'CPUAutocastOptimWrapper'
    model = torch.nn.Linear(4, 4)
    wrapper = OPTIM_WRAPPERS.build(dict(
        cfg.optim_wrapper, optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    with wrapper.optim_context(model):
        assert model(torch.randn(2, 4)).dtype == torch.bfloat16


def test_task_of_names_the_allowed_scopes():
    assert task_of(_cfg('mmseg')) == 'mmseg'
    with pytest.raises(ValueError, match="default_scope must be one of \\('mmdet', 'mmseg'\\)"):
        task_of(_cfg('mmpretrain'))


def test_show_dir_goes_where_each_task_expects():
    det = _cfg('mmdet')
    enable_visualization(det, show_dir='pics')
    assert det.default_hooks.visualization.draw and det.default_hooks.visualization.test_out_dir \
        == 'pics'
    seg = _cfg('mmseg')
    enable_visualization(seg, show_dir='pics')
    assert seg.default_hooks.visualization.draw and seg.visualizer.save_dir == 'pics'
    assert seg.default_hooks.visualization.interval == 1


def test_result_dump():
    det = _cfg('mmdet')
    enable_result_dump(det, 'preds.pkl')
    assert det.test_evaluator[-1].type == 'DumpDetResults'
    with pytest.raises(ValueError, match='--out must end with .pkl'):
        enable_result_dump(_cfg('mmdet'), 'preds.json')
    seg = _cfg('mmseg')
    enable_result_dump(seg, 'out_dir')
    assert seg.test_evaluator.output_dir == 'out_dir'


def test_release_distributed_destroys_the_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                            world_size=1)
    assert dist.is_initialized()
    release_distributed()
    assert not dist.is_initialized()
    release_distributed()  # without a group: nothing to do, no error


def test_inference_autocast_is_bfloat16_or_off():
    layer = torch.nn.Linear(4, 4)
    with inference_autocast('cpu'):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with inference_autocast(torch.device('cpu'), enabled=False):
        assert layer(torch.randn(2, 4)).dtype == torch.float32


def test_amp_flag_means_the_same_in_every_tool():
    parser = add_amp_argument(argparse.ArgumentParser(), 'inference')
    assert parser.parse_args(['--amp']).amp and not parser.parse_args([]).amp
    with pytest.raises(ValueError, match="use must be one of \\('training', 'inference'\\)"):
        add_amp_argument(argparse.ArgumentParser(), 'testing')


def test_import_mmmv_changes_registries_loaders_and_mmcv_ops_only_through_named_functions():
    """In a fresh interpreter: before `import mmmv`, nothing of mmmv's is in place; after it,
    the three documented changes are (README, "What `import mmmv` changes")."""
    code = """
import torch
from mmcv.ops.nms import NMSop
from mmengine.fileio import get_file_backend
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS
def state():
    return (HOOKS.get('FiniteLossHook') is not None,
            HistoryBuffer in torch.serialization.get_safe_globals(),
            type(get_file_backend('x.pth')).__name__ == 'AtomicLocalBackend',
            getattr(NMSop.forward, '_mmmv_float32', False))
before = state()
import mmmv
print(before, state())
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split('\n')[-2] == '(False, False, False, False) (True, True, True, True)'


# ------------------------------------------------------------------ launchers (issue: MPI)
@pytest.fixture
def no_launcher_env(monkeypatch):
    for name in ('LOCAL_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK', 'MMMV_UNSAFE_LOAD'):
        monkeypatch.delenv(name, raising=False)


def _parse(*argv):
    return parse_runner_arguments(add_runner_arguments(argparse.ArgumentParser()), list(argv))


def test_mpi_launcher_takes_the_local_rank_from_open_mpi(no_launcher_env, monkeypatch):
    """mpirun sets OMPI_COMM_WORLD_LOCAL_RANK only; mmengine's DDP wrapper reads LOCAL_RANK for
    device_ids. Rank 3 of a node must not get GPU 0."""
    monkeypatch.setenv('OMPI_COMM_WORLD_LOCAL_RANK', '3')
    _parse('--launcher', 'mpi')
    assert os.environ['LOCAL_RANK'] == '3'


def test_local_rank_by_launcher(no_launcher_env, monkeypatch):
    _parse()
    assert os.environ['LOCAL_RANK'] == '0'
    monkeypatch.setenv('LOCAL_RANK', '2')  # torchrun
    _parse('--launcher', 'pytorch')
    assert os.environ['LOCAL_RANK'] == '2'
    _parse('--launcher', 'pytorch', '--local-rank', '1')  # torch.distributed.launch
    assert os.environ['LOCAL_RANK'] == '1'
    environ = {}
    with pytest.raises(KeyError, match="launcher='mpi' needs OMPI_COMM_WORLD_LOCAL_RANK"):
        export_local_rank('mpi', environ=environ)
    with pytest.raises(ValueError, match="launcher must be one of \\('none', 'pytorch', "):
        export_local_rank('torchrun', environ=environ)


def test_unsafe_load_flag_is_exported(no_launcher_env):
    _parse()
    assert 'MMMV_UNSAFE_LOAD' not in os.environ
    _parse('--unsafe-load')
    assert os.environ['MMMV_UNSAFE_LOAD'] == '1'


# ------------------------------------------------------------------ scan backend on CUDA
@pytest.fixture
def broken_mamba_ssm(tmp_path, monkeypatch):
    """A mamba_ssm package first on sys.path whose import fails as a build for another torch
    does; the backend choice's caches are cleared before and after."""
    scan = importlib.import_module('mmmv.ops.selective_scan')
    package = tmp_path / 'mamba_ssm'
    package.mkdir()
    (package / '__init__.py').write_text(
        "raise ImportError('selective_scan_cuda.so: undefined symbol: _ZN3c104cuda9SetDevice')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(scan.ENV_VAR, raising=False)
    for cache in (scan._load_mamba, scan._warn_mamba_fallback):
        cache.cache_clear()
    yield scan
    for cache in (scan._load_mamba, scan._warn_mamba_fallback):
        cache.cache_clear()


def test_auto_backend_says_once_why_cuda_runs_the_pytorch_scan(broken_mamba_ssm):
    scan = broken_mamba_ssm
    u = helpers.on_another_device(torch.zeros(1, 2, 3))  # reports cuda:0
    with pytest.warns(RuntimeWarning) as record:
        assert scan.scan_backend(u) == 'torch'
    message = str(record[0].message)
    assert 'undefined symbol: _ZN3c104cuda9SetDevice' in message
    assert 'pip install mamba-ssm' in message and 'MMMV_SCAN_BACKEND=torch' in message
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert scan.scan_backend(u) == 'torch'  # said once per process


def test_asked_for_mamba_ssm_backend_fails_loudly(broken_mamba_ssm, monkeypatch):
    scan = broken_mamba_ssm
    monkeypatch.setenv(scan.ENV_VAR, 'mamba_ssm')
    with pytest.raises(RuntimeError, match="backend 'mamba_ssm' is unavailable: mamba_ssm cannot "
                                           'be imported .*undefined symbol'):
        scan.scan_backend(helpers.on_another_device(torch.zeros(1, 2, 3)))


# ------------------------------------------------------------------ benchmarks/gpu.py
def test_gpu_check_compares_backends_with_tf32_off(monkeypatch):
    """cuDNN convolutions use TF32 by default; the backend comparison must not."""
    monkeypatch.setattr(sys, 'path', list(sys.path))  # gpu.py puts benchmarks/ on it
    spec = importlib.util.spec_from_file_location('gpu_check', osp.join(ROOT, 'benchmarks',
                                                                        'gpu.py'))
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    flags = []

    def record(*args):
        flags.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return True

    monkeypatch.setattr(gpu, 'check_scan', record)
    monkeypatch.setattr(gpu, 'check_backbone', record)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as on GPUs
    try:
        assert gpu.run_checks(torch.device('cpu'), ['cpp', 'torch'], 1e-4, 1)
        assert flags == [(False, False), (False, False)]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# ------------------------------------------------------------------ mmengine internals
def test_mmengine_internals_are_as_checked():
    """Each private mmengine method or attribute mmmv relies on is unchanged in the installed
    mmengine; a failure names it and what relies on it."""
    assert changed_internals() == []


def test_a_changed_mmengine_internal_is_named(monkeypatch):
    from mmengine.hooks import CheckpointHook

    def _save_checkpoint_with_step(self, runner, step, meta):
        pass

    monkeypatch.setattr(CheckpointHook, '_save_checkpoint_with_step', _save_checkpoint_with_step)
    changed = changed_internals()
    assert len(changed) == 1 and changed[0].startswith(
        'mmengine.hooks.CheckpointHook._save_checkpoint_with_step has changed; used by '
        'mmmv.engine.hooks.CrashSafeCheckpointHook')
    assert all(internal.used_by for internal in INTERNALS)


# ------------------------------------------------------------------ mmdet's own inference API
def test_mmdet_det_inferencer_loads_an_mmengine_checkpoint_with_custom_imports(tmp_path):
    """A user of mmdet's DetInferencer, with custom_imports=['mmmv'] in the config and nothing
    else, loads a checkpoint as mmengine's Runner writes it (HistoryBuffer and numpy values in
    message_hub), which torch's default weights-only load refuses. (init_detector:
    tests/test_checkpoint.py.)"""
    from mmengine.logging import MessageHub
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner.checkpoint import save_checkpoint
    config = helpers.write_tiny_config(tmp_path, 'det', extra=(
        "custom_imports = dict(imports=['mmmv'], allow_failed_imports=False)"))
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    hub = MessageHub(f'det_{os.getpid()}')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('iter', 2)
    save_checkpoint({'meta': {'iter': 2, 'dataset_meta': {'classes': ('a', 'b', 'c')}},
                     'state_dict': model.state_dict(), 'message_hub': hub.state_dict()},
                    str(tmp_path / 'iter_2.pth'))
    code = f"""
import pickle, torch
from mmdet.apis import DetInferencer
config, path = {config!r}, {str(tmp_path / 'iter_2.pth')!r}
try:
    torch.load(path)
    raise SystemExit('torch.load should refuse this checkpoint by default')
except pickle.UnpicklingError:
    pass
saved = torch.load(path, weights_only=False)['state_dict']
model = DetInferencer(config, path, device='cpu', show_progress=False).model
state = model.state_dict()
assert all(torch.equal(state[k], v) for k, v in saved.items()), 'weights differ'
assert model.dataset_meta['classes'] == ('a', 'b', 'c'), model.dataset_meta
print('loaded')
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path,
                         timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert out.returncode == 0 and 'loaded' in out.stdout, out.stdout[-2000:] + out.stderr[
        -3000:]
