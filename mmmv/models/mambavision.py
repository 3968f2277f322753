"""MambaVision backbone (Hatamizadeh & Kautz, CVPR 2025) for dense prediction.

Four stages at strides 4, 8, 16 and 32 with C_i = dim * 2**i channels. Stages 0 and 1 are
residual conv blocks; stages 2 and 3 cut the map into windows and run hybrid blocks on them: the
first half of each stage (rounded up) mixes tokens with a selective scan, the rest with
self-attention. Module and parameter names follow NVIDIA's releases, so their checkpoints load
with ``strict=True`` (a dense-prediction backbone has ``outnorm{i}`` instead of the classifier's
``norm`` and ``head``).
"""
import math

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from timm.layers import LayerNorm2d, trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .blocks import Block, ConvBlock, MambaVisionStage, PatchEmbed
from .mixers import Attention, MambaVisionMixer
from .options import NUM_STAGES, check_options

ARCH_SETTINGS = {  # the published variants (classifiers, mlp_ratio 4)
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
    # NVIDIA's mamba_vision_L3 (ImageNet-21K pre-trained, 739.6M parameters as a classifier)
    'large3': dict(dim=256, in_dim=64, depths=(3, 3, 20, 10), num_heads=(4, 8, 16, 32),
                   layer_scale=1e-5),
}
MIN_INPUT_SIZE = 32


class MambaVision(BaseModule):
    """MambaVision backbone returning normalised feature maps of stages ``out_indices``.

    Stage i gives (B, C_i, ceil(H / 2**(i+2)), ceil(W / 2**(i+2))), C_i = dim * 2**i, taken before
    the stage's downsample and normalised by ``outnorm{i}`` (LayerNorm over channels); outputs are
    contiguous in the default memory format. Only the stages up to ``max(out_indices)`` are built
    (with the parameter names of the full model), so every parameter takes part in the forward.

    Fast paths (``fast_paths=True``, the default) are exact shortcuts, equal to the published
    computation up to float32 rounding: the last block of a padded hybrid stage computes only the
    tokens that survive the crop; on a CPU the Mamba mixer's depthwise convs are shifted
    multiply-adds, attention may take our C++ kernel (:func:`mmmv.ops.attention`) and inference
    (no autograd) runs the conv stages channels-last. ``fast_paths=False`` (or
    :meth:`set_fast_paths`) runs the published computation op for op: what FLOP counters and
    exporters should trace and what benchmarks compare against. For inference,
    :meth:`fuse_conv_bn` folds the BatchNorm layers into the convs once.

    Args:
        arch (str | dict): One of ``ARCH_SETTINGS`` or a dict with keys dim (C_0), in_dim (width
            of the stem's first conv), depths and num_heads (four ints each; heads are used in
            stages 2 and 3) and optionally layer_scale (initial layer scale of the hybrid blocks,
            None for none), layer_scale_conv (the same for the conv blocks) and mlp_ratio (MLP
            hidden width relative to C; 4). Defaults to 'tiny'.
        out_indices (Sequence[int]): Stages whose outputs are returned, each in 0..3.
        window_size (Sequence[int]): Window side per stage, four positive ints; stages 0 and 1
            ignore theirs. Defaults to (8, 8, 14, 7), the classification setting; NVIDIA's
            detection models use (8, 8, 112, 56).
        fit_window (bool): Shrink a hybrid stage's window to the feature map where the map is
            smaller than the window, so small maps are not padded. Changes the numerics of the
            published models (their windows see zero padding); meant for training your own.
            Defaults to False.
        drop_path_rate (float): Stochastic depth rate, rising linearly from 0 over all blocks
            (of all four stages) to this value at the last. Defaults to 0.2 (what the released
            models were trained with).
        frozen_stages (int): -1 freezes nothing; k >= 0 freezes the stem and stages 0..k-1 (with
            their downsample and outnorm), like mmdet's Swin and ResNet; 4 freezes everything.
            Frozen modules get ``requires_grad=False`` and stay in eval mode.
        norm_eval (bool): Keep all BatchNorm layers in eval mode while training.
        with_cp (bool): Checkpoint each block while training (less memory, same results).
        fast_paths (bool): Take the exact shortcuts above. Defaults to True.
        init_cfg (dict | list[dict], optional): mmengine initialisation config;
            ``dict(type='Pretrained', checkpoint=PATH)`` loads a backbone checkpoint.
    """

    arch_settings = ARCH_SETTINGS

    def __init__(self,
                 arch='tiny',
                 out_indices=(0, 1, 2, 3),
                 window_size=(8, 8, 14, 7),
                 fit_window=False,
                 drop_path_rate=0.2,
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 fast_paths=True,
                 init_cfg=None):
        cfg, out_indices, window_size = check_options(
            arch, ARCH_SETTINGS, out_indices, window_size, drop_path_rate, frozen_stages,
            fit_window=fit_window, norm_eval=norm_eval, with_cp=with_cp, fast_paths=fast_paths)
        super().__init__(init_cfg=init_cfg)
        self.num_features = tuple(cfg['dim'] * 2**i for i in range(NUM_STAGES))
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        depths = cfg['depths']
        num_stages = max(out_indices) + 1
        self.patch_embed = PatchEmbed(3, cfg['in_dim'], cfg['dim'])
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.levels = nn.ModuleList()
        for i in range(num_stages):
            c, rates = self.num_features[i], dpr[sum(depths[:i]):sum(depths[:i + 1])]
            if i < 2:
                blocks = [ConvBlock(c, r, cfg['layer_scale_conv']) for r in rates]
            else:
                blocks = [
                    Block(c, cfg['num_heads'][i], j >= math.ceil(depths[i] / 2),
                          cfg['mlp_ratio'], r, cfg['layer_scale']) for j, r in enumerate(rates)
                ]
            self.levels.append(
                MambaVisionStage(c, blocks, None if i < 2 else window_size[i],
                                 downsample=i < num_stages - 1, fit_window=fit_window,
                                 with_cp=with_cp))
        for i in out_indices:
            self.add_module(f'outnorm{i}', LayerNorm2d(self.num_features[i], eps=1e-5))
        self.set_fast_paths(fast_paths)
        self._freeze_stages()

    def forward(self, x):
        """(B, 3, H, W), H and W >= 32 -> tuple of (B, C_i, ceil(H/2^(i+2)), ceil(W/2^(i+2)))
        for i in out_indices."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'expected input of shape (B, 3, H, W), got {tuple(x.shape)}')
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f'input is {x.shape[-2]}x{x.shape[-1]} pixels; MambaVision needs '
                             f'at least {MIN_INPUT_SIZE} in height and width')
        if self.fast_paths and x.device.type == 'cpu' and not torch.is_grad_enabled():
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

    def set_fast_paths(self, enabled):
        """Turn the exact shortcuts (class docstring) of the whole backbone on or off; returns
        self. Off, the model runs the published computation op for op."""
        for m in self.modules():
            if isinstance(m, (MambaVision, MambaVisionStage, MambaVisionMixer, Attention)):
                m.fast_paths = bool(enabled)
        return self

    @torch.no_grad()
    def fuse_conv_bn(self):
        """Fold every BatchNorm (the stem's two, two per conv block) into the conv before it,
        once, for inference; returns self. The same as mmcv's ``fuse_conv_bn`` on this model.

        Needs eval mode (the running statistics are folded). Outputs are unchanged up to float
        rounding; the BatchNorm layers become ``nn.Identity`` (their state-dict keys go and the
        stem convs gain a bias), so a fused model cannot be trained or saved as a checkpoint of
        the published layout.
        """
        if self.training:
            raise RuntimeError('fuse_conv_bn folds running statistics: call model.eval() first')
        stem = self.patch_embed.conv_down
        pairs = [(stem, '0', '1'), (stem, '3', '4')]
        for blk in self.modules():
            if isinstance(blk, ConvBlock):
                pairs += [(blk, 'conv1', 'norm1'), (blk, 'conv2', 'norm2')]
        for parent, conv, norm in pairs:
            if isinstance(getattr(parent, norm), _BatchNorm):
                setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv),
                                                        getattr(parent, norm)))
                setattr(parent, norm, nn.Identity())
        return self

    def unbuilt_prefixes(self):
        """State-dict key prefixes of a full four-stage model that this one leaves out: stages
        after ``max(out_indices)``, the last built stage's downsample and the outnorms of stages
        not in ``out_indices``. A checkpoint's keys under them are expected extras."""
        last = len(self.levels) - 1
        prefixes = [f'levels.{i}.' for i in range(last + 1, NUM_STAGES)]
        if last < NUM_STAGES - 1:
            prefixes.append(f'levels.{last}.downsample.')
        return tuple(prefixes + [f'outnorm{i}.' for i in range(NUM_STAGES)
                                 if i not in self.out_indices])

    def train(self, mode=True):
        """Set train/eval mode, keeping frozen stages (and BN layers with ``norm_eval``) in eval."""
        if mode and isinstance(self.patch_embed.conv_down[1], nn.Identity):
            raise RuntimeError('this MambaVision has its BatchNorm folded into the convs '
                               '(fuse_conv_bn): it is for inference only')
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
        for i in range(min(self.frozen_stages, len(self.levels))):
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

    def load_pretrained(self, checkpoint):
        """Load a checkpoint file or URL in any released layout (NVIDIA's ImageNet
        ``.pth.tar``, Hugging Face safetensors, an mmdet / mmseg checkpoint) through mmmv's one
        load path, :func:`mmmv.checkpoint.load_backbone_weights`.

        Missing and unexpected keys are logged by name; a tensor whose shape differs raises
        :class:`~mmmv.checkpoint.CheckpointMismatchError` (a ValueError: another arch).
        """
        from mmmv.checkpoint import load_backbone_weights  # lazy: keeps models light
        load_backbone_weights(self, checkpoint)


def _init_module(m):
    """timm's initialisation of MambaVision's Linear and norm layers."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, _BatchNorm)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold the BatchNorm layers of every MambaVision inside ``model`` (a detector, a segmentor
    or the backbone itself) into their convs, once: :meth:`MambaVision.fuse_conv_bn`. ``model``
    must be in eval mode; returns it."""
    for m in model.modules():
        if isinstance(m, MambaVision):
            m.fuse_conv_bn()
    return model
