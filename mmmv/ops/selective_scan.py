"""Selective scan (S6 recurrence) with a choice of backends.

Per batch b, channel d and state n::

    delta = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias    (b, d, l)
    h_t   = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B[b, n, t] * u[b, d, t],    h_{-1} = 0
    y_t   = sum_n h_t[n] * C[b, n, t] + D[d] * u[b, d, t]

Backends: 'mamba_ssm' (mamba-ssm's CUDA kernel, CUDA tensors), 'cpp' (the `_scan_cpu` extension,
CPU tensors), 'torch' (blocked two-level scan in tensor ops, any device, bounded working memory:
see `scan_torch`) and 'auto' (the first of those that can run the given tensor). Choose with the
`backend` argument or the MMMV_SCAN_BACKEND environment variable; the argument wins. Our own
backends ('cpp', 'torch') implement the scan proper as an autograd Function with a reverse-scan
backward; bias, softplus and the D term around it are ordinary differentiable tensor ops.
"""
import contextlib
import functools
import warnings

import torch
import torch.nn.functional as F

from . import scan_cpp
from .backends import note_backend, requested_backend
from .scan_torch import TorchScan

BACKENDS = ('auto', 'mamba_ssm', 'cpp', 'torch')
ENV_VAR = 'MMMV_SCAN_BACKEND'


@functools.lru_cache(maxsize=None)
def _load_mamba():
    """(mamba-ssm's selective_scan_fn, None) or (None, reason it cannot be imported)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as err:  # a broken CUDA build fails with OSError/RuntimeError as well
        return None, f'mamba_ssm cannot be imported ({type(err).__name__}: {err})'
    return selective_scan_fn, None


def _unavailable_reason(name, device):
    """None when backend `name` can run on tensors of `device`, else why it cannot."""
    if name == 'mamba_ssm':
        if device.type != 'cuda':
            return f"the 'mamba_ssm' backend needs CUDA tensors, got {device.type} tensors"
        return _load_mamba()[1]
    if name == 'cpp':
        if device.type != 'cpu':
            return f"the 'cpp' backend needs CPU tensors, got {device.type} tensors"
        return scan_cpp.unavailable_reason()
    return None


MAMBA_FIX = ("install a mamba-ssm built for this torch and CUDA (pip install mamba-ssm "
             "--no-build-isolation), or set MMMV_SCAN_BACKEND=torch to choose the PyTorch scan "
             "and silence this warning")


@functools.lru_cache(maxsize=None)
def _warn_mamba_fallback(reason):
    """Say once per process (per reason) that 'auto' runs the PyTorch scan on CUDA because
    mamba-ssm cannot be imported: it trains several times slower."""
    warnings.warn(f"selective_scan: backend 'auto' runs the PyTorch scan on CUDA, several times "
                  f"slower than mamba-ssm's kernel, because {reason}. To fix: {MAMBA_FIX}.",
                  RuntimeWarning, stacklevel=3)


def choose_backend(name, device):
    """The backend that runs tensors on ``device`` when ``name`` is asked for.

    'auto' takes the first of mamba-ssm, the C++ kernel and the PyTorch scan that can run there;
    on CUDA, when mamba-ssm cannot be imported (missing, or built for another torch), it warns
    once per process with the import error and runs the PyTorch scan. A named backend that
    cannot run raises RuntimeError with the reason.
    """
    if name == 'auto':
        if device.type == 'cuda':
            reason = _unavailable_reason('mamba_ssm', device)
            if reason is None:
                return 'mamba_ssm'
            _warn_mamba_fallback(reason)
        return next(c for c in ('cpp', 'torch') if _unavailable_reason(c, device) is None)
    reason = _unavailable_reason(name, device)
    if reason is not None:
        raise RuntimeError(f'selective_scan: backend {name!r} is unavailable: {reason}')
    return name


def scan_backend(u=None, backend=None):
    """Name of the backend that `selective_scan` runs for tensor `u` (None: a CPU tensor).

    backend: None (use MMMV_SCAN_BACKEND, default 'auto') or one of BACKENDS.
    Raises ValueError for an unknown name and RuntimeError for a backend that cannot run `u`
    (see :func:`choose_backend`).
    """
    name = requested_backend('selective_scan', backend, ENV_VAR, BACKENDS)
    return choose_backend(name, u.device if u is not None else torch.device('cpu'))


def _check_shapes(u, delta, A, B, C, D, delta_bias):
    """Raise ValueError naming the first argument whose shape disagrees with u (b, d, l), A (d, n).

    u must be 3-D and A 2-D with A.shape[0] == d; the others must match the shapes these imply.
    """
    if u.dim() != 3:
        raise ValueError(f'selective_scan: u must have shape (b, d, l), got {tuple(u.shape)}')
    b, d, l = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f'selective_scan: A must have shape (d, n) with d = {d} (from u), '
                         f'got {tuple(A.shape)}')
    n = A.shape[1]
    expected = {'delta': ('(b, d, l)', (b, d, l)), 'B': ('(b, n, l)', (b, n, l)),
                'C': ('(b, n, l)', (b, n, l)), 'D': ('(d,)', (d,)), 'delta_bias': ('(d,)', (d,))}
    given = {'delta': delta, 'B': B, 'C': C, 'D': D, 'delta_bias': delta_bias}
    for name, tensor in given.items():
        dims, shape = expected[name]
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f'selective_scan: {name} must have shape {dims} = {shape} '
                             f'(b, d, l = {b}, {d}, {l} from u; n = {n} from A), '
                             f'got {tuple(tensor.shape)}')


def _autocast_off(device_type):
    """Context that disables autocast for `device_type` (nothing to do where it does not exist)."""
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:
        return contextlib.nullcontext()


def _prepare_delta(delta, delta_bias, delta_softplus):
    """delta (b, d, l) plus delta_bias (d,), through softplus if asked."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _float32(*tensors):
    """The tensors as float32 (None stays None)."""
    return [None if t is None else t.float() for t in tensors]


def _run_own_backend(name, u, delta, A, B, C, D, delta_bias, delta_softplus):
    """The 'cpp' or 'torch' core plus bias/softplus and the D term (plain autograd); float32."""
    core = scan_cpp.CppScan if name == 'cpp' else TorchScan
    y = core.apply(u, _prepare_delta(delta, delta_bias, delta_softplus), A, B, C)
    return y if D is None else torch.addcmul(y, D[:, None], u)


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend=None):
    """Selective scan; see the module docstring for the recurrence.

    Args:
        u, delta: (b, d, l).  A: (d, n).  B, C: (b, n, l).  D, delta_bias: (d,) or None.
        delta_softplus: apply softplus to delta + delta_bias.
        backend: None (MMMV_SCAN_BACKEND, default 'auto'), 'auto', 'mamba_ssm', 'cpp' or 'torch'.

    Returns:
        y: (b, d, l) in u's dtype. Computed in float32 whatever the input dtypes, with autocast off;
        differentiable with respect to every tensor argument.
    """
    _check_shapes(u, delta, A, B, C, D, delta_bias)
    name = scan_backend(u, backend)
    with _autocast_off(u.device.type):
        args = _float32(u, delta, A, B, C, D, delta_bias)
        note_backend('selective_scan', name, args[0].dtype)
        if name == 'mamba_ssm':
            mamba_scan = _load_mamba()[0]
            y = mamba_scan(*args[:6], z=None, delta_bias=args[6], delta_softplus=delta_softplus)
        else:
            y = _run_own_backend(name, *args, delta_softplus)
    return y.to(u.dtype)


def selective_scan_ref(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """Sequential reference: one einsum step per token over precomputed decays.

    Same arguments and shapes as `selective_scan`. Computes in the inputs' promoted dtype (at least
    float32, so float64 inputs give a float64 reference) and returns u's dtype. Slow: for tests and
    benchmark baselines only.
    """
    out_dtype = u.dtype
    tensors = [t for t in (u, delta, A, B, C, D, delta_bias) if t is not None]
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors], torch.float32)
    u, delta, A, B, C, D, delta_bias = (None if t is None else t.to(dtype)
                                        for t in (u, delta, A, B, C, D, delta_bias))
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    decay = torch.exp(torch.einsum('bdl,dn->bdln', delta, A))
    drive = torch.einsum('bdl,bnl->bdln', delta * u, B)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    # unbind, not indexing per step: its backward is one stack instead of l full-size scatters
    for decay_t, drive_t, C_t in zip(decay.unbind(2), drive.unbind(2), C.unbind(2)):
        h = decay_t * h + drive_t
        ys.append(torch.einsum('bdn,bn->bd', h, C_t))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(u.shape)
    if D is not None:
        y = y + D[:, None] * u
    return y.to(out_dtype)
