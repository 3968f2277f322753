"""MambaVision backbone (Hatamizadeh & Kautz, CVPR 2025) for dense prediction.

Four stages at strides 4, 8, 16 and 32 with C_i = dim * 2**i channels. Stages 0 and 1 are
residual conv blocks; stages 2 and 3 cut the map into windows and run hybrid blocks on them: the
first half of each stage (rounded up) mixes tokens with a selective scan, the rest with
self-attention. Module and parameter names follow NVIDIA's releases, so their checkpoints load
with ``strict=True`` (a dense-prediction backbone has ``outnorm{i}`` instead of the classifier's
``norm`` and ``head``).
"""
import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from .mixers import (Attention, MambaVisionMixer, crop_tokens, fast_paths_enabled,
                     inference_fast_paths)

ARCH_SETTINGS = {  # the published variants (ImageNet-1K classifiers, mlp_ratio 4)
    'tiny': dict(dim=80, in_dim=32, depths=(1, 3, 8, 4), num_heads=(2, 4, 8, 16),
                 layer_scale=None),
    'tiny2': dict(dim=80, in_dim=32, depths=(1, 3, 11, 4), num_heads=(2, 4, 8, 16),
                  layer_scale=None),
    'small': dict(dim=96, in_dim=64, depths=(3, 3, 7, 5), num_heads=(2, 4, 8, 16),
                  layer_scale=None),
    'base': dict(dim=128, in_dim=64, depths=(3, 3, 10, 5), num_heads=(2, 4, 8, 16),
                 layer_scale=1e-5),
    'large': dict(dim=196, in_dim=64, depths=(3, 3, 10, 5), num_heads=(4, 8, 16, 32),
                  layer_scale=1e-5),
    'large2': dict(dim=196, in_dim=64, depths=(3, 3, 12, 5), num_heads=(4, 8, 16, 32),
                   layer_scale=1e-5),
}
NUM_STAGES = 4
MIN_INPUT_SIZE = 32
_FROM_ARCH = object()  # default of `layer_scale`: take the arch's value


def window_partition(x, wh, ww):
    """Cut a map into windows of wh x ww tokens.

    (B, C, H, W), H % wh == 0 and W % ww == 0 -> (B * H/wh * W/ww, wh * ww, C); windows ordered
    batch, window row, window column; tokens in a window row-major.
    """
    b, c, h, w = x.shape
    # via the channels-last view: one copy, reading whole channel vectors (free of copies for a
    # single channels-last window)
    x = x.permute(0, 2, 3, 1).reshape(b, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)


def window_reverse(windows, wh, ww, h, w, channels_last=False):
    """Inverse of :func:`window_partition`: (B * h/wh * w/ww, wh * ww, C) -> (B, C, h, w).

    Contiguous, or channels-last in memory with ``channels_last`` (then a view without a copy when
    there is one window per image).
    """
    c = windows.shape[-1]
    x = windows.reshape(-1, h // wh, w // ww, wh, ww, c)
    if channels_last:
        return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c).permute(0, 3, 1, 2)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, c, h, w)


def conv_bn(conv, bn, x):
    """``bn(conv(x))`` for a Conv2d followed by a BatchNorm2d.

    In inference (see :func:`~mmmv.models.mixers.inference_fast_paths`) with ``bn`` in eval mode,
    one convolution with the BatchNorm folded into its weight and bias: equal up to float rounding,
    one pass over the map less.
    """
    if bn.training or not inference_fast_paths():
        return bn(conv(x))
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return F.conv2d(x, conv.weight * scale.view(-1, 1, 1, 1), bias, conv.stride, conv.padding,
                    conv.dilation, conv.groups)


def gelu(x, approximate='none'):
    """``F.gelu(x, approximate)``; in inference written into x, which must be a temporary."""
    if inference_fast_paths():
        return torch.ops.aten.gelu_(x, approximate=approximate)
    return F.gelu(x, approximate=approximate)


def residual(x, y):
    """``x + y``; in inference written into y, which must be a temporary."""
    return y.add_(x) if inference_fast_paths() else x + y


class PatchEmbed(nn.Module):
    """Stem: two stride-2 3x3 conv-BN-ReLU layers.

    (B, in_chans, H, W) -> (B, dim, ceil(H/4), ceil(W/4)).
    """

    def __init__(self, in_chans, in_dim, dim):
        super().__init__()
        self.conv_down = nn.Sequential(
            nn.Conv2d(in_chans, in_dim, 3, 2, 1, bias=False),
            nn.BatchNorm2d(in_dim, eps=1e-4),
            nn.ReLU(),
            nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False),
            nn.BatchNorm2d(dim, eps=1e-4),
            nn.ReLU(),
        )

    def forward(self, x):
        # (the ReLU modules only hold the published indices of the conv and BN parameters)
        conv1, bn1, _, conv2, bn2, _ = self.conv_down
        inplace = inference_fast_paths()
        x = F.relu(conv_bn(conv1, bn1, x), inplace=inplace)
        return F.relu(conv_bn(conv2, bn2, x), inplace=inplace)


class Downsample(nn.Module):
    """Stride-2 3x3 conv doubling the channels: (B, C, H, W) -> (B, 2C, ceil(H/2), ceil(W/2))."""

    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Sequential(nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False))

    def forward(self, x):
        return self.reduction(x)


class ConvBlock(nn.Module):
    """Residual block of stages 0 and 1: (B, C, H, W) -> (B, C, H, W).

    x + drop_path(gamma * BN(conv(GELU(BN(conv(x)))))), GELU with the tanh approximation.

    Args:
        dim (int): Channels C.
        drop_path (float): Stochastic depth rate.
        layer_scale (float, optional): Initial value of the per-channel scale ``gamma``; None for
            no scale (as in all published models).
    """

    def __init__(self, dim, drop_path=0., layer_scale=None):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        if layer_scale is None:
            self.register_parameter('gamma', None)
        else:
            self.gamma = nn.Parameter(layer_scale * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        y = gelu(conv_bn(self.conv1, self.norm1, x), approximate='tanh')
        y = conv_bn(self.conv2, self.norm2, y)
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return residual(x, self.drop_path(y))


class Mlp(nn.Module):
    """fc1, GELU, fc2: (..., C) -> (..., C) through a hidden width H (timm's Mlp, less its
    unused dropout and norm; the same parameter names)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm hybrid block of stages 2 and 3 on token sequences: (N, L, C) -> (N, L, C).

    x = x + drop_path(gamma_1 * mixer(norm1(x))); x = x + drop_path(gamma_2 * mlp(norm2(x))).

    Args:
        dim (int): Channels C.
        num_heads (int): Attention heads (used when ``attention`` is True).
        attention (bool): Self-attention mixer if True, else the Mamba mixer.
        mlp_ratio (float): Hidden width of the MLP relative to C.
        drop_path (float): Stochastic depth rate.
        layer_scale (float, optional): Initial value of ``gamma_1`` and ``gamma_2``; None for no
            layer scale (no parameters).
    """

    def __init__(self, dim, num_heads, attention, mlp_ratio=4., drop_path=0., layer_scale=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = Attention(dim, num_heads) if attention else MambaVisionMixer(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if layer_scale is None:
            self.register_parameter('gamma_1', None)
            self.register_parameter('gamma_2', None)
        else:
            self.gamma_1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma_2 = nn.Parameter(layer_scale * torch.ones(dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, keep=None):
        """(N, L, C) -> (N, L, C); with ``keep`` = (wh, ww, qh, qw) only the outputs of the
        top-left qh x qw tokens of each wh x ww window: (N, qh * qw, C). The mixer still reads all
        L tokens, so these are exactly the full block's outputs for those tokens."""
        if keep is None:
            y = self.mixer(self.norm1(x))
        else:
            y = self.mixer(self.norm1(x), keep)
            x = crop_tokens(x, keep)
        if self.gamma_1 is not None:
            y = y * self.gamma_1
        x = residual(x, self.drop_path(y))
        y = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            y = y * self.gamma_2
        return residual(x, self.drop_path(y))


class MambaVisionStage(nn.Module):
    """One resolution level: its blocks, then the downsample to the next level (if any).

    Conv stages (``window_size`` None) run their blocks on the map. Hybrid stages zero-pad the map
    on the right and bottom to multiples of the window, run all blocks on each window's token
    sequence, put the windows back and crop. The padding is not masked, so outputs depend on the
    window size. With ``fit_window`` the window shrinks to the map where the map is smaller
    (window min(ws, H) x min(ws, W)), so a small map is not padded at all.

    Args:
        dim (int): Channels C.
        blocks (list[nn.Module]): :class:`ConvBlock` s on maps or :class:`Block` s on tokens.
        window_size (int, optional): Window side ws for hybrid stages; None for conv stages.
        downsample (bool): Whether to end with a :class:`Downsample`.
        fit_window (bool): Shrink the window to maps smaller than it.
        with_cp (bool): Checkpoint each block while training to save memory.
    """

    def __init__(self, dim, blocks, window_size=None, downsample=True, fit_window=False,
                 with_cp=False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = Downsample(dim) if downsample else None
        self.window_size = window_size
        self.fit_window = fit_window
        self.with_cp = with_cp

    def window_shape(self, h, w):
        """Window (height, width) used on an h x w map."""
        if self.fit_window:
            return min(self.window_size, h), min(self.window_size, w)
        return self.window_size, self.window_size

    def forward(self, x):
        """(B, C, H, W) -> stage output (B, C, H, W) and the next level's input
        (B, 2C, ceil(H/2), ceil(W/2)), or None for the last stage."""
        out = self._forward_blocks(x) if self.window_size is None else self._forward_windows(x)
        return out, (self.downsample(out) if self.downsample is not None else None)

    def _forward_windows(self, x):
        h, w = x.shape[-2:]
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        wh, ww = self.window_shape(h, w)
        hp, wp = h + (-h % wh), w + (-w % ww)
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h))
        # The crop below drops the padded tokens' outputs of the last block, so that block need
        # not compute them (its mixer still reads every token: exact). Where the map is one window
        # high (wide), each window's real tokens are its top h (left w) rows (columns); with
        # several windows along an axis nothing is cut along it.
        qh, qw = (wh, ww) if not fast_paths_enabled() else (h if hp == wh else wh,
                                                             w if wp == ww else ww)
        keep = None if (qh, qw) == (wh, ww) else (wh, ww, qh, qw)
        tokens = self._forward_blocks(window_partition(x, wh, ww), keep)
        x = window_reverse(tokens, qh, qw, hp // wh * qh, wp // ww * qw, channels_last)
        return x[:, :, :h, :w] if x.shape[-2:] != (h, w) else x

    def _forward_blocks(self, x, keep=None):
        """Run the blocks; ``keep`` (hybrid stages, see :meth:`Block.forward`) goes to the last."""
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            args = (x, ) if keep is None or i < last else (x, keep)
            x = cp.checkpoint(blk, *args, use_reentrant=False) if use_cp else blk(*args)
        return x


class MambaVision(BaseModule):
    """MambaVision backbone returning normalised feature maps of stages ``out_indices``.

    Stage i gives (B, C_i, ceil(H / 2**(i+2)), ceil(W / 2**(i+2))), C_i = dim * 2**i, taken before
    the stage's downsample and normalised by ``outnorm{i}`` (LayerNorm over channels); outputs are
    contiguous in the default memory format.

    Exact shortcuts, on unless inside ``mmmv.models.fast_paths(False)`` and never seen by tracers
    (FLOP counters, export): the last block of a padded hybrid stage computes only the tokens that
    survive the crop; on a CPU the Mamba mixer's depthwise convs are shifted multiply-adds;
    inference (no autograd) folds eval-mode BatchNorm into the convs, applies activations and
    residual additions in place, and on a CPU runs the conv stages channels-last. Outputs agree
    with the published computation to float32 rounding.

    Args:
        arch (str | dict): One of ``ARCH_SETTINGS`` ('tiny', 'tiny2', 'small', 'base', 'large',
            'large2') or a dict with keys dim, in_dim, depths, num_heads and optionally
            layer_scale. Defaults to 'tiny'.
        dim, in_dim, depths, num_heads: Override the arch's values (NVIDIA's configs pass these
            instead of an arch). dim: C_0; in_dim: width of the stem's first conv; depths and
            num_heads: four ints each (heads are used in stages 2 and 3).
        window_size (Sequence[int]): Window side per stage, four positive ints; stages 0 and 1
            ignore theirs. Defaults to (8, 8, 14, 7), the classification setting; NVIDIA's
            detection models use (8, 8, 112, 56).
        mlp_ratio (float): MLP hidden width relative to C. Defaults to 4.
        drop_path_rate (float): Stochastic depth rate, rising linearly from 0 over all blocks to
            this value at the last. Defaults to 0.2 (what the released models were trained with).
        layer_scale (float, optional): Initial layer scale of the hybrid blocks; None for none.
            Defaults to the arch's value.
        layer_scale_conv (float, optional): Initial layer scale of the conv blocks. Defaults to
            None (as in all released models).
        norm_layer (str): Output norm; only 'ln2d' (LayerNorm over channels) exists. Accepted for
            NVIDIA's configs.
        out_indices (Sequence[int]): Stages whose outputs are returned, each in 0..3.
        frozen_stages (int): -1 freezes nothing; k >= 0 freezes the stem and stages 0..k-1 (with
            their downsample and outnorm), like mmdet's Swin and ResNet; 4 freezes everything.
            Frozen modules get ``requires_grad=False`` and stay in eval mode.
        norm_eval (bool): Keep all BatchNorm layers in eval mode while training.
        with_cp (bool): Checkpoint each block while training (less memory, same results).
        fit_window (bool): Shrink a hybrid stage's window to the feature map where the map is
            smaller than the window, so small maps are not padded. Changes the numerics of the
            published models (their windows see zero padding); meant for training your own.
            Defaults to False.
        pretrained (str, optional): Checkpoint path; same as
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        init_cfg (dict | list[dict], optional): mmengine initialisation config.
    """

    arch_settings = ARCH_SETTINGS

    def __init__(self,
                 arch='tiny',
                 dim=None,
                 in_dim=None,
                 depths=None,
                 num_heads=None,
                 window_size=(8, 8, 14, 7),
                 mlp_ratio=4.,
                 drop_path_rate=0.2,
                 layer_scale=_FROM_ARCH,
                 layer_scale_conv=None,
                 norm_layer='ln2d',
                 out_indices=(0, 1, 2, 3),
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 fit_window=False,
                 pretrained=None,
                 init_cfg=None):
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('give either pretrained or init_cfg, not both')
            if not isinstance(pretrained, str):
                raise TypeError(f'pretrained must be a checkpoint path, got {type(pretrained)}')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)

        cfg = _resolve_arch(arch)
        overrides = dict(dim=dim, in_dim=in_dim, depths=depths, num_heads=num_heads)
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        if layer_scale is not _FROM_ARCH:
            cfg['layer_scale'] = layer_scale
        depths, num_heads = _four_ints('depths', cfg['depths'], 1), _four_ints(
            'num_heads', cfg['num_heads'], 1)
        window_size = _four_ints('window_size', window_size, 1)
        if not mlp_ratio > 0:
            raise ValueError(f'mlp_ratio must be > 0, got {mlp_ratio}')
        if norm_layer != 'ln2d':
            raise ValueError(f"norm_layer must be 'ln2d', got {norm_layer!r}")
        out_indices = tuple(out_indices)
        for i in out_indices:
            if not isinstance(i, int) or not 0 <= i < NUM_STAGES:
                raise ValueError(f'out_indices entries must be in 0..{NUM_STAGES - 1}, got {i}')
        if frozen_stages not in range(-1, NUM_STAGES + 1):
            raise ValueError(f'frozen_stages must be in -1..{NUM_STAGES}, got {frozen_stages}')

        self.num_features = tuple(cfg['dim'] * 2**i for i in range(NUM_STAGES))
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.patch_embed = PatchEmbed(3, cfg['in_dim'], cfg['dim'])
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.levels = nn.ModuleList()
        for i, (c, depth) in enumerate(zip(self.num_features, depths)):
            rates = dpr[sum(depths[:i]):sum(depths[:i + 1])]
            conv = i < 2
            if conv:
                blocks = [ConvBlock(c, r, layer_scale_conv) for r in rates]
            else:
                blocks = [
                    Block(c, num_heads[i], j >= math.ceil(depth / 2), mlp_ratio, r,
                          cfg['layer_scale']) for j, r in enumerate(rates)
                ]
            self.levels.append(
                MambaVisionStage(c, blocks, None if conv else window_size[i],
                                 downsample=i < NUM_STAGES - 1, fit_window=fit_window,
                                 with_cp=with_cp))
        for i in out_indices:
            self.add_module(f'outnorm{i}', LayerNorm2d(self.num_features[i], eps=1e-5))
        self._freeze_stages()

    def forward(self, x):
        """(B, 3, H, W), H and W >= 32 -> tuple of (B, C_i, ceil(H/2^(i+2)), ceil(W/2^(i+2)))
        for i in out_indices."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'expected input of shape (B, 3, H, W), got {tuple(x.shape)}')
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f'input is {x.shape[-2]}x{x.shape[-1]} pixels; MambaVision needs '
                             f'at least {MIN_INPUT_SIZE} in height and width')
        if x.device.type == 'cpu' and not torch.is_grad_enabled() and fast_paths_enabled():
            # Inference on a CPU: oneDNN's convolutions run faster on channels-last maps (stage 0
            # by ~25%), and windows are cut from them without strided reads. Not when gradients
            # are computed: oneDNN's channels-last convolution backward is ~2x slower on AVX2.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(x)
        outs = []
        for i, level in enumerate(self.levels):
            out, x = level(x)
            if i in self.out_indices:
                # Contiguous (B, C, H, W), as necks and heads assume: LayerNorm2d returns a
                # channels-last view, and mmcv's RoIAlign reads such a map as if it were
                # contiguous (silently wrong features: the RoI heads then cannot learn).
                outs.append(getattr(self, f'outnorm{i}')(out).contiguous())
        return tuple(outs)

    def train(self, mode=True):
        """Set train/eval mode, keeping frozen stages (and BN layers with ``norm_eval``) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed]
        for i in range(self.frozen_stages):
            frozen.append(self.levels[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'outnorm{i}'))
        for m in frozen:
            m.eval()
            for param in m.parameters():
                param.requires_grad = False

    def init_weights(self):
        """Initialise like timm (Linear ~ trunc_normal(0.02) with zero bias, norms 1 / 0, Mamba's
        SSM initialisation), then load ``init_cfg``'s checkpoint if it is 'Pretrained'. Other
        init_cfg types are left to mmengine."""
        pretrained = isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'
        if self.init_cfg is not None and not pretrained:
            super().init_weights()
            return
        self.apply(_init_module)
        for m in self.modules():
            if isinstance(m, MambaVisionMixer):
                m.init_weights()
        if pretrained:
            self.load_pretrained(self.init_cfg['checkpoint'])
        self._is_init = True

    def load_pretrained(self, path):
        """Load a checkpoint file in any format ``mmmv.checkpoint`` reads.

        Missing and unexpected keys are logged by name; a key whose shape differs raises
        ValueError (the checkpoint is for another arch).
        """
        from mmmv.checkpoint import load_backbone_state_dict  # lazy: keeps models light
        state_dict = load_backbone_state_dict(path)
        own = self.state_dict()
        mismatched = [f'{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}'
                      for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
        if mismatched:
            raise ValueError(f'{path} does not fit this MambaVision (another arch?); shape '
                             'mismatch in ' + '; '.join(mismatched))
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        print_log(f'loaded {path} into MambaVision', logger='current')
        if missing:
            print_log(f'missing keys in {path}: {", ".join(missing)}', logger='current',
                      level=logging.WARNING)
        if unexpected:
            print_log(f'unexpected keys in {path}: {", ".join(unexpected)}', logger='current',
                      level=logging.WARNING)


def _resolve_arch(arch):
    """A copy of the preset named ``arch``, or the checked dict ``arch``."""
    if isinstance(arch, str):
        if arch not in ARCH_SETTINGS:
            raise ValueError(f'unknown arch {arch!r}; valid names: {", ".join(ARCH_SETTINGS)}')
        return dict(ARCH_SETTINGS[arch])
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a name or a dict, got {type(arch)}')
    required = {'dim', 'in_dim', 'depths', 'num_heads'}
    missing = sorted(required - arch.keys())
    unknown = sorted(arch.keys() - required - {'layer_scale'})
    if missing or unknown:
        raise ValueError(f'arch dict: missing keys {missing}, unknown keys {unknown}')
    return dict(dict(layer_scale=None), **arch)


def _four_ints(name, value, minimum):
    """``value`` as a tuple of NUM_STAGES ints >= minimum, else ValueError naming ``name``."""
    value = tuple(value) if isinstance(value, (list, tuple)) else (value, )
    if len(value) != NUM_STAGES or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value):
        raise ValueError(f'{name} must be {NUM_STAGES} ints >= {minimum}, got {value}')
    return value


def _init_module(m):
    """timm's initialisation of MambaVision's Linear and norm layers."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, _BatchNorm)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
