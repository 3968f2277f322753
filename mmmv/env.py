"""What this machine runs mmmv with, and the known traps of an install.

:func:`collect` gathers versions (Python, torch with CUDA / cuDNN, mmengine, mmcv, mmdet, mmseg,
timm, numpy, mamba-ssm), whether mmcv's compiled ops include CUDA kernels, which scan and
attention backends run on cpu and on cuda, and the CPU's instruction sets; :func:`find_traps`
turns the facts into one warning per known trap; ``tools/check_env.py`` prints both.
:func:`require_mmcv_cuda_ops` is the check the tools run before a GPU run.
"""
import importlib
import importlib.metadata
import os
import platform
import sys
import types
import warnings

import torch

from .errors import UserError

PACKAGES = ('torch', 'mmengine', 'mmcv', 'mmdet', 'mmsegmentation', 'timm', 'numpy', 'mamba-ssm')
# (name shown, /proc/cpuinfo flags of which one is enough)
CPU_FEATURES = (('AVX2', ('avx2', )), ('AVX-512', ('avx512f', )),
                ('AVX512-BF16', ('avx512_bf16', )), ('AMX-BF16', ('amx_bf16', )))
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')
UNSAFE_LOAD_ENV = 'MMMV_UNSAFE_LOAD'
MMCV_CUDA_FIX = ('rebuild mmcv with its CUDA ops on a machine with nvcc: '
                 '`bash tools/build_mmcv.sh .venv/bin/python` builds them when torch is a CUDA '
                 'build and nvcc is on PATH (or in CUDA_HOME), then `make install`')
MAMBA_FIX = ('install mamba-ssm (`pip install --no-build-isolation -e ".[cuda]"`, or '
             '`make install` on the GPU machine) for its CUDA scan')


def cpu_flags(cpuinfo_path='/proc/cpuinfo'):
    """The CPU's feature flags from /proc/cpuinfo (an empty set where there is none)."""
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith(('flags', 'Features')):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_isa(flags=None):
    """{'AVX2': bool, 'AVX-512': bool, 'AVX512-BF16': bool, 'AMX-BF16': bool}."""
    flags = cpu_flags() if flags is None else flags
    return {name: any(f in flags for f in needed) for name, needed in CPU_FEATURES}


def native_bf16(flags=None):
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): without it bf16
    autocast converts every operand and runs slower than float32."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def package_versions():
    """{distribution name: version or None when not installed}, from the package metadata."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def mmcv_ops_cuda():
    """(True / False / None, detail): whether mmcv's compiled ops include CUDA kernels (None:
    mmcv's ops cannot be loaded); detail is the CUDA version they were compiled with, or why not
    known."""
    try:
        from mmcv.ops import get_compiling_cuda_version
        compiled = get_compiling_cuda_version()
    except Exception as err:  # a missing or broken _ext raises ImportError, OSError ...
        return None, f'mmcv ops not loadable ({type(err).__name__}: {err})'
    if not compiled or compiled == 'not available':
        return False, 'CPU only'
    return True, f'CUDA {compiled}'


def _probe(device, dtype=torch.float32, head_dim=40):
    """A stand-in for an inference tensor of `device` (b, heads, length, head_dim) that need not
    be allocated: what the backend choosers look at (device, dtype, shape, strides, grad)."""
    shape = (1, 1, 1, head_dim)
    return types.SimpleNamespace(device=torch.device(device), dtype=dtype, shape=shape,
                                 requires_grad=False, stride=lambda dim=None: 1)


def _ask(choose, *args, **kwargs):
    """A backend chooser's answer, or 'unavailable: why' where it refuses."""
    try:
        return choose(*args, **kwargs)
    except (RuntimeError, ValueError) as err:
        return f'unavailable: {err}'


def backends():
    """{device: {op: backend name or 'unavailable: why'}}: what runs in inference.

    cpu is asked with real tensors; cuda with stand-ins (so that it is known without a GPU).
    Attention is asked for MambaVision-T's 40-channel heads, in float32 and in bfloat16; RoIAlign
    for what mmcv's module runs (mmmv's CPU kernel where built).
    MMMV_SCAN_BACKEND / MMMV_ATTENTION_BACKEND are obeyed as in a run.
    """
    from mmmv.ops import attention_backend, scan_backend
    result = {}
    for device in ('cpu', 'cuda'):
        ops = {}
        if device == 'cpu' or os.environ.get('MMMV_SCAN_BACKEND', 'auto') != 'auto':
            ops['scan'] = _ask(scan_backend, _probe(device))
        else:  # what 'auto' takes on CUDA, asked without its once-per-process fallback warning
            ops['scan'] = 'mamba_ssm' if mamba_ssm_importable()[0] else 'torch'
        for dtype in (torch.float32, torch.bfloat16):
            q = torch.zeros(1, 1, 1, 40, dtype=dtype) if device == 'cpu' else _probe(device, dtype)
            with torch.no_grad():
                ops[f'attention {str(dtype)[6:]}'] = _ask(attention_backend, q, q, q)
        ops['roi_align'] = _roi_align_backend(device)
        result[device] = ops
    return result


def _roi_align_backend(device):
    """What mmcv's RoIAlign module runs in inference: 'cpp' (mmmv's CPU kernel), or 'mmcv'."""
    if device != 'cpu':
        return 'mmcv'
    from mmmv.ops.roi_align import cpu_roi_align_unavailable_reason
    reason = cpu_roi_align_unavailable_reason(torch.zeros(1, 1, 1, 1), torch.zeros(0, 5))
    return 'cpp' if reason is None else f'mmcv ({reason})'



def mamba_ssm_importable():
    """(True, '') when mamba-ssm's CUDA scan imports, else (False, why)."""
    from mmmv.ops import scan_backend
    try:
        scan_backend(_probe('cuda'), backend='mamba_ssm')
    except RuntimeError as err:
        return False, str(err).split('unavailable: ')[-1]
    return True, ''


def collect():
    """Everything :func:`format_report` prints and :func:`find_traps` judges, as a dict."""
    cuda_ops, cuda_ops_detail = mmcv_ops_cuda()
    mamba, mamba_reason = mamba_ssm_importable()
    flags = cpu_flags()
    gpu = torch.cuda.is_available()
    return dict(
        python=sys.version.split()[0], platform=platform.platform(), versions=package_versions(),
        torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if gpu else None,
        gpu=torch.cuda.get_device_name(0) if gpu else None,
        mmcv_cuda_ops=cuda_ops, mmcv_cuda_ops_detail=cuda_ops_detail,
        mamba_ssm=mamba, mamba_ssm_reason=mamba_reason, backends=backends(),
        cpu_isa=cpu_isa(flags), native_bf16=native_bf16(flags),
        torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        unsafe_load=os.environ.get(UNSAFE_LOAD_ENV))


def find_traps(info):
    """One warning sentence per known trap in ``info`` (a :func:`collect` dict), naming the fix.

    The keys read: gpu, mmcv_cuda_ops, mamba_ssm, mamba_ssm_reason, native_bf16, unsafe_load.
    """
    traps = []
    if info['gpu'] and info['mmcv_cuda_ops'] is False:
        traps.append(f"GPU {info['gpu']} but mmcv's ops were built without CUDA: detectors "
                     f'fail in RoIAlign / NMS on the GPU; {MMCV_CUDA_FIX}')
    if info['gpu'] and not info['mamba_ssm']:
        traps.append(f"GPU {info['gpu']} without mamba-ssm ({info['mamba_ssm_reason']}): the "
                     f'selective scan runs the slower PyTorch fallback; {MAMBA_FIX}')
    if not info['native_bf16']:
        traps.append('this CPU has no native bfloat16 (no AVX512-BF16 / AMX): --amp on the CPU '
                     'would run slower than float32, so the tools keep float32 unless given '
                     '--amp-force')
    if info['unsafe_load'] not in (None, ''):
        traps.append(f"{UNSAFE_LOAD_ENV}={info['unsafe_load']!r} is set: every checkpoint is "
                     'unpickled fully, code included; unset it unless you trust every file '
                     'you load')
    return traps


def format_report(info):
    """The report of :func:`collect` as lines of text."""
    v = info['versions']
    torch_line = f"torch {v['torch']}"
    torch_line += f", CUDA {info['torch_cuda']}" if info['torch_cuda'] else ', CPU-only build'
    if info['cudnn']:
        torch_line += f", cuDNN {info['cudnn']}"
    lines = [f"Python {info['python']} ({info['platform']})", torch_line,
             f"GPU: {info['gpu'] or 'none visible'}"]
    for name in PACKAGES[1:]:
        extra = ''
        if name == 'mmcv':
            extra = f" (ops: {info['mmcv_cuda_ops_detail']})"
        elif name == 'mamba-ssm' and v[name] and not info['mamba_ssm']:
            extra = f" (not importable: {info['mamba_ssm_reason']})"
        lines.append(f'{name} {v[name] or "not installed"}{extra}')
    isa = ', '.join(f'{k} {"yes" if ok else "no"}' for k, ok in info['cpu_isa'].items())
    lines.append(f"CPU: {isa} (torch kernels: {info['torch_cpu_capability']})")
    for device, ops in info['backends'].items():
        lines.append(f'backends on {device}: ' + ', '.join(f'{op} {name}'
                                                           for op, name in ops.items()))
    return lines


class MmcvWithoutCudaError(UserError, RuntimeError):
    """A run on CUDA with an mmcv whose compiled ops have no CUDA kernels."""


def require_mmcv_cuda_ops(device=None, task='mmdet', cuda_ops=None):
    """Stop a detection run that will use CUDA with an mmcv whose ops have no CUDA kernels
    (RoIAlign and NMS would fail mid-run), naming the fix.

    device: the run's device ('cuda' / 'cpu' or a torch.device; None: cuda when a GPU is
    visible). task: 'mmdet' or 'mmseg' (segmentors need no mmcv op: nothing to check).
    cuda_ops: the :func:`mmcv_ops_cuda` answer (None: ask). Raises MmcvWithoutCudaError.
    """
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if torch.device(device).type != 'cuda' or task != 'mmdet':
        return
    if cuda_ops is None:
        cuda_ops = mmcv_ops_cuda()[0]
    if cuda_ops is False:
        raise MmcvWithoutCudaError(
            'mmcv', 'ops', "this detection run uses CUDA, but mmcv's compiled ops have no CUDA "
            'kernels (RoIAlign / NMS would fail mid-run)', MMCV_CUDA_FIX[0].upper() +
            MMCV_CUDA_FIX[1:])


def amp_allowed(device, force=False, flags=None):
    """Whether ``--amp`` may run bfloat16 autocast on ``device``: on CUDA always; on a CPU when it
    has native bfloat16 (AVX512-BF16 / AMX) or ``force`` is set. Otherwise warns that bf16
    would run slower than float32 and returns False (the caller keeps float32)."""
    if torch.device(device).type != 'cpu' or force or native_bf16(flags):
        return True
    warnings.warn('--amp: this CPU has no native bfloat16 (no AVX512-BF16 / AMX), so bfloat16 '
                  'autocast would run slower than float32; keeping float32 (pass --amp-force to '
                  'use bfloat16 anyway)', RuntimeWarning, stacklevel=2)
    return False
