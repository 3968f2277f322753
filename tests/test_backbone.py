"""MambaVision backbone: architecture facts (the MambaVision paper, CVPR 2025, and NVIDIA's released
code), options and errors."""
import logging
import math

import pytest
import torch
import torchvision
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import MMLogger

from mmmv.errors import ConfigError
from mmmv.models import (ARCH_SETTINGS, Attention, MM_mamba_vision, MambaVision,
                         MambaVisionMixer, check_backbone_cfg)
from mmmv.models.blocks import window_partition, window_reverse

# ImageNet-1K classifier parameters in millions (the model table of NVIDIA's MambaVision README).
CLASSIFIER_PARAMS_M = {
    'tiny': 31.8, 'tiny2': 35.1, 'small': 50.1, 'base': 97.7, 'large': 227.9, 'large2': 241.5,
    'large3': 739.6}
# Windows that fit the maps of a 64x64 input exactly (stage 2: 4x4, stage 3: 2x2): short scans.
SMALL_WINDOWS = (8, 8, 4, 2)
# A small model with every kind of block, for the behaviour tests (C = 32, 64, 128, 256).
MINI = dict(dim=32, in_dim=8, depths=(1, 1, 3, 2), num_heads=(1, 2, 4, 8))


pytestmark = pytest.mark.usefixtures('one_thread')


def build_on_meta(arch='tiny', **kwargs):
    with torch.device('meta'):
        return MambaVision(arch, **kwargs)


def build_zeros(arch, **kwargs):
    """A real (CPU) model without PyTorch's slow default init: zero weights, BN variance 1."""
    model = build_on_meta(arch, **kwargs).to_empty(device='cpu')
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.fill_(1 if name.endswith('running_var') else 0)
    return model


def build_mini(**kwargs):
    kwargs.setdefault('window_size', SMALL_WINDOWS)
    torch.manual_seed(0)
    model = MambaVision(MINI, **kwargs)
    model.init_weights()
    return model


def expected_shapes(batch, h, w, channels, indices=range(4)):
    return [(batch, channels[i], math.ceil(h / 2**(i + 2)), math.ceil(w / 2**(i + 2)))
            for i in indices]


@pytest.mark.parametrize('arch', list(ARCH_SETTINGS))
def test_arch_presets(arch):
    cfg = ARCH_SETTINGS[arch]
    model = build_on_meta(arch, window_size=SMALL_WINDOWS)
    channels = tuple(cfg['dim'] * 2**i for i in range(4))
    assert model.num_features == channels
    assert [len(level.blocks) for level in model.levels] == list(cfg['depths'])
    assert [blk.mixer.num_heads for blk in model.levels[3].blocks
            if isinstance(blk.mixer, Attention)][0] == cfg['num_heads'][3]
    keys = model.state_dict().keys()
    assert ('levels.2.blocks.0.gamma_1' in keys) == (cfg['layer_scale'] is not None)

    # That table counts the classifier: the backbone without outnorms, plus its
    # norm (BatchNorm2d(C3)) and head (Linear(C3, 1000)). The table gives millions to one decimal,
    # rounded (tiny .. base, large3: 739.57) or truncated (large: 227.96, large2: 241.55).
    backbone = sum(p.numel() for n, p in model.named_parameters() if not n.startswith('outnorm'))
    classifier = backbone + 2 * channels[3] + channels[3] * 1000 + 1000
    assert CLASSIFIER_PARAMS_M[arch] in (round(classifier / 1e6, 1),
                                         math.floor(classifier / 1e5) / 10)


# large3 is left out: 3 GB of weights, and its blocks are those of large / large2
@pytest.mark.parametrize('arch', ['tiny', 'tiny2', 'small', 'base', 'large', 'large2'])
def test_arch_preset_output_shapes(arch):
    model = build_zeros(arch, window_size=SMALL_WINDOWS).eval()
    with torch.no_grad():
        outs = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == expected_shapes(1, 64, 64, model.num_features)


def test_state_dict_names_and_shapes():
    sd = build_on_meta('tiny').state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    # stem
    assert shapes['patch_embed.conv_down.0.weight'] == (32, 3, 3, 3)
    assert shapes['patch_embed.conv_down.1.running_var'] == (32, )
    assert shapes['patch_embed.conv_down.3.weight'] == (80, 32, 3, 3)
    assert shapes['patch_embed.conv_down.4.weight'] == (80, )
    assert not any(k.startswith(('patch_embed.conv_down.2', 'patch_embed.conv_down.5')) for k in sd)
    # conv stages
    assert shapes['levels.0.blocks.0.conv1.weight'] == (80, 80, 3, 3)
    assert shapes['levels.0.blocks.0.conv1.bias'] == (80, )
    assert shapes['levels.1.blocks.2.norm2.running_mean'] == (160, )
    # Mamba mixer, C = 320, h = 160, dt_rank = 20
    mixer = 'levels.2.blocks.0.mixer.'
    assert shapes[mixer + 'in_proj.weight'] == (320, 320)
    assert shapes[mixer + 'conv1d_x.weight'] == (160, 1, 3)
    assert shapes[mixer + 'conv1d_z.weight'] == (160, 1, 3)
    assert shapes[mixer + 'x_proj.weight'] == (20 + 16, 160)
    assert shapes[mixer + 'dt_proj.weight'] == (160, 20)
    assert shapes[mixer + 'dt_proj.bias'] == (160, )
    assert shapes[mixer + 'A_log'] == (160, 8)
    assert shapes[mixer + 'D'] == (160, )
    assert shapes[mixer + 'out_proj.weight'] == (320, 320)
    for name in ('in_proj', 'x_proj', 'out_proj'):
        assert mixer + name + '.bias' not in sd
    assert not any(k.startswith(mixer + 'conv1d') and k.endswith('bias') for k in sd)
    # attention mixer and MLP
    assert shapes['levels.2.blocks.4.mixer.qkv.weight'] == (960, 320)
    assert shapes['levels.2.blocks.4.mixer.qkv.bias'] == (960, )
    assert shapes['levels.2.blocks.4.mixer.proj.bias'] == (320, )
    assert shapes['levels.3.blocks.3.mlp.fc1.weight'] == (2560, 640)
    assert shapes['levels.3.blocks.3.norm2.weight'] == (640, )
    # downsamples (none after stage 3) and output norms; no classifier keys, no layer scale
    for i, c in enumerate((80, 160, 320)):
        assert shapes[f'levels.{i}.downsample.reduction.0.weight'] == (2 * c, c, 3, 3)
    assert not any(k.startswith('levels.3.downsample') for k in sd)
    for i, c in enumerate((80, 160, 320, 640)):
        assert shapes[f'outnorm{i}.weight'] == shapes[f'outnorm{i}.bias'] == (c, )
    assert not any(k.startswith(('norm.', 'head.')) or 'gamma' in k for k in sd)


def test_state_dict_round_trip_strict():
    source = build_mini().eval()
    target = MambaVision(MINI, window_size=SMALL_WINDOWS).eval()
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(source(x), target(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_out_indices_subset():
    model = build_on_meta(out_indices=(1, 3))
    keys = model.state_dict().keys()
    assert {k.split('.')[0] for k in keys if k.startswith('outnorm')} == {'outnorm1', 'outnorm3'}
    outs = build_zeros('tiny', window_size=SMALL_WINDOWS, out_indices=(3, 1))(
        torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 160, 8, 8), (1, 640, 2, 2)]


@pytest.mark.parametrize('depth, mamba', [(8, 4), (5, 3), (4, 2), (3, 2), (1, 1)])
def test_mixer_order(depth, mamba):
    model = build_on_meta(dict(dim=32, in_dim=16, depths=(1, 1, depth, 1), num_heads=(1, 2, 4, 8)))
    kinds = [type(blk.mixer) for blk in model.levels[2].blocks]
    assert kinds == [MambaVisionMixer] * mamba + [Attention] * (depth - mamba)


def reference_mamba_mixer(mixer, x):
    """The mixer as NVIDIA's MambaVisionMixer computes it (paper section 3.2), written out with
    plain ops, token by token. x: (N, L, C)."""
    n, length, c = x.shape
    h, r, s = c // 2, mixer.dt_proj.in_features, mixer.A_log.shape[1]

    def depthwise_same(t, weight):  # t (N, L, h), weight (h, 1, 3), symmetric zero padding
        padded = F.pad(t, (0, 0, 1, 1))
        return sum(padded[:, k:k + length] * weight[:, 0, k] for k in range(3))

    xz = x @ mixer.in_proj.weight.T
    u = F.silu(depthwise_same(xz[..., :h], mixer.conv1d_x.weight))
    z = F.silu(depthwise_same(xz[..., h:], mixer.conv1d_z.weight))
    dbl = u @ mixer.x_proj.weight.T
    dt, b, cc = dbl[..., :r], dbl[..., r:r + s], dbl[..., r + s:]
    delta = F.softplus(dt @ mixer.dt_proj.weight.T + 2 * mixer.dt_proj.bias)
    a = -torch.exp(mixer.A_log)
    state, ys = x.new_zeros(n, h, s), []
    for t in range(length):
        state = (torch.exp(delta[:, t, :, None] * a) * state
                 + delta[:, t, :, None] * b[:, t, None, :] * u[:, t, :, None])
        ys.append((state * cc[:, t, None, :]).sum(-1) + mixer.D * u[:, t])
    return torch.cat([torch.stack(ys, 1), z], -1) @ mixer.out_proj.weight.T


def test_mamba_mixer_matches_spec():
    torch.manual_seed(0)
    mixer = MambaVisionMixer(32)
    with torch.no_grad():
        mixer.D.normal_()
        mixer.A_log.add_(0.1 * torch.randn_like(mixer.A_log))
    x = torch.randn(2, 11, 32)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), reference_mamba_mixer(mixer, x), rtol=1e-4, atol=1e-5)


def test_mamba_mixer_init():
    mixer = MambaVisionMixer(64)  # dt_rank 4
    assert mixer.dt_rank == 4
    assert mixer.dt_proj.weight.abs().max() <= 4**-0.5
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert dt.std() > 0
    torch.testing.assert_close(mixer.A_log, torch.arange(1., 9.).log().expand(32, 8))
    torch.testing.assert_close(mixer.D, torch.ones(32))


def test_attention_mixer_matches_softmax_attention():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4)
    x = torch.randn(3, 10, 32)
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).reshape(3, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) * 8**-0.5, dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(3, 10, 32))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_init_weights_default():
    model = build_mini()
    fc1 = model.levels[2].blocks[0].mlp.fc1
    assert abs(fc1.weight.std().item() - 0.02) < 0.002
    assert not fc1.bias.any()
    assert not model.levels[3].blocks[1].mixer.qkv.bias.any()
    assert torch.equal(model.levels[2].blocks[0].norm1.weight, torch.ones(128))
    mixer = model.levels[2].blocks[0].mixer  # Mamba's init survives the generic Linear init
    assert F.softplus(mixer.dt_proj.bias).min() >= 1e-3 * 0.999
    assert mixer.dt_proj.weight.abs().max() <= 8**-0.5
    assert mixer.dt_proj.weight.std() > 0.05


def test_window_partition_order_and_reverse():
    x = torch.randn(2, 5, 4, 9)
    windows = window_partition(x, 2, 3)  # 2 x 3 windows per image
    assert windows.shape == (12, 6, 5)
    torch.testing.assert_close(windows[0], x[0, :, 0:2, 0:3].flatten(1).T)
    torch.testing.assert_close(windows[1], x[0, :, 0:2, 3:6].flatten(1).T)  # next column
    torch.testing.assert_close(windows[3], x[0, :, 2:4, 0:3].flatten(1).T)  # next row
    torch.testing.assert_close(windows[6], x[1, :, 0:2, 0:3].flatten(1).T)  # next image
    assert torch.equal(window_reverse(windows, 2, 3, 4, 9), x)


def test_odd_input_sizes():
    model = build_mini().eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 65, 97))
    assert [tuple(o.shape) for o in outs] == expected_shapes(2, 65, 97, model.num_features)


@pytest.mark.parametrize('grad', [True, False], ids=['train', 'inference'])
def test_outputs_are_contiguous_for_roi_align(grad):
    """mmcv's RoIAlign reads its input as contiguous NCHW whatever its strides: the backbone's
    maps must be contiguous, or a detector's RoI heads get other places' features."""
    import mmcv.ops
    model = build_mini().train(grad)
    with torch.set_grad_enabled(grad):
        outs = model(torch.randn(2, 3, 64, 64))
    assert all(o.is_contiguous() for o in outs)
    rois = torch.tensor([[0., 2., 3., 40., 30.], [1., 10., 5., 60., 63.]])
    for o in outs:  # what a RoI head gets equals the independent torchvision RoIAlign
        got = mmcv.ops.roi_align(o.detach(), rois, (7, 7), o.shape[-1] / 64, 0, 'avg', True)
        want = torchvision.ops.roi_align(o.detach(), rois, (7, 7), o.shape[-1] / 64, 0, True)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_input_smaller_than_windows():
    model = MambaVision(MINI).eval()  # published windows (8, 8, 14, 7) on 2x2 and 1x1 maps
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 40))
    assert [tuple(o.shape) for o in outs] == expected_shapes(1, 32, 40, model.num_features)
    assert all(torch.isfinite(o).all() for o in outs)


def test_padding_is_not_masked():
    """With 4x4 and 2x2 maps, windows (14, 7) pad and windows (4, 2) do not: outputs differ."""
    padded = build_mini(window_size=(8, 8, 14, 7)).eval()
    exact = MambaVision(MINI, window_size=SMALL_WINDOWS).eval()
    exact.load_state_dict(padded.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out_padded, out_exact = padded(x), exact(x)
    torch.testing.assert_close(out_padded[1], out_exact[1], rtol=0, atol=0)
    assert not torch.allclose(out_padded[2], out_exact[2], atol=1e-4)


def test_fit_window_shrinks_windows():
    fitted = build_mini(window_size=(8, 8, 14, 7), fit_window=True).eval()
    assert fitted.levels[2].window_shape(4, 20) == (4, 14)
    assert fitted.levels[3].window_shape(2, 2) == (2, 2)
    assert build_on_meta(MINI).levels[2].window_shape(4, 20) == (14, 14)
    exact = MambaVision(MINI, window_size=SMALL_WINDOWS).eval()
    exact.load_state_dict(fitted.state_dict())
    x = torch.randn(1, 3, 64, 64)  # maps 4x4 and 2x2: fitted windows equal SMALL_WINDOWS
    with torch.no_grad():
        for a, b in zip(fitted(x), exact(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.no_grad():
        outs = fitted(torch.randn(1, 3, 65, 97))
    assert [tuple(o.shape) for o in outs] == expected_shapes(1, 65, 97, fitted.num_features)


def test_with_cp_same_outputs_and_grads(monkeypatch):
    plain = build_mini(drop_path_rate=0.).train()
    ckpt = MambaVision(MINI, window_size=SMALL_WINDOWS, drop_path_rate=0., with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    real_checkpoint = cp.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(cp, 'checkpoint', counting_checkpoint)
    x = torch.randn(2, 3, 32, 32)
    results = []
    for model in (plain, ckpt):
        outs = model(x)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()}))
    assert len(calls) == sum(MINI['depths'])
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
    grads_plain, grads_ckpt = results[0][1], results[1][1]
    assert all(g is not None for g in grads_ckpt.values())
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grad, grads_ckpt[name], msg=name)
    calls.clear()
    with torch.no_grad():
        ckpt(x)
    ckpt.eval()(x)
    assert not calls


def test_frozen_stages():
    model = build_mini(frozen_stages=2)
    frozen = [model.patch_embed, model.levels[0], model.levels[1], model.outnorm0, model.outnorm1]
    trainable = [model.levels[2], model.levels[3], model.outnorm2, model.outnorm3]
    model.train()
    for m in frozen:
        assert not any(p.requires_grad for p in m.parameters())
        assert not any(sub.training for sub in m.modules())
    for m in trainable:
        assert all(p.requires_grad for p in m.parameters())
        assert all(sub.training for sub in m.modules())
    sum(o.sum() for o in model(torch.randn(2, 3, 32, 32))).backward()
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert model.levels[2].blocks[0].mixer.A_log.grad is not None

    stem_only = build_on_meta(frozen_stages=0).train()
    assert not stem_only.patch_embed.training
    assert not any(p.requires_grad for p in stem_only.patch_embed.parameters())
    assert all(p.requires_grad for p in stem_only.levels[0].parameters())
    everything = build_on_meta(frozen_stages=4)
    assert not any(p.requires_grad for p in everything.parameters())


def test_norm_eval():
    model = build_mini(norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    assert model.levels[0].blocks[0].conv1.training and model.levels[2].training
    stats = bns[0].running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(bns[0].running_mean, stats)
    assert all(bn.training for bn in build_on_meta().train().modules()
               if isinstance(bn, torch.nn.BatchNorm2d))


def test_drop_path():
    model = build_mini(drop_path_rate=0.5)
    blocks = [blk for level in model.levels for blk in level.blocks]
    rates = [getattr(blk.drop_path, 'drop_prob', 0.) for blk in blocks]  # Identity at rate 0
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.5, sum(MINI['depths'])))
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    with torch.no_grad():
        first, second = model.train()(x), model(x)
        assert not torch.allclose(first[3], second[3])
        first, second = model.eval()(x), model(x)
    torch.testing.assert_close(first[3], second[3], rtol=0, atol=0)


def test_nvidia_config_keywords():
    """NVIDIA's released MM_mamba_vision configs build the same model as the arch preset."""
    with torch.device('meta'):
        nvidia = MM_mamba_vision(
            dim=96, in_dim=64, depths=[3, 3, 7, 5], num_heads=[2, 4, 8, 16],
            window_size=[8, 8, 112, 56], mlp_ratio=4., drop_path_rate=0.3, norm_layer='ln2d',
            layer_scale=None, out_indices=(0, 1, 2, 3), pretrained='ckpt.pth')
    assert isinstance(nvidia, MambaVision)
    preset = build_on_meta('small')
    assert {k: v.shape for k, v in nvidia.state_dict().items()} == {
        k: v.shape for k, v in preset.state_dict().items()}
    assert nvidia.init_cfg == dict(type='Pretrained', checkpoint='ckpt.pth')
    assert nvidia.levels[2].window_size == 112 and nvidia.levels[3].window_size == 56


def test_arch_dict_options():
    base = MambaVision(dict(dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
                            layer_scale=1e-5))
    torch.testing.assert_close(base.levels[2].blocks[1].gamma_2, torch.full((64, ), 1e-5))
    no_scale = build_on_meta(dict(ARCH_SETTINGS['base'], layer_scale=None)).state_dict()
    assert 'levels.2.blocks.0.gamma_1' not in no_scale
    conv_scale = build_on_meta(dict(ARCH_SETTINGS['tiny'], layer_scale_conv=1e-6)).state_dict()
    assert 'levels.0.blocks.0.gamma' in conv_scale
    wide = build_on_meta(dict(MINI, mlp_ratio=2.))
    assert wide.levels[3].blocks[0].mlp.fc1.out_features == 2 * 256


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), "arch 'huge': no such MambaVision arch.*tiny, tiny2, small, base, large"),
    (dict(arch='smal'), "did you mean 'small'"),
    (dict(arch=3), 'must be a preset name or a dict'),
    (dict(arch=dict(dim=32, depths=(1, 1, 1, 1))), r"missing keys \['in_dim', 'num_heads'\]"),
    (dict(arch=dict(MINI, dims=32)), "arch key 'dims': unknown.*did you mean 'dim'"),
    (dict(arch=dict(MINI, mlp_ratio=0)), 'mlp_ratio'),
    (dict(arch=dict(MINI, layer_scale=-1.)), 'layer_scale'),
    (dict(arch=dict(MINI, depths=(1, 1, 0, 1))), 'depths'),
    (dict(arch=dict(ARCH_SETTINGS['tiny'], num_heads=(2, 4, 7, 16))),
     '7 heads do not divide the 320 channels of stage 2'),
    (dict(out_indices=(0, 4)), r'out_indices.*0\.\.3.*4'),
    (dict(out_indices=()), 'names no stage'),
    (dict(out_indices=3), 'sequence'),
    (dict(window_size=(8, 8, 0, 7)), 'window_size.*ints >= 1'),
    (dict(window_size=(8, 8, 14)), 'window_size'),
    (dict(frozen_stages=5), r'frozen_stages.*-1\.\.4'),
    (dict(drop_path_rate=1.0), r'drop_path_rate.*\[0, 1\)'),
    (dict(with_cp='yes'), 'with_cp.*True or False'),
])
def test_constructor_errors(kwargs, match, monkeypatch):
    import mmmv.models.mambavision as mambavision
    built = []
    monkeypatch.setattr(mambavision, 'PatchEmbed', lambda *args: built.append(args))
    with pytest.raises(ValueError, match=match):
        build_on_meta(**kwargs)
    assert not built  # raised before building anything


@pytest.mark.parametrize('kwargs, match', [
    (dict(norm_layer='bn'), "norm_layer 'bn'"),
    (dict(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth')),
     'pretrained'),
    (dict(arch='tiny'), "use type='MambaVision'"),
])
def test_nvidia_adapter_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MM_mamba_vision(**dict(MINI, **kwargs))


@pytest.mark.parametrize('cfg, match', [
    (dict(type='MambaVision', archh='small'),
     "MambaVision argument 'archh': unknown. did you mean 'arch'\\? Valid: arch, out_indices"),
    (dict(type='mmdet.MambaVision', arch='smal'), "arch 'smal'.*did you mean 'small'"),
    (dict(type='MambaVision', dim=32), "'dim': unknown"),
    (dict(type='MM_mamba_vision', window_sizes=(8, 8, 4, 2), **MINI),
     "MM_mamba_vision argument 'window_sizes': unknown. did you mean 'window_size'"),
    (dict(type='MM_mamba_vision', dim=32, depths=(1, 1, 1, 1)), 'in_dim, num_heads'),
    (dict(type='MM_mamba_vision', norm_layer='bn', **MINI), 'norm_layer'),
    (dict(type='MambaVision', out_indices=(0, 4)), r'0\.\.3'),
    (dict(type='MambaVision', window_size=(8, 8, 14, -7)), 'window_size'),
    (dict(type='MambaVision', frozen_stages=7), r'-1\.\.4'),
])
def test_check_backbone_cfg_errors(cfg, match, monkeypatch):
    import mmmv.models.mambavision as mambavision
    monkeypatch.setattr(mambavision, 'PatchEmbed', None)  # building would fail differently
    with pytest.raises(ConfigError, match=match):
        check_backbone_cfg(cfg)


def test_check_backbone_cfg_accepts_valid_configs():
    check_backbone_cfg(dict(type='MambaVision', arch='small', out_indices=(1, 2),
                            window_size=(8, 8, 112, 56), init_cfg=dict(type='Pretrained',
                                                                       checkpoint='x.pth')))
    check_backbone_cfg(dict(type='MM_mamba_vision', pretrained='x.pth', mlp_ratio=4.,
                            layer_scale=None, **MINI))
    check_backbone_cfg(dict(type='ResNet', depth=50, archh='not ours'))  # other backbones


def test_only_stages_up_to_the_last_output_are_built():
    full = build_mini()
    model = MambaVision(MINI, window_size=SMALL_WINDOWS, out_indices=(0, 1, 2))
    assert len(model.levels) == 3 and model.levels[2].downsample is None
    assert model.unbuilt_prefixes() == ('levels.3.', 'levels.2.downsample.', 'outnorm3.')
    extra = full.state_dict().keys() - model.state_dict().keys()
    assert extra and all(k.startswith(model.unbuilt_prefixes()) for k in extra)
    missing, unexpected = model.load_state_dict(full.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == sorted(extra)  # a full checkpoint loads
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), full.eval()(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert build_on_meta(out_indices=(1, 3)).unbuilt_prefixes() == ('outnorm0.', 'outnorm2.')
    frozen = build_on_meta(out_indices=(0, ), frozen_stages=4)
    assert not any(p.requires_grad for p in frozen.parameters())


def _ddp_step(rank, store, result):
    """Two steps of a DDP-wrapped MambaVision with out_indices (0, 1, 2) on gloo."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = MambaVision(MINI, window_size=SMALL_WINDOWS, out_indices=(0, 1, 2))
        ddp = DistributedDataParallel(model, find_unused_parameters=False)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        torch.manual_seed(1 + rank)
        for _ in range(2):  # DDP reports unused parameters at the step after they occur
            optimizer.zero_grad()
            sum(o.mean() for o in ddp(torch.randn(2, 3, 64, 64))).backward()
            optimizer.step()
        if rank == 0:
            torch.save({k: v.clone() for k, v in model.state_dict().items()}, result)
    finally:
        dist.destroy_process_group()


def test_ddp_without_unused_parameters(tmp_path):
    """DDP's default find_unused_parameters=False needs every parameter in the graph: a backbone
    that does not return stage 3 must not build (or run) it."""
    import torch.multiprocessing as mp
    result = tmp_path / 'state.pth'
    mp.spawn(_ddp_step, args=(str(tmp_path / 'store'), str(result)), nprocs=2, join=True)
    state = torch.load(result, weights_only=True)
    assert not any(k.startswith('levels.3.') for k in state)
    torch.manual_seed(0)
    initial = MambaVision(MINI, window_size=SMALL_WINDOWS, out_indices=(0, 1, 2)).state_dict()
    assert not torch.equal(state['levels.2.blocks.0.mixer.A_log'],
                           initial['levels.2.blocks.0.mixer.A_log'])  # the steps were taken


@pytest.mark.parametrize('shape, match', [
    ((1, 4, 64, 64), r'\(B, 3, H, W\), got \(1, 4, 64, 64\)'),
    ((1, 3, 31, 64), 'at least 32'),
    ((1, 3, 64, 16), 'at least 32'),
])
def test_input_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        build_on_meta()(torch.zeros(shape, device='meta'))


@pytest.fixture
def captured_log():
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    yield lambda: '\n'.join(r.getMessage() for r in records)
    logger.removeHandler(handler)


def test_init_weights_pretrained(tmp_path, captured_log):
    source = build_mini()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith('outnorm3')}
    state['head.weight'] = torch.zeros(2)
    path = str(tmp_path / 'ckpt.pth')
    torch.save({'state_dict': state}, path)
    model = MambaVision(MINI, window_size=SMALL_WINDOWS,
                        init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert torch.equal(model.levels[2].blocks[0].mixer.A_log,
                       source.levels[2].blocks[0].mixer.A_log)
    assert torch.equal(model.levels[3].blocks[1].mlp.fc2.weight,
                       source.levels[3].blocks[1].mlp.fc2.weight)
    log = captured_log()
    assert 'outnorm3.weight' in log and 'outnorm3.bias' in log and 'head.weight' in log
    assert 'outnorm2.weight' not in log

    state['levels.2.blocks.0.mixer.A_log'] = torch.zeros(100, 8)
    torch.save({'state_dict': state}, path)
    message = r'levels\.2\.blocks\.0\.mixer\.A_log: checkpoint \(100, 8\), model \(64, 8\)'
    with pytest.raises(ValueError, match=message):
        MambaVision(MINI, init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
