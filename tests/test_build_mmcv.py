"""tools/build_mmcv.sh's wheel-cache slot: named by flavour (cpu / cuXYZ), legacy slots migrated."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import zipfile

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPT = osp.join(ROOT, 'tools', 'build_mmcv.sh')


def load_slot_module():
    spec = importlib.util.spec_from_file_location(
        'mmcv_wheel_slot', osp.join(ROOT, 'tools', 'mmcv_wheel_slot.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


slot = load_slot_module()


NVCC = '/usr/local/cuda/bin/nvcc'


@pytest.mark.parametrize('cuda, nvcc, gpu, want, expected', [
    (None, None, False, 'auto', 'cpu'),     # CPU build of torch
    (None, NVCC, True, 'auto', 'cpu'),      # nvcc alone builds nothing for a CPU torch
    ('12.1', None, True, 'auto', 'cpu'),    # CUDA torch, no compiler: CPU ops only
    ('12.1', NVCC, True, 'auto', 'cu121'),  # a GPU node
    ('13.0', NVCC, True, 'auto', 'cu130'),
    ('13.0', NVCC, False, 'auto', 'cpu'),   # CPU machine with the toolkit installed
    ('13.0', NVCC, False, '1', 'cu130'),    # login node, asked for
    ('12.1', NVCC, True, '0', 'cpu'),       # refused
])
def test_flavour(cuda, nvcc, gpu, want, expected):
    assert slot.flavour(cuda, nvcc, gpu, want) == expected


@pytest.mark.parametrize('cuda, nvcc, want, message', [
    (None, NVCC, '1', 'CPU-only build'), ('12.1', None, '1', 'nvcc is not found'),
    ('12.1', NVCC, 'yes', "expected one of auto, 0, 1")])
def test_flavour_refuses_what_cannot_be_built(cuda, nvcc, want, message):
    with pytest.raises(SystemExit, match=message):
        slot.flavour(cuda, nvcc, True, want)


def test_slot_names_cpu_and_cuda_builds_apart(monkeypatch):
    names = {}
    for cuda in (None, '12.1'):
        monkeypatch.setattr(torch.version, 'cuda', cuda)  # simulated torch build
        names[cuda] = slot.slot_name('2.1.0', '2.14.1+cu121', (3, 11),
                                     slot.flavour(torch.version.cuda, NVCC, True))
    assert names == {None: 'mmcv-2.1.0-torch2141-cp311-cpu',
                     '12.1': 'mmcv-2.1.0-torch2141-cp311-cu121'}


def test_find_nvcc_under_cuda_home(tmp_path, monkeypatch):
    nvcc = tmp_path / 'bin' / 'nvcc'
    nvcc.parent.mkdir()
    nvcc.write_text('#!/bin/sh\n')
    nvcc.chmod(0o755)
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    monkeypatch.delenv('CUDA_PATH', raising=False)
    monkeypatch.setenv('CUDA_HOME', str(tmp_path))
    assert slot.find_nvcc() == str(nvcc)
    monkeypatch.delenv('CUDA_HOME')
    assert slot.find_nvcc() is None


def fake_wheel(folder):
    folder.mkdir(parents=True)
    wheel = folder / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    with zipfile.ZipFile(wheel, 'w') as z:
        z.writestr('mmcv/__init__.py', '')
    return wheel


def current_slot(flavour):
    return slot.slot_name('2.1.0', torch.__version__, sys.version_info, flavour)


def run_script(cache):
    """build_mmcv.sh on a cache folder, CPU ops asked for (MMMV_MMCV_CUDA=0), with a Python that
    refuses `-m pip`: a test never downloads or builds mmcv."""
    python = cache / 'python-without-pip'
    python.write_text(f'#!/bin/sh\n[ "$1 $2" = "-m pip" ] && {{ echo "test: no build" >&2; '
                      f'exit 3; }}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = dict(os.environ, MMMV_WHEEL_CACHE=str(cache), MMMV_MMCV_CUDA='0')
    return subprocess.run(['bash', SCRIPT, str(python)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_script_migrates_the_legacy_slot_instead_of_rebuilding(tmp_path):
    """A wheel cached under the name without flavour (what installs before this change wrote) is
    renamed to the -cpu slot and reused: no download, no 30-minute build."""
    legacy = tmp_path / current_slot('cpu').rsplit('-', 1)[0]
    wheel = fake_wheel(legacy)
    out = run_script(tmp_path)
    assert out.returncode == 0, out.stderr
    moved = tmp_path / current_slot('cpu') / wheel.name
    assert out.stdout.strip().splitlines()[-1] == str(moved)
    assert moved.is_file() and not legacy.exists()
    assert 'renamed the cached CPU wheel slot' in out.stderr
    assert 'ops: cpu' in out.stderr and 'Downloading' not in out.stderr
    # a second run finds the -cpu slot directly
    again = run_script(tmp_path)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == str(moved)


def test_legacy_slot_is_not_taken_for_a_cuda_build(tmp_path):
    """With a CUDA slot wanted, the CPU-only legacy slot stays where it is."""
    legacy = tmp_path / current_slot('cpu').rsplit('-', 1)[0]
    fake_wheel(legacy)
    assert not slot.migrate_legacy_slot(str(tmp_path), current_slot('cu121'))
    assert legacy.is_dir()
    assert slot.migrate_legacy_slot(str(tmp_path), current_slot('cpu'))
    assert not legacy.exists() and (tmp_path / current_slot('cpu')).is_dir()


def test_existing_cpu_slot_is_kept_over_a_legacy_one(tmp_path):
    fake_wheel(tmp_path / current_slot('cpu'))
    legacy = tmp_path / current_slot('cpu').rsplit('-', 1)[0]
    fake_wheel(legacy)
    assert not slot.migrate_legacy_slot(str(tmp_path), current_slot('cpu'))
    assert legacy.is_dir()
