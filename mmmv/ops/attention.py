"""Multi-head attention forward with a choice of backends.

Per batch b, head h and query i::

    out[b, i, h * d + c] = sum_j softmax_j(scale * q[b, h, i, :] . k[b, h, j, :]) v[b, h, j, c]

Backends: 'sdpa' (``F.scaled_dot_product_attention``: any device and dtype, differentiable),
'cpp' (the `_attention_cpu` extension: float32 CPU tensors, or bfloat16 ones with an even head
width on a CPU with AVX512-BF16; forward only, so inference; queries run along the SIMD lanes,
which keeps every multiply-add a full-width FMA (bf16: a pair-wise dot-product instruction) for
narrow heads such as MambaVision-T's 40 channels, where PyTorch's CPU flash kernel runs narrow
GEMMs) and 'auto' ('cpp' where it can run, the CPU has AVX2 or AVX-512 and heads are at most
CPP_MAX_HEAD_WIDTH channels wide: the cases where it was measured faster, in both dtypes, see
`benchmarks/attention.py`; 'sdpa' otherwise). Choose with the `backend` argument or the
MMMV_ATTENTION_BACKEND environment variable; the argument wins.
"""
import functools

import torch
import torch.nn.functional as F

from .backends import load_extension, note_backend, requested_backend

BACKENDS = ('auto', 'sdpa', 'cpp')
ENV_VAR = 'MMMV_ATTENTION_BACKEND'
EXTENSION = '_attention_cpu'
# Head widths measured against PyTorch 2.14's CPU flash kernel (benchmarks/RESULTS.md): 40 (T),
# 48 (S) and 64 (B), 1.2x-1.5x faster; wider heads are not measured.
CPP_MAX_HEAD_WIDTH = 64
FAST_ISAS = ('avx512', 'avx2')  # the kernel's variants that were measured faster


@functools.lru_cache(maxsize=None)
def cpu_kernel_isas(dtype=torch.float32):
    """Instruction-set variants of the 'cpp' kernel this CPU runs for ``dtype`` (float32 or
    bfloat16), widest first (none where unbuilt or unsupported)."""
    ext = load_extension(EXTENSION)[0]
    if ext is None or dtype not in (torch.float32, torch.bfloat16):
        return ()
    return tuple(ext.supported_isas() if dtype == torch.float32 else ext.supported_bf16_isas())


def _cpp_unavailable_reason(q, k, v):
    """None when the 'cpp' backend can run these tensors, else why it cannot."""
    reason = load_extension(EXTENSION)[1]
    if reason is not None:
        return reason
    tensors = (q, k, v)
    if any(t.device.type != 'cpu' for t in tensors):
        return f"the 'cpp' backend needs CPU tensors, got {q.device.type} tensors"
    if any(t.dtype != q.dtype for t in tensors) or q.dtype not in (torch.float32, torch.bfloat16):
        return f"the 'cpp' backend needs float32 (or bfloat16) tensors, got {q.dtype}"
    if q.dtype == torch.bfloat16 and not cpu_kernel_isas(torch.bfloat16):
        return "the 'cpp' backend needs a CPU with AVX512-BF16 for bfloat16 tensors"
    if q.dtype == torch.bfloat16 and q.shape[-1] % 2:
        return f"the 'cpp' backend needs an even head width for bfloat16, got {q.shape[-1]}"
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return ("the 'cpp' backend has no backward; run it under torch.no_grad() or "
                'torch.inference_mode()')
    return None


def attention_backend(q, k, v, backend=None):
    """Name of the backend that :func:`attention` runs for these tensors.

    backend: None (use MMMV_ATTENTION_BACKEND, default 'auto') or one of BACKENDS. Raises
    ValueError for an unknown name and RuntimeError for 'cpp' where it cannot run.
    """
    name = requested_backend('attention', backend, ENV_VAR, BACKENDS)
    if name == 'sdpa':
        return name
    reason = _cpp_unavailable_reason(q, k, v)
    if name == 'auto':
        widest = cpu_kernel_isas()[0] if cpu_kernel_isas() else None  # the one 'cpp' runs
        faster = widest in FAST_ISAS and q.shape[-1] <= CPP_MAX_HEAD_WIDTH  # bf16: avx512_bf16
        return 'cpp' if reason is None and faster else 'sdpa'
    if reason is not None:
        raise RuntimeError(f"attention: backend 'cpp' is unavailable: {reason}")
    return name


def attention(q, k, v, scale, backend=None):
    """Softmax attention of every head, heads merged: the input of an output projection.

    Args:
        q: (b, heads, lq, d).  k, v: (b, heads, lk, d).  Any strides.
        scale: factor of the dot products (usually d ** -0.5).
        backend: None (MMMV_ATTENTION_BACKEND, default 'auto'), 'auto', 'sdpa' or 'cpp'.

    Returns:
        (b, lq, heads * d) in q's dtype.
    """
    name = attention_backend(q, k, v, backend)
    note_backend('attention', name, q.dtype)
    if name == 'cpp':
        q = q if q.stride(-1) == 1 else q.contiguous()  # the kernel copies k and v itself
        out = load_extension(EXTENSION)[0].forward(q, k, v, scale, 'auto')
        return out.flatten(2)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out.transpose(1, 2).flatten(2)
