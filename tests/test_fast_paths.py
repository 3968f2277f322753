"""The backbone's performance shortcuts compute the same numbers as the plain computation.

- the last block of a padded hybrid stage computes only the tokens that survive the crop;
- the CPU depthwise conv of the Mamba mixer is a sum of shifted products instead of F.conv1d;
- inference (autograd off) folds eval-mode BatchNorm into the conv before it and applies
  activations and residual additions in place on temporaries;
- CPU inference runs the conv stages channels-last.

The reference is the same model with ``mmmv.models.fast_paths(False)``: the published
computation op for op (what tracers, e.g. FLOP counters, always see).
"""
import pytest
import torch
import torch.nn.functional as F

from mmmv.models import MambaVision, fast_paths
from mmmv.models.mambavision import Block, ConvBlock, PatchEmbed, conv_bn
from mmmv.models.mixers import crop_tokens, depthwise_conv1d

MINI = dict(dim=32, in_dim=8, depths=(1, 1, 3, 2), num_heads=(1, 2, 4, 8))


pytestmark = pytest.mark.usefixtures('one_thread')


def plain_outputs(model, x):
    with fast_paths(False):
        return model(x)


def randomize_batchnorms(model):
    """Running statistics and affine parameters far from the identity, so that folding them into
    the convs is visible."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.5)


@pytest.mark.parametrize('bias', [True, False])
def test_conv_bn_folds_eval_batchnorm(bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=bias)
    bn = torch.nn.BatchNorm2d(6, eps=1e-4)
    randomize_batchnorms(bn)
    bn.eval()
    x = torch.randn(2, 4, 9, 11)
    # float64 reference: the conv, then the BN formula
    y = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else
                 conv.bias.double(), 2, 1)
    expected = ((y - bn.running_mean.double().view(-1, 1, 1))
                / (bn.running_var.double().view(-1, 1, 1) + bn.eps).sqrt()
                * bn.weight.double().view(-1, 1, 1) + bn.bias.double().view(-1, 1, 1))
    with torch.no_grad():
        folded = conv_bn(conv, bn, x)
    torch.testing.assert_close(folded.double(), expected, rtol=1e-5, atol=1e-5)

    bn.train()  # batch statistics: never folded, running statistics updated
    before = bn.running_mean.clone()
    with torch.no_grad():
        out = conv_bn(conv, bn, x)
    assert not torch.equal(bn.running_mean, before)
    mean = out.mean(dim=(0, 2, 3))
    torch.testing.assert_close(mean, bn.bias.data, rtol=0, atol=1e-5)


@pytest.mark.parametrize('taps', [1, 3, 5])
def test_depthwise_conv1d_matches_conv1d(taps):
    torch.manual_seed(0)
    xz = torch.randn(2, 12, 9)
    x = xz.chunk(2, dim=1)[1]  # a strided view, as in the mixer
    weight = torch.randn(6, 1, taps)
    expected = F.conv1d(x, weight, padding=taps // 2, groups=6)
    torch.testing.assert_close(depthwise_conv1d(x, weight), expected, rtol=1e-5, atol=1e-6)
    short = torch.randn(1, 6, 1)  # a sequence shorter than the kernel
    torch.testing.assert_close(depthwise_conv1d(short, weight),
                               F.conv1d(short, weight, padding=taps // 2, groups=6))


@pytest.mark.parametrize('attention', [True, False])
@pytest.mark.parametrize('keep', [(4, 5, 2, 3), (4, 5, 4, 1), (3, 3, 3, 3)])
def test_block_keep_is_the_cropped_full_block(attention, keep):
    torch.manual_seed(0)
    block = Block(32, 4, attention, drop_path=0.5, layer_scale=0.5)
    x = torch.randn(3, keep[0] * keep[1], 32)
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x, keep), crop_tokens(block(x), keep))
    block.train()  # drop_path draws one number per window either way
    torch.manual_seed(1)
    full = crop_tokens(block(x), keep)
    torch.manual_seed(1)
    torch.testing.assert_close(block(x, keep), full)


@pytest.mark.parametrize('make_module,shape', [
    (lambda: Block(32, 4, attention=True, layer_scale=0.5), (2, 12, 32)),
    (lambda: Block(32, 4, attention=False), (2, 12, 32)),
    (lambda: ConvBlock(8, layer_scale=None), (2, 8, 6, 5)),
    (lambda: PatchEmbed(3, 4, 8), (2, 3, 12, 12)),
])
def test_inference_shortcuts_leave_the_input_alone(make_module, shape):
    torch.manual_seed(0)
    module = make_module()
    randomize_batchnorms(module)
    module.eval()
    x = torch.randn(*shape)
    x_before = x.clone()
    with torch.no_grad():
        fast = module(x)
        assert torch.equal(x, x_before)
        plain = plain_outputs(module, x)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('window_size,shape', [
    ((8, 8, 14, 7), (2, 3, 64, 64)),    # one padded window per image and stage
    ((8, 8, 14, 7), (1, 3, 65, 97)),    # odd sizes
    ((8, 8, 4, 2), (1, 3, 96, 160)),    # several windows along both axes, the last ones padded
    ((8, 8, 6, 3), (1, 3, 160, 64)),    # several window rows, one (padded) window column
])
def test_padded_stages_match_plain_computation(window_size, shape):
    torch.manual_seed(0)
    model = MambaVision(MINI, window_size=window_size)
    model.init_weights()
    randomize_batchnorms(model)
    model.eval()
    x = torch.randn(*shape)
    x_before = x.clone()
    with torch.no_grad():
        fast = model(x)  # channels-last, cropped last blocks, shifted-sum convs, folded BN,
        plain = plain_outputs(model, x)  # in-place activations and residuals
        again = model(x)
    assert torch.equal(x, x_before)  # the in-place updates touch only temporaries
    for a, b, c in zip(fast, plain, again):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert torch.equal(a, c)
    fast_grad = model(x)  # gradients enabled: contiguous maps
    for a, b in zip(fast_grad, plain):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-5)


def test_padded_stage_gradients_match_plain_computation():
    torch.manual_seed(0)
    model = MambaVision(MINI, window_size=(8, 8, 14, 7), drop_path_rate=0.)
    model.init_weights()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for run in (model, lambda inp: plain_outputs(model, inp)):
        model.zero_grad(set_to_none=True)
        outs = run(x)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()
                      if p.grad is not None})
    for name, grad in grads[0].items():
        if name.startswith(('levels.0.', 'levels.1.')) and name.endswith('bias'):
            continue  # conv biases before train-mode BN: true gradient 0, rounding noise only
        error = (grad - grads[1][name]).abs().max()
        assert error <= 1e-4 * grad.abs().max(), name  # float32 rounding of long sums


def test_fast_paths_switch_nests_and_tracing_sees_the_plain_path():
    from mmmv.models.mixers import fast_paths_enabled
    assert fast_paths_enabled()
    with fast_paths(False):
        assert not fast_paths_enabled()
        with fast_paths(True):
            assert fast_paths_enabled()
        assert not fast_paths_enabled()
    assert fast_paths_enabled()

    class Probe(torch.nn.Module):
        def forward(self, x):
            return x + float(fast_paths_enabled())

    traced = torch.jit.trace(Probe(), torch.zeros(1))
    assert traced(torch.zeros(1)).item() == 0.0
