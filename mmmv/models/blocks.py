"""Building blocks of the MambaVision backbone: stem, conv and hybrid blocks, stages.

Module and parameter names follow NVIDIA's releases (see :mod:`mmmv.models.mambavision`).

Without autograd (``torch.no_grad`` / ``torch.inference_mode``) the blocks apply activations and
residual additions in place on tensors they have just computed themselves (no new map is
allocated for them): ``inplace = not torch.is_grad_enabled()`` at each call site.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from timm.layers import DropPath

from .mixers import Attention, MambaVisionMixer, WindowCrop


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


def gelu(x, approximate='none', inplace=False):
    """``F.gelu(x, approximate)``; with ``inplace`` written into x (the caller's own temporary)."""
    if inplace:
        return torch.ops.aten.gelu_(x, approximate=approximate)
    return F.gelu(x, approximate=approximate)


class PatchEmbed(nn.Module):
    """Stem: two stride-2 3x3 conv-BN-ReLU layers.

    (B, in_chans, H, W) -> (B, dim, ceil(H/4), ceil(W/4)).
    """

    def __init__(self, in_chans, in_dim, dim):
        super().__init__()
        self.conv_down = nn.Sequential(
            nn.Conv2d(in_chans, in_dim, 3, 2, 1, bias=False),
            nn.BatchNorm2d(in_dim, eps=1e-4),
            nn.ReLU(inplace=True),  # on the BN's (or, fused, the conv's) fresh output
            nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False),
            nn.BatchNorm2d(dim, eps=1e-4),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.conv_down(x)


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
        inplace = not torch.is_grad_enabled()  # y is this block's own: overwrite it
        y = gelu(self.norm1(self.conv1(x)), approximate='tanh', inplace=inplace)
        y = self.norm2(self.conv2(y))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        y = self.drop_path(y)
        return y.add_(x) if inplace else x + y


class Mlp(nn.Module):
    """fc1, GELU, fc2: (..., C) -> (..., C) through a hidden width H (timm's Mlp, less its
    unused dropout and norm; the same parameter names)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(gelu(self.fc1(x), inplace=not torch.is_grad_enabled()))


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

    def forward(self, x, crop=None):
        """(N, L, C) -> (N, L, C); with a :class:`~mmmv.models.mixers.WindowCrop` only the
        outputs of the kept tokens of each window: (N, keep_h * keep_w, C). The mixer still reads
        all L tokens, so these are exactly the full block's outputs for those tokens."""
        inplace = not torch.is_grad_enabled()  # the branch outputs y are ours: add into them
        y = self.mixer(self.norm1(x), crop)
        if crop is not None:
            x = crop.apply(x)
        if self.gamma_1 is not None:
            y = y * self.gamma_1
        y = self.drop_path(y)
        x = y.add_(x) if inplace else x + y
        y = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            y = y * self.gamma_2
        y = self.drop_path(y)
        return y.add_(x) if inplace else x + y


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
        fast_paths (bool): In a padded hybrid stage, let the last block compute only the tokens
            that survive the crop (exact: its mixer still reads every token). Defaults to True.
    """

    def __init__(self, dim, blocks, window_size=None, downsample=True, fit_window=False,
                 with_cp=False, fast_paths=True):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = Downsample(dim) if downsample else None
        self.window_size = window_size
        self.fit_window = fit_window
        self.with_cp = with_cp
        self.fast_paths = fast_paths

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

    def last_block_crop(self, h, w):
        """The :class:`~mmmv.models.mixers.WindowCrop` the last block runs with on an h x w map:
        None without fast paths or where nothing is cut.

        The stage's crop drops the padded tokens' outputs of the last block, so that block need
        not compute them. Where the map is one window high (wide), each window's real tokens are
        its top h (left w) rows (columns); with several windows along an axis nothing is cut
        along it.
        """
        wh, ww = self.window_shape(h, w)
        keep_h, keep_w = (h if h <= wh else wh), (w if w <= ww else ww)
        if not self.fast_paths or (keep_h, keep_w) == (wh, ww):
            return None
        return WindowCrop(wh, ww, keep_h, keep_w)

    def _forward_windows(self, x):
        h, w = x.shape[-2:]
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        wh, ww = self.window_shape(h, w)
        hp, wp = h + (-h % wh), w + (-w % ww)
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h))
        crop = self.last_block_crop(h, w)
        tokens = self._forward_blocks(window_partition(x, wh, ww), crop)
        qh, qw = (wh, ww) if crop is None else (crop.keep_h, crop.keep_w)
        x = window_reverse(tokens, qh, qw, hp // wh * qh, wp // ww * qw, channels_last)
        return x[:, :, :h, :w] if x.shape[-2:] != (h, w) else x

    def _forward_blocks(self, x, crop=None):
        """Run the blocks; ``crop`` (hybrid stages, see :meth:`Block.forward`) goes to the last."""
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            args = (x, ) if crop is None or i < last else (x, crop)
            x = cp.checkpoint(blk, *args, use_reentrant=False) if use_cp else blk(*args)
        return x
