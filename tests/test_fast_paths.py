"""The backbone's exact shortcuts compute the same numbers as the published computation.

Fast paths (``MambaVision(fast_paths=True)``, the default):
- the last block of a padded hybrid stage computes only the tokens that survive the crop;
- the CPU depthwise conv of the Mamba mixer is a sum of shifted products instead of F.conv1d;
- attention may take the C++ kernel in CPU inference (tests/test_attention.py);
- CPU inference runs the conv stages channels-last.
Without autograd the blocks apply activations and residual additions in place on their own
temporaries, and ``fuse_conv_bn()`` folds eval BatchNorm into the convs once for inference.

The reference is the same weights in a model built with ``fast_paths=False``, unfused, with
autograd on: the published computation op for op (what FLOP counters trace).
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from mmmv.models import Attention, MambaVision, MambaVisionMixer
from mmmv.models.blocks import Block, ConvBlock, MambaVisionStage, Mlp, PatchEmbed
from mmmv.models.mixers import WindowCrop, shifted_depthwise_conv1d

MINI = dict(dim=32, in_dim=8, depths=(1, 1, 3, 2), num_heads=(1, 2, 4, 8))


pytestmark = pytest.mark.usefixtures('one_thread')


def randomize_batchnorms(model):
    """Running statistics and affine parameters far from the identity, so that folding them into
    the convs is visible."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.5)


def build_pair(window_size, **kwargs):
    """(fast model, published model) with the same random weights, both in eval mode."""
    torch.manual_seed(0)
    model = MambaVision(MINI, window_size=window_size, **kwargs)
    model.init_weights()
    randomize_batchnorms(model)
    reference = MambaVision(MINI, window_size=window_size, fast_paths=False, **kwargs)
    reference.load_state_dict(model.state_dict())
    return model.eval(), reference.eval()


def published(model, x):
    """The published computation's outputs (autograd on: nothing in place), detached."""
    return [o.detach() for o in model(x)]


@pytest.mark.parametrize('taps', [1, 3, 5])
def test_shifted_depthwise_conv1d_matches_conv1d(taps):
    torch.manual_seed(0)
    xz = torch.randn(2, 12, 9, dtype=torch.float64)
    x = xz.chunk(2, dim=1)[1]  # a strided view, as in the mixer
    weight = torch.randn(6, 1, taps, dtype=torch.float64)
    expected = F.conv1d(x, weight, padding=taps // 2, groups=6)
    torch.testing.assert_close(shifted_depthwise_conv1d(x, weight), expected, rtol=1e-12,
                               atol=1e-12)
    short = torch.randn(1, 6, 1, dtype=torch.float64)  # a sequence shorter than the kernel
    torch.testing.assert_close(shifted_depthwise_conv1d(short, weight),
                               F.conv1d(short, weight, padding=taps // 2, groups=6))


def test_mixer_uses_conv1d_without_fast_paths(monkeypatch):
    import mmmv.models.mixers as mixers
    calls = []
    monkeypatch.setattr(mixers, 'shifted_depthwise_conv1d',
                        lambda *args: calls.append(1) or F.conv1d(*args, padding=1, groups=8))
    mixer = MambaVisionMixer(16)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        fast = mixer(x)
        assert len(calls) == 2  # conv1d_x and conv1d_z
        mixer.fast_paths = False
        torch.testing.assert_close(mixer(x), fast, rtol=0, atol=0)
    assert len(calls) == 2


@pytest.mark.parametrize('attention', [True, False])
@pytest.mark.parametrize('crop', [WindowCrop(4, 5, 2, 3), WindowCrop(4, 5, 4, 1),
                                  WindowCrop(3, 3, 3, 3)])
def test_block_with_crop_is_the_cropped_full_block(attention, crop):
    torch.manual_seed(0)
    block = Block(32, 4, attention, drop_path=0.5, layer_scale=0.5)
    x = torch.randn(3, crop.window_h * crop.window_w, 32)
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x, crop), crop.apply(block(x)))
    block.train()  # drop_path draws one number per window either way
    torch.manual_seed(1)
    full = crop.apply(block(x))
    torch.manual_seed(1)
    torch.testing.assert_close(block(x, crop), full)


def test_window_crop_takes_the_top_left_corner():
    x = torch.arange(2 * 4 * 5 * 3.).reshape(2, 20, 3)  # 2 windows of 4 x 5 tokens
    kept = WindowCrop(4, 5, 2, 3).apply(x)
    assert kept.shape == (2, 6, 3)
    torch.testing.assert_close(kept[1, 4], x[1, 1 * 5 + 1])  # row 1, column 1 of window 1


@pytest.mark.parametrize('h, w, expected', [
    (4, 20, WindowCrop(14, 14, 4, 14)),   # one window high, several wide
    (20, 14, None),                       # several high, exactly one wide: nothing cut
    (3, 5, WindowCrop(14, 14, 3, 5)),
])
def test_last_block_crop(h, w, expected):
    stage = MambaVisionStage(8, [], window_size=14)
    assert stage.last_block_crop(h, w) == expected
    stage.fast_paths = False
    assert stage.last_block_crop(h, w) is None


@pytest.mark.parametrize('make_module,shape', [
    (lambda: Block(32, 4, attention=True, layer_scale=0.5), (2, 12, 32)),
    (lambda: Block(32, 4, attention=False), (2, 12, 32)),
    (lambda: ConvBlock(8, layer_scale=None), (2, 8, 6, 5)),
    (lambda: ConvBlock(8, layer_scale=0.3), (2, 8, 6, 5)),
    (lambda: PatchEmbed(3, 4, 8), (2, 3, 12, 12)),
    (lambda: Mlp(8, 16), (2, 5, 8)),
])
def test_inplace_inference_leaves_the_input_alone(make_module, shape):
    torch.manual_seed(0)
    module = make_module()
    randomize_batchnorms(module)
    module.eval()
    x = torch.randn(*shape)
    x_before = x.clone()
    with torch.no_grad():
        inplace = module(x)
    assert torch.equal(x, x_before)
    torch.testing.assert_close(inplace, module(x).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('window_size,shape', [
    ((8, 8, 14, 7), (2, 3, 64, 64)),    # one padded window per image and stage
    ((8, 8, 14, 7), (1, 3, 65, 97)),    # odd sizes
    ((8, 8, 4, 2), (1, 3, 96, 160)),    # several windows along both axes, the last ones padded
    ((8, 8, 6, 3), (1, 3, 160, 64)),    # several window rows, one (padded) window column
])
def test_padded_stages_match_published_computation(window_size, shape):
    model, reference = build_pair(window_size)
    x = torch.randn(*shape)
    x_before = x.clone()
    expected = published(reference, x)
    with torch.no_grad():
        fast = model(x)  # channels-last, cropped last blocks, shifted-sum convs, in place
        again = model(x)
        fused = copy.deepcopy(model).fuse_conv_bn()(x)
    assert torch.equal(x, x_before)  # the in-place updates touch only temporaries
    for a, b, c, d in zip(fast, expected, again, fused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d, b, rtol=1e-5, atol=1e-5)
        assert torch.equal(a, c)
    for a, b in zip(model(x), expected):  # gradients enabled: contiguous maps, not in place
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-5)


def test_padded_stage_gradients_match_published_computation():
    model, reference = build_pair((8, 8, 14, 7), drop_path_rate=0.)
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for run in (model, reference):
        run.train()
        outs = run(x)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        grads.append({n: p.grad for n, p in run.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        if name.startswith(('levels.0.', 'levels.1.')) and name.endswith('bias'):
            continue  # conv biases before train-mode BN: true gradient 0, rounding noise only
        error = (grad - grads[1][name]).abs().max()
        assert error <= 1e-4 * grad.abs().max(), name  # float32 rounding of long sums


def test_set_fast_paths_reaches_every_part():
    model = MambaVision(MINI, window_size=(8, 8, 14, 7))
    parts = [m for m in model.modules()
             if isinstance(m, (MambaVision, MambaVisionStage, MambaVisionMixer, Attention))]
    assert len(parts) == 1 + 4 + 5 and all(m.fast_paths for m in parts)
    assert model.set_fast_paths(False) is model
    assert not any(m.fast_paths for m in parts)
    built_off = MambaVision(MINI, fast_paths=False)
    assert not any(getattr(m, 'fast_paths', False) for m in built_off.modules())


def test_fuse_conv_bn_folds_every_batchnorm_once():
    model, reference = build_pair((8, 8, 4, 2))
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(RuntimeError, match='eval'):
        copy.deepcopy(model).train().fuse_conv_bn()
    assert model.fuse_conv_bn().fuse_conv_bn() is model  # a second call finds nothing to fold
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    keys = model.state_dict().keys()
    assert 'patch_embed.conv_down.0.bias' in keys and 'levels.0.blocks.0.norm1.weight' not in keys
    with torch.no_grad():
        for a, b in zip(model(x), published(reference, x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match='inference only'):
        model.train()
    model.eval()  # still allowed


def test_prepare_inference_hook_folds_the_backbone_inside_a_model_before_testing():
    """tools/test.py adds PrepareInferenceHook: before the test loop it folds the backbone
    wherever it sits in the model (here inside a wrapper, as a detector holds it), in eval mode."""
    from types import SimpleNamespace

    from mmmv.engine import PrepareInferenceHook, enable_inference_preparation
    from mmengine.config import Config
    model, reference = build_pair((8, 8, 4, 2))
    wrapper = torch.nn.Sequential(model).train()
    PrepareInferenceHook().before_test_epoch(
        SimpleNamespace(model=wrapper, test_loop=SimpleNamespace(fp16=False)))
    assert not wrapper.training and not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in wrapper.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), published(reference, x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    cfg = Config(dict(custom_hooks=[dict(type='EMAHook')]))
    enable_inference_preparation(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == ['EMAHook', 'PrepareInferenceHook']
