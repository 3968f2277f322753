"""Multi-head attention (`mmmv.ops.attention`): our CPU kernel and the backend choice.

The reference is softmax attention written out in float64 (scores, a max-shifted softmax, the
weighted sum of values), independent of both backends. Every instruction-set variant of the C++
kernel that this CPU runs is checked, not only the one 'auto' picks.
"""
import pytest
import torch

from mmmv.models import MambaVision
from mmmv.ops import attention, attention_backend
from mmmv.ops.attention import CPP_MAX_HEAD_WIDTH, cpu_kernel_isas
from mmmv.ops.backends import load_extension

KERNEL = load_extension('_attention_cpu')[0]
BUILT = KERNEL is not None
ISAS = ('avx512', 'avx2', 'baseline')
TOL = dict(rtol=1e-5, atol=1e-5)  # float32 against float64, sums of up to a few hundred terms

pytestmark = pytest.mark.usefixtures('one_thread')
needs_kernel = pytest.mark.skipif(not BUILT, reason='_attention_cpu not built')


def reference(q, k, v, scale):
    """(b, h, lq, d), (b, h, lk, d) x2 -> (b, lq, h * d) in float64."""
    q, k, v = q.double(), k.double(), v.double()
    scores = scale * q @ k.transpose(-1, -2)
    weights = (scores - scores.amax(-1, keepdim=True)).exp()
    weights = weights / weights.sum(-1, keepdim=True)
    out = weights @ v
    return out.transpose(1, 2).flatten(2)


def qkv_views(batch, heads, lq, lk, d, seed=0):
    """q, k, v as the model makes them: strided views of one (b, l, 3, heads, d) projection; q
    keeps its first lq tokens."""
    torch.manual_seed(seed)
    qkv = torch.randn(batch, max(lq, lk), 3, heads, d)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q[:, :, :lq], k[:, :, :lk], v[:, :, :lk]


def isa_param(isa):
    runs = BUILT and isa in KERNEL.supported_isas()
    return pytest.param(isa, marks=pytest.mark.skipif(not runs, reason=f'CPU lacks {isa}'))


@needs_kernel
@pytest.mark.parametrize('isa', [isa_param(isa) for isa in ISAS])
@pytest.mark.parametrize('batch,heads,lq,lk,d', [
    (1, 1, 1, 1, 1),        # a single query and key
    (2, 3, 70, 300, 40),    # partial query tiles, two key blocks plus a partial one, R remainders
    (1, 2, 64, 256, 49),    # exact tiles and key block; an odd head width (MambaVision-L)
    (1, 1, 5, 600, 3),      # channels fewer than a register block
])
def test_kernel_matches_float64(isa, batch, heads, lq, lk, d):
    q, k, v = qkv_views(batch, heads, lq, lk, d)
    scale = d ** -0.5
    out = KERNEL.forward(q, k, v, scale, isa)
    assert out.shape == (batch, lq, heads, d) and out.is_contiguous()
    torch.testing.assert_close(out.flatten(2).double(), reference(q, k, v, scale), **TOL)


@needs_kernel
@pytest.mark.parametrize('isa', [isa_param(isa) for isa in ISAS])
def test_kernel_online_softmax_rescales(isa):
    """Scores that grow from key block to key block (and span e^±80) force every rescaling step
    of the online softmax; a wrong running max or sum is off by O(1)."""
    torch.manual_seed(1)
    q = torch.randn(1, 2, 33, 8)
    ramp = torch.linspace(-20, 20, 700).view(1, 1, 700, 1)
    k = torch.randn(1, 2, 700, 8) * 0.1 + ramp * q[:, :, :1].sign()
    v = torch.randn(1, 2, 700, 8)
    out = KERNEL.forward(q, k, v, 1.0, isa)
    torch.testing.assert_close(out.flatten(2).double(), reference(q, k, v, 1.0), **TOL)


@needs_kernel
def test_kernel_threads_split_work_without_sharing_buffers():
    """Query tiles computed by two threads (each with its own scratch) equal the one-thread
    result bit for bit: a tile's arithmetic does not depend on who computes it."""
    q, k, v = qkv_views(2, 3, 150, 300, 16)
    one = KERNEL.forward(q, k, v, 0.25, 'auto')
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = KERNEL.forward(q, k, v, 0.25, 'auto')
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@needs_kernel
def test_kernel_takes_keys_and_values_of_any_strides():
    q, k, v = qkv_views(1, 2, 20, 40, 8)
    k_t, v_t = (t.transpose(2, 3).contiguous().transpose(2, 3) for t in (k, v))  # stride 1: tokens
    out = KERNEL.forward(q, k_t, v_t, 0.5, 'auto')
    torch.testing.assert_close(out.flatten(2).double(), reference(q, k, v, 0.5), **TOL)


@needs_kernel
def test_kernel_rejects_bad_input():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(RuntimeError, match="isa 'sse9' is not run by this CPU.*baseline"):
        KERNEL.forward(q, q, q, 1.0, 'sse9')
    with pytest.raises(RuntimeError, match='float32'):
        KERNEL.forward(q.double(), q.double(), q.double(), 1.0, 'auto')
    with pytest.raises(RuntimeError, match='unit stride'):
        KERNEL.forward(q.transpose(2, 3), q, q, 1.0, 'auto')
    with pytest.raises(RuntimeError, match='matching q'):
        KERNEL.forward(q, q[:, :1], q[:, :1], 1.0, 'auto')


@pytest.mark.parametrize('backend', ['sdpa', pytest.param('cpp', marks=needs_kernel)])
def test_backends_match_float64(backend):
    q, k, v = qkv_views(2, 2, 30, 45, 12)
    with torch.no_grad():
        out = attention(q.transpose(2, 3).contiguous().transpose(2, 3), k, v, 0.3,
                        backend=backend)  # q with a unit stride along the tokens
    torch.testing.assert_close(out.double(), reference(q, k, v, 0.3), **TOL)


def test_auto_backend(monkeypatch):
    monkeypatch.delenv('MMMV_ATTENTION_BACKEND', raising=False)
    q = torch.randn(1, 1, 4, 8)
    fast = BUILT and cpu_kernel_isas()[0] in ('avx512', 'avx2')
    wide = torch.randn(1, 1, 4, CPP_MAX_HEAD_WIDTH + 1)
    with torch.no_grad():
        assert attention_backend(q, q, q) == ('cpp' if fast else 'sdpa')
        assert attention_backend(wide, wide, wide) == 'sdpa'  # where PyTorch's kernel is faster
        assert attention_backend(q.double(), q.double(), q.double()) == 'sdpa'
    leaf = q.clone().requires_grad_()
    assert attention_backend(leaf, q, q) == 'sdpa'  # autograd needs the differentiable backend
    out = attention(leaf, q, q, 1.0)
    out.sum().backward()
    assert leaf.grad is not None


@needs_kernel
def test_cpp_backend_refuses_autograd_and_other_dtypes(monkeypatch):
    monkeypatch.setenv('MMMV_ATTENTION_BACKEND', 'cpp')
    q = torch.randn(1, 1, 4, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="'cpp' is unavailable.*no backward"):
        attention(q, q, q, 1.0)
    with torch.no_grad(), pytest.raises(RuntimeError, match='float32'):
        attention(q.double(), q.double(), q.double(), 1.0)
    with torch.no_grad():
        assert attention_backend(q, q, q) == 'cpp'


def test_invalid_backend_names_the_allowed_values(monkeypatch):
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match=r"invalid backend='flash'.*'auto', 'sdpa', 'cpp'"):
        attention(q, q, q, 1.0, backend='flash')
    monkeypatch.setenv('MMMV_ATTENTION_BACKEND', 'fast')
    with pytest.raises(ValueError, match="invalid MMMV_ATTENTION_BACKEND='fast'"):
        attention(q, q, q, 1.0)


@needs_kernel
def test_model_with_the_kernel_matches_plain_computation(monkeypatch):
    """The backbone's attention layers on the kernel (forced, so that CPUs without AVX-512 check
    it too) against the published computation with PyTorch's attention; windows padded."""
    monkeypatch.setenv('MMMV_ATTENTION_BACKEND', 'cpp')
    torch.manual_seed(0)
    model = MambaVision(dict(dim=32, in_dim=8, depths=(1, 1, 3, 2), num_heads=(1, 2, 4, 8)),
                        window_size=(8, 8, 14, 7))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 80, 96)
    calls = []
    original = KERNEL.forward
    monkeypatch.setattr(KERNEL, 'forward', lambda *args: calls.append(args) or original(*args))
    with torch.no_grad():
        fast = model(x)
        assert len(calls) == 2  # the attention block of stage 2 and that of stage 3
        plain = model.set_fast_paths(False)(x)
    assert len(calls) == 2  # the published computation stays on PyTorch's attention
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

