"""mmmv.env and tools/check_env.py: the facts, and one warning per known trap (each simulated)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmmv import env

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLEAN = dict(gpu=None, mmcv_cuda_ops=False, mamba_ssm=False, mamba_ssm_reason='not installed',
             native_bf16=True, unsafe_load=None)  # a CPU machine with native bf16: no trap


def traps(**changes):
    return env.find_traps(dict(CLEAN, **changes))


def test_no_trap_on_a_clean_cpu_machine():
    assert traps() == []


def test_gpu_with_cpu_only_mmcv():
    found = traps(gpu='NVIDIA H100', mmcv_cuda_ops=False, mamba_ssm=True)
    assert len(found) == 1
    assert "mmcv's ops were built without CUDA" in found[0] and 'build_mmcv.sh' in found[0]
    assert traps(gpu='NVIDIA H100', mmcv_cuda_ops=True, mamba_ssm=True) == []


def test_gpu_without_mamba_ssm():
    found = traps(gpu='NVIDIA H100', mmcv_cuda_ops=True, mamba_ssm=False,
                  mamba_ssm_reason='No module named mamba_ssm')
    assert len(found) == 1
    assert 'without mamba-ssm (No module named mamba_ssm)' in found[0] and '[cuda]' in found[0]


def test_no_native_bf16():
    found = traps(native_bf16=False)
    assert len(found) == 1 and '--amp' in found[0] and '--amp-force' in found[0]


def test_unsafe_load_left_set():
    found = traps(unsafe_load='1')
    assert len(found) == 1 and 'MMMV_UNSAFE_LOAD' in found[0]
    assert traps(unsafe_load='') == []


def test_all_traps_at_once_one_line_each():
    found = traps(gpu='GPU', mmcv_cuda_ops=False, native_bf16=False, unsafe_load='1')
    assert len(found) == 4 and all('\n' not in line for line in found)


def test_cpu_flags_and_isa(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n\n'
                       'processor\t: 1\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n')
    flags = env.cpu_flags(str(cpuinfo))
    assert {'avx2', 'avx512f', 'avx512_bf16'} <= flags and 'amx_bf16' not in flags
    assert env.cpu_isa(flags) == {'AVX2': True, 'AVX-512': True, 'AVX512-BF16': True,
                                  'AMX-BF16': False}
    assert env.native_bf16(flags) and env.native_bf16({'amx_bf16'})
    assert not env.native_bf16({'avx2', 'avx512f'})
    assert env.cpu_flags(str(tmp_path / 'missing')) == set()


def test_collect_sees_the_unsafe_load_variable(monkeypatch):
    monkeypatch.setenv('MMMV_UNSAFE_LOAD', '1')
    info = env.collect()
    assert info['unsafe_load'] == '1'
    assert any('MMMV_UNSAFE_LOAD' in trap for trap in env.find_traps(info))
    assert info['versions']['torch'] == torch.__version__.split('+')[0] or \
        info['versions']['torch'] == torch.__version__
    assert set(info['backends']) == {'cpu', 'cuda'}
    assert info['backends']['cuda']['attention float32'] == 'sdpa'  # the C++ kernel is CPU-only
    assert info['backends']['cuda']['roi_align'] == 'mmcv'
    assert info['backends']['cpu']['roi_align'] == 'cpp'  # the extension is built by make install


def test_backends_follow_the_dispatch(monkeypatch):
    monkeypatch.setenv('MMMV_SCAN_BACKEND', 'torch')
    monkeypatch.setenv('MMMV_ATTENTION_BACKEND', 'sdpa')
    ops = env.backends()
    assert ops['cpu'] == {'scan': 'torch', 'attention float32': 'sdpa',
                          'attention bfloat16': 'sdpa', 'roi_align': 'cpp'}
    monkeypatch.setenv('MMMV_SCAN_BACKEND', 'mamba_ssm')
    assert env.backends()['cpu']['scan'].startswith('unavailable: ')


def test_gpu_run_with_cpu_only_mmcv_stops_with_the_fix(monkeypatch):
    with pytest.raises(env.MmcvWithoutCudaError, match='build_mmcv.sh'):
        env.require_mmcv_cuda_ops('cuda', 'mmdet', cuda_ops=False)
    env.require_mmcv_cuda_ops('cuda', 'mmdet', cuda_ops=True)
    env.require_mmcv_cuda_ops('cpu', 'mmdet', cuda_ops=False)
    env.require_mmcv_cuda_ops('cuda', 'mmseg', cuda_ops=False)  # no mmcv op in a segmentor
    # simulated GPU machine: the device defaults to cuda and the answer comes from mmcv
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(env, 'mmcv_ops_cuda', lambda: (False, 'CPU only'))
    with pytest.raises(env.MmcvWithoutCudaError, match="mmcv 'ops'"):
        env.require_mmcv_cuda_ops()


def test_build_runner_stops_a_gpu_detection_run_first(monkeypatch):
    from mmmv.engine import build_runner, load_config
    cfg = load_config(osp.join(ROOT, 'configs', 'det', 'demo_cascade_mambavision_t.py'))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(env, 'mmcv_ops_cuda', lambda: (False, 'CPU only'))
    with pytest.raises(env.MmcvWithoutCudaError):
        build_runner(cfg)


def test_amp_allowed(recwarn):
    assert env.amp_allowed('cpu', flags={'avx512_bf16'})
    assert env.amp_allowed('cuda:0', flags=set())
    assert env.amp_allowed('cpu', force=True, flags=set())
    assert not recwarn.list
    with pytest.warns(RuntimeWarning, match='no native bfloat16.*--amp-force'):
        assert not env.amp_allowed('cpu', flags={'avx2'})


def test_check_env_tool_prints_facts_then_traps():
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'check_env.py')],
                         capture_output=True, text=True, timeout=120,
                         env=dict(__import__('os').environ, MMMV_UNSAFE_LOAD='1'))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith('Python ') and lines[1].startswith('torch ')
    assert any(line.startswith('mmcv ') and '(ops: ' in line for line in lines)
    assert any(line.startswith('CPU: AVX2 ') for line in lines)
    assert any(line.startswith('backends on cpu: scan ') for line in lines)
    assert any(line.startswith('backends on cuda: scan ') for line in lines)
    assert lines[-1].startswith('WARNING: MMMV_UNSAFE_LOAD')
