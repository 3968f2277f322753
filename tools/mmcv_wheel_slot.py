"""The wheel-cache slot of mmcv for this Python and torch, for `tools/build_mmcv.sh`.

    python tools/mmcv_wheel_slot.py CACHE MMCV_VERSION   ->   prints "SLOT FLAVOUR"

The slot is CACHE/mmcv-<version>-torch<torch version>-cp<python>-<flavour>; the flavour is
``cu<CUDA version>`` (e.g. cu121) where mmcv's CUDA ops will be built and ``cpu`` otherwise, so a
CPU-only wheel built on a login node is never reused on a GPU node through a shared home
directory. CUDA ops are built when torch is a CUDA build, nvcc is found (PATH, CUDA_HOME or
CUDA_PATH) and MMMV_MMCV_CUDA asks for them: 'auto' (default) when a GPU is visible, '1' also
without one (a login node; set TORCH_CUDA_ARCH_LIST), '0' never. A CPU machine with the CUDA
toolkit installed thus keeps its CPU-only build (compiling the CUDA ops takes hours there and
they could not run). Slots named before the
flavour existed (no suffix) held CPU-only builds; such a slot is renamed to its ``-cpu`` name
instead of being rebuilt.
"""
import os
import os.path as osp
import shutil
import sys


def find_nvcc():
    """Path of nvcc on PATH or under CUDA_HOME / CUDA_PATH, or None."""
    found = shutil.which('nvcc')
    if found:
        return found
    for var in ('CUDA_HOME', 'CUDA_PATH'):
        root = os.environ.get(var)
        if root and os.access(osp.join(root, 'bin', 'nvcc'), os.X_OK):
            return osp.join(root, 'bin', 'nvcc')
    return None


CUDA_CHOICES = ('auto', '0', '1')


def flavour(cuda_version, nvcc, gpu_visible, want='auto'):
    """'cu<major><minor>' (``torch.version.cuda`` '12.1' -> 'cu121') when CUDA ops are to be built,
    else 'cpu'. want: MMMV_MMCV_CUDA, one of CUDA_CHOICES (see the module docstring); '1' where
    torch is not a CUDA build or nvcc is missing raises SystemExit saying which."""
    if want not in CUDA_CHOICES:
        raise SystemExit(f'build_mmcv: MMMV_MMCV_CUDA={want!r}; expected one of '
                         f'{", ".join(CUDA_CHOICES)}')
    if want == '1' and not (cuda_version and nvcc):
        missing = 'torch is a CPU-only build' if not cuda_version else 'nvcc is not found'
        raise SystemExit(f'build_mmcv: MMMV_MMCV_CUDA=1 but {missing}')
    if cuda_version and nvcc and (want == '1' or (want == 'auto' and gpu_visible)):
        return 'cu' + ''.join(cuda_version.split('.')[:2])
    return 'cpu'


def slot_name(mmcv_version, torch_version, python_version, wheel_flavour):
    """e.g. ('2.1.0', '2.14.1+cu130', (3, 11), 'cpu') -> 'mmcv-2.1.0-torch2141-cp311-cpu'."""
    torch_tag = 'torch' + torch_version.split('+')[0].replace('.', '')
    return (f'mmcv-{mmcv_version}-{torch_tag}-cp{python_version[0]}{python_version[1]}-'
            f'{wheel_flavour}')


def migrate_legacy_slot(cache, slot):
    """Rename the slot of the same mmcv, torch and Python named without a flavour (always a CPU
    build) to ``slot`` when ``slot`` is the -cpu one and does not exist yet. Returns True if it
    renamed one."""
    legacy = slot.rsplit('-', 1)[0]
    if not slot.endswith('-cpu') or osp.exists(osp.join(cache, slot)):
        return False
    if not osp.isdir(osp.join(cache, legacy)):
        return False
    os.rename(osp.join(cache, legacy), osp.join(cache, slot))
    return True


def main(argv):
    if len(argv) != 3:
        raise SystemExit('usage: mmcv_wheel_slot.py CACHE MMCV_VERSION')
    cache, mmcv_version = argv[1], argv[2]
    import torch
    wheel_flavour = flavour(torch.version.cuda, find_nvcc(), torch.cuda.is_available(),
                            os.environ.get('MMMV_MMCV_CUDA', 'auto'))
    slot = slot_name(mmcv_version, torch.__version__, sys.version_info, wheel_flavour)
    if migrate_legacy_slot(cache, slot):
        print(f'build_mmcv: renamed the cached CPU wheel slot {slot.rsplit("-", 1)[0]} to {slot}',
              file=sys.stderr)
    print(osp.join(cache, slot), wheel_flavour)


if __name__ == '__main__':
    main(sys.argv)
