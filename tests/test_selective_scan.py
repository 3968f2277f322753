"""Selective scan backends against an independent float64 loop; dtypes, backend choice, errors."""
import functools

import pytest
import torch

from mmmv.ops import scan_backend, selective_scan, selective_scan_ref
from mmmv.ops import scan_cpp, scan_torch

CPP_BUILT = scan_cpp.unavailable_reason() is None
TOL = 1e-5
LENGTHS = (1, 2, 7, 13, 127, 300)  # 300 > the C++ kernel's 256-token decay tile
# (use D, use delta_bias, delta_softplus)
OPTIONS = ((False, False, False), (True, True, True), (True, False, True))


def backends():
    """Our own backends runnable here; 'torch-blocks' is 'torch' forced to many small blocks."""
    cpp = pytest.param('cpp', marks=pytest.mark.skipif(not CPP_BUILT, reason='_scan_cpu not built'))
    return [cpp, 'torch', 'torch-blocks']


@pytest.fixture
def use_backend(request, monkeypatch):
    """The backend name to pass to selective_scan; shrinks the torch blocks for 'torch-blocks'."""
    name = request.param
    if name == 'torch-blocks':
        monkeypatch.setattr(scan_torch, 'BLOCK_ELEMENTS', 330)  # 11 tokens of (b, d, n) = (2, 5, 3)
        return 'torch'
    return name


def randn(*shape, seed):
    """Seeded standard normal float64 tensor."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def make_inputs(b, d, n, l, softplus, seed=0):
    """Random float64 inputs in the range a Mamba layer sees (A < 0, positive step sizes)."""
    # raw delta goes through softplus; without it, delta itself must be a positive step size
    delta = randn(b, d, l, seed=seed) * 0.5 - (1.0 if softplus else 0.0)
    return dict(u=randn(b, d, l, seed=seed + 1), delta=delta if softplus else delta.abs(),
                A=-torch.exp(randn(d, n, seed=seed + 2) * 0.5), B=randn(b, n, l, seed=seed + 3),
                C=randn(b, n, l, seed=seed + 4), D=randn(d, seed=seed + 5),
                delta_bias=randn(d, seed=seed + 6).abs() * 0.1)


def loop_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """Independent float64 reference: one step per token with the exponential taken in the step."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = torch.log1p(torch.exp(delta))
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        step = delta[:, :, t, None]
        h = torch.exp(step * A) * h + step * B[:, None, :, t] * u[:, :, t, None]
        y = (h * C[:, None, :, t]).sum(-1)
        ys.append(y if D is None else y + D * u[:, :, t])
    return torch.stack(ys, dim=-1)


def rel_err(x, ref):
    """max |x - ref| / max |ref|; an all-zero ref asks for an all-zero x."""
    return ((x.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def select(inputs, use_d, use_bias):
    """The inputs without D and/or delta_bias."""
    dropped = {name for name, used in (('D', use_d), ('delta_bias', use_bias)) if not used}
    return {k: v for k, v in inputs.items() if k not in dropped}


def values_and_grads(fn, inputs, weight, **kwargs):
    """fn(**inputs) and the gradients of sum(weight * fn(**inputs)) for every input."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y = fn(**leaves, **kwargs)
    grads = torch.autograd.grad((y * weight.to(y.dtype)).sum(), list(leaves.values()))
    return y, dict(zip(leaves, grads))


@functools.lru_cache(maxsize=None)
def loop_case(b, d, n, length, use_d, use_bias, softplus):
    """Inputs, output weight, and the float64 loop's output and gradients (shared by backends)."""
    inputs = select(make_inputs(b, d, n, length, softplus, seed=length), use_d, use_bias)
    weight = randn(b, d, length, seed=99)
    return (inputs, weight) + values_and_grads(loop_scan, inputs, weight, delta_softplus=softplus)


def check_against_loop(backend, b, d, n, length, use_d=True, use_bias=True, softplus=True):
    """Assert the backend's float32 output and gradients are within TOL of the float64 loop's."""
    inputs, weight, y_ref, grads_ref = loop_case(b, d, n, length, use_d, use_bias, softplus)
    inputs32 = {k: v.float() for k, v in inputs.items()}
    y, grads = values_and_grads(selective_scan, inputs32, weight, delta_softplus=softplus,
                                backend=backend)
    assert y.dtype == torch.float32
    errors = {'y': rel_err(y, y_ref)}
    errors.update({f'grad_{k}': rel_err(grads[k], grads_ref[k]) for k in grads})
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize('use_backend', backends(), indirect=True)
@pytest.mark.parametrize('length', LENGTHS)
@pytest.mark.parametrize('use_d,use_bias,softplus', OPTIONS)
def test_matches_float64_loop(use_backend, length, use_d, use_bias, softplus):
    check_against_loop(use_backend, 2, 5, 3, length, use_d, use_bias, softplus)


@pytest.mark.parametrize('use_backend', backends(), indirect=True)
def test_state_size_8_long_sequence(use_backend):
    """The MambaVision state size (n = 8) over a sequence longer than several chunks and tiles."""
    check_against_loop(use_backend, 1, 4, 8, 700)


@pytest.mark.parametrize('use_backend', backends(), indirect=True)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float64],
                         ids=['bf16', 'fp16', 'fp64'])
def test_other_dtypes_computed_in_float32(use_backend, dtype):
    inputs = {k: v.to(dtype) for k, v in make_inputs(2, 4, 3, 40, softplus=True).items()}
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    y = selective_scan(**leaves, delta_softplus=True, backend=use_backend)
    y32 = selective_scan(**{k: v.float() for k, v in inputs.items()}, delta_softplus=True,
                         backend=use_backend)
    assert y.dtype == dtype
    assert torch.equal(y, y32.to(dtype))
    y.float().sum().backward()
    assert all(leaf.grad.dtype == dtype for leaf in leaves.values())


@pytest.mark.parametrize('use_backend', backends(), indirect=True)
def test_cpu_autocast_still_float32(use_backend):
    inputs = {k: v.float() for k, v in make_inputs(2, 4, 3, 40, softplus=True).items()}
    expected = selective_scan(**inputs, delta_softplus=True, backend=use_backend)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = selective_scan(**inputs, delta_softplus=True, backend=use_backend)
    assert y.dtype == torch.float32
    assert torch.equal(y, expected)


def test_reference_matches_loop_in_float64():
    inputs = make_inputs(2, 3, 4, 50, softplus=True)
    y = selective_scan_ref(**inputs, delta_softplus=True)
    assert y.dtype == torch.float64
    assert rel_err(y, loop_scan(**inputs, delta_softplus=True)) < 1e-12


@pytest.mark.parametrize('use_backend', backends(), indirect=True)
def test_non_contiguous_inputs(use_backend):
    inputs = {k: v.float() for k, v in make_inputs(2, 4, 3, 30, softplus=True).items()}
    strided = {k: v.transpose(0, -1).contiguous().transpose(0, -1) for k, v in inputs.items()}
    assert not strided['u'].is_contiguous()
    # Not bitwise: on AVX-512 CPUs PyTorch's softplus rounds strided and contiguous inputs one ulp
    # apart. Strides read wrongly would be off by O(1).
    torch.testing.assert_close(
        selective_scan(**strided, delta_softplus=True, backend=use_backend),
        selective_scan(**inputs, delta_softplus=True, backend=use_backend), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('use_backend', backends(), indirect=True)
def test_empty_sequence(use_backend):
    inputs = {k: v.float() for k, v in make_inputs(2, 4, 3, 0, softplus=False).items()}
    assert selective_scan(**inputs, backend=use_backend).shape == (2, 4, 0)


def test_torch_blocks_respect_element_budget(monkeypatch):
    monkeypatch.setattr(scan_torch, 'BLOCK_ELEMENTS', 1000)
    assert scan_torch.block_length(b=2, d=10, n=8, l=12544) == 6
    assert scan_torch.block_length(b=1, d=1, n=1, l=50) == 50
    assert scan_torch.block_length(b=4, d=512, n=8, l=100) == 1


class CallCounter:
    """Wraps a function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.fixture
def torch_core_calls(monkeypatch):
    """Counts the runs of the 'torch' backend's core."""
    counter = CallCounter(scan_torch.TorchScan.apply)
    monkeypatch.setattr(scan_torch.TorchScan, 'apply', counter)
    return counter


def small_inputs():
    """Float32 inputs with (b, d, n, l) = (1, 2, 2, 5)."""
    return {k: v.float() for k, v in make_inputs(1, 2, 2, 5, softplus=False).items()}


def test_auto_backend_on_cpu(monkeypatch):
    monkeypatch.delenv('MMMV_SCAN_BACKEND', raising=False)
    assert scan_backend() == ('cpp' if CPP_BUILT else 'torch')
    assert scan_backend(torch.zeros(1)) == scan_backend(backend='auto')


def test_backend_argument_selects_torch(monkeypatch, torch_core_calls):
    monkeypatch.delenv('MMMV_SCAN_BACKEND', raising=False)
    assert scan_backend(backend='torch') == 'torch'
    selective_scan(**small_inputs(), backend='torch')
    assert torch_core_calls.calls == 1


def test_env_var_selects_backend(monkeypatch, torch_core_calls):
    monkeypatch.setenv('MMMV_SCAN_BACKEND', 'torch')
    assert scan_backend() == 'torch'
    selective_scan(**small_inputs())
    assert torch_core_calls.calls == 1


@pytest.mark.skipif(not CPP_BUILT, reason='_scan_cpu not built')
def test_argument_overrides_env_var(monkeypatch, torch_core_calls):
    monkeypatch.setenv('MMMV_SCAN_BACKEND', 'torch')
    assert scan_backend(backend='cpp') == 'cpp'
    selective_scan(**small_inputs(), backend='cpp')
    assert torch_core_calls.calls == 0


def test_unbuilt_extension_falls_back_to_torch(monkeypatch):
    monkeypatch.delenv('MMMV_SCAN_BACKEND', raising=False)
    monkeypatch.setattr(scan_cpp, 'unavailable_reason', lambda: 'extension not built (test)')
    assert scan_backend() == 'torch'
    with pytest.raises(RuntimeError, match=r"'cpp'.*extension not built \(test\)"):
        scan_backend(backend='cpp')


def test_mamba_ssm_needs_cuda_tensors():
    with pytest.raises(RuntimeError, match=r"'mamba_ssm'.*needs CUDA tensors"):
        selective_scan(**small_inputs(), backend='mamba_ssm')


@pytest.mark.parametrize('value', ['cuda', 'Torch', ''])
def test_invalid_backend_argument(value):
    with pytest.raises(ValueError) as info:
        selective_scan(**small_inputs(), backend=value)
    message = str(info.value)
    assert 'backend' in message and repr(value) in message
    assert all(repr(name) in message for name in ('auto', 'mamba_ssm', 'cpp', 'torch'))


def test_invalid_env_var(monkeypatch):
    monkeypatch.setenv('MMMV_SCAN_BACKEND', 'fast')
    allowed = r"'auto', 'mamba_ssm', 'cpp', 'torch'"
    with pytest.raises(ValueError, match=r"MMMV_SCAN_BACKEND='fast'.*" + allowed):
        scan_backend()


@pytest.mark.parametrize('name,shape,expected', [
    ('delta', (1, 2, 4), r'delta must have shape \(b, d, l\) = \(1, 2, 5\)'),
    ('A', (3, 2), r'A must have shape \(d, n\) with d = 2'),
    ('B', (1, 2, 4), r'B must have shape \(b, n, l\) = \(1, 2, 5\)'),
    ('C', (2, 2, 5), r'C must have shape \(b, n, l\) = \(1, 2, 5\)'),
    ('D', (3,), r'D must have shape \(d,\) = \(2,\)'),
    ('delta_bias', (2, 1), r'delta_bias must have shape \(d,\) = \(2,\)'),
    ('u', (2, 5), r'u must have shape \(b, d, l\)'),
])
def test_shape_errors_name_the_argument(name, shape, expected):
    inputs = small_inputs()
    inputs[name] = torch.zeros(shape)
    with pytest.raises(ValueError, match=expected):
        selective_scan(**inputs)
