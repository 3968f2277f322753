"""Token mixers of MambaVision's hybrid stages.

Both mixers map a batch of token sequences (N, L, C) to (N, L, C); in the backbone N counts windows
and L = window height * window width. Each has a ``fast_paths`` attribute (True by default): its
exact CPU shortcut, off for the published computation op for op (see
:meth:`mmmv.models.MambaVision.set_fast_paths`).
"""
import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmmv.ops import attention, selective_scan


class WindowCrop(NamedTuple):
    """The top-left keep_h x keep_w tokens of each window_h x window_w window.

    What the last block of a padded hybrid stage needs to compute: the tokens that survive the
    stage's crop of the padding.
    """
    window_h: int
    window_w: int
    keep_h: int
    keep_w: int

    def apply(self, x):
        """(N, window_h * window_w, C), tokens row-major -> (N, keep_h * keep_w, C)."""
        n, _, c = x.shape
        x = x.reshape(n, self.window_h, self.window_w, c)[:, :self.keep_h, :self.keep_w]
        return x.reshape(n, self.keep_h * self.keep_w, c)


class MambaVisionMixer(nn.Module):
    """MambaVision's Mamba mixer: a non-causal selective scan on one half of the channels.

    ``in_proj`` splits the tokens into x and z (C/2 channels each). Both pass through a depthwise
    conv (kernel 3, symmetric padding) and SiLU; x then goes through the selective scan, z bypasses
    it (it is concatenated, not used as a gate), and ``out_proj`` mixes the two halves.

    The published models apply ``dt_proj`` with its bias and pass the same bias again to the scan,
    so delta = softplus(W_dt @ dt + 2 * b_dt). This module computes exactly that, adding
    2 * b_dt once inside the scan instead of adding b_dt twice.

    Args:
        dim (int): Channels C (even).
        d_state (int): SSM state size n. Defaults to 8.
        d_conv (int): Kernel size of the depthwise convs (odd). Defaults to 3.
        dt_rank (int, optional): Rank of the delta projection. Defaults to ceil(C / 16).
        dt_min (float): Lower bound of the initial step size. Defaults to 1e-3.
        dt_max (float): Upper bound of the initial step size. Defaults to 0.1.
        dt_init_floor (float): Smallest initial step size. Defaults to 1e-4.
        fast_paths (bool): On a CPU, run the depthwise convs as shifted multiply-adds
            (:func:`shifted_depthwise_conv1d`, equal up to float rounding) instead of
            ``F.conv1d``. Defaults to True.
    """

    def __init__(self, dim, d_state=8, d_conv=3, dt_rank=None, dt_min=1e-3, dt_max=0.1,
                 dt_init_floor=1e-4, fast_paths=True):
        super().__init__()
        if dim % 2:
            raise ValueError(f'MambaVisionMixer needs an even number of channels, got {dim}')
        inner = dim // 2
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16) if dt_rank is None else dt_rank
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.fast_paths = fast_paths

        self.in_proj = nn.Linear(dim, dim, bias=False)
        self.conv1d_x = nn.Conv1d(inner, inner, d_conv, padding=d_conv // 2, groups=inner,
                                  bias=False)
        self.conv1d_z = nn.Conv1d(inner, inner, d_conv, padding=d_conv // 2, groups=inner,
                                  bias=False)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(inner, d_state))
        self.D = nn.Parameter(torch.empty(inner))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """Mamba's initialisation of the SSM parameters (the plain Linears are left alone).

        dt_proj.weight ~ U(-dt_rank^-0.5, dt_rank^-0.5); dt_proj.bias = softplus^-1(dt) with dt
        log-uniform in [dt_min, dt_max] (at least dt_init_floor); A_log[d] = log(1..n); D = 1.
        """
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(self.dt_proj.out_features) * (
            math.log(self.dt_max) - math.log(self.dt_min)) + math.log(self.dt_min)
        dt = log_dt.exp().clamp(min=self.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        states = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_log.copy_(states.log().expand_as(self.A_log))
        self.D.fill_(1.0)

    def forward(self, x, crop=None):
        """(N, L, C) -> (N, L, C); with a :class:`WindowCrop` only the kept tokens:
        (N, keep_h * keep_w, C).

        With ``crop`` the L tokens are a window in row-major order and only the outputs of its
        kept tokens are wanted. The whole sequence is still scanned (the scan is causal, but the
        convs look one token ahead); only out_proj is spared for the dropped tokens.
        """
        # Channels-first from here on, in one copy: the depthwise convs and the scan run along
        # contiguous rows of L.
        x, z = self.in_proj(x).transpose(1, 2).contiguous().chunk(2, dim=1)  # (N, C/2, L) each
        x = F.silu(self._depthwise_conv(x, self.conv1d_x))
        z = F.silu(self._depthwise_conv(z, self.conv1d_z))
        # x_proj and dt_proj applied channels-first (weight @ x): the same Linears, no transposes.
        x_dbl = torch.matmul(self.x_proj.weight, x)  # (N, dt_rank + 2n, L)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=1)
        delta = torch.matmul(self.dt_proj.weight, dt)  # (N, C/2, L), bias added in the scan
        y = selective_scan(
            x, delta, -torch.exp(self.A_log.float()), B, C, self.D.float(),
            delta_bias=2 * self.dt_proj.bias.float(), delta_softplus=True)
        y = torch.cat([y, z], dim=1).transpose(1, 2)  # (N, L, C), a view of channels-first data
        if crop is not None:
            y = crop.apply(y)
        return self.out_proj(y)  # the GEMM takes the transposed view as it is, without a copy

    def _depthwise_conv(self, x, conv):
        if self.fast_paths and x.device.type == 'cpu':
            return shifted_depthwise_conv1d(x, conv.weight)
        return conv(x)


class Attention(nn.Module):
    """Multi-head self-attention over each token sequence (no masking, no position bias).

    Args:
        dim (int): Channels C.
        num_heads (int): Number of heads; must divide C.
        fast_paths (bool): Let :func:`mmmv.ops.attention` choose its backend (in float32 CPU
            inference our C++ kernel); False keeps PyTorch's ``scaled_dot_product_attention``.
            Defaults to True.
    """

    def __init__(self, dim, num_heads, fast_paths=True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'num_heads={num_heads} does not divide the {dim} channels')
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.fast_paths = fast_paths
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, crop=None):
        """(N, L, C) -> (N, L, C); with a :class:`WindowCrop` only the kept tokens are queries:
        (N, keep_h * keep_w, C). Keys and values still come from all L tokens, so the kept tokens'
        outputs are exactly those of the full computation."""
        n, length, c = x.shape
        head_dim = c // self.num_heads
        if crop is None:
            qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (N, heads, L, C / heads) each
        else:
            weight, bias = self.qkv.weight, self.qkv.bias
            kv = F.linear(x, weight[c:], None if bias is None else bias[c:])
            kv = kv.reshape(n, length, 2, self.num_heads, head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
            x = crop.apply(x)
            length = x.shape[1]
            q = F.linear(x, weight[:c], None if bias is None else bias[:c])
            q = q.reshape(n, length, self.num_heads, head_dim).transpose(1, 2)
        x = attention(q, k, v, self.scale, backend=None if self.fast_paths else 'sdpa')
        return self.proj(x)


def shifted_depthwise_conv1d(x, weight):
    """Depthwise 1-D convolution with symmetric zero padding ("same"), no bias, as K shifted
    multiply-adds.

    x: (N, D, L), weight: (D, 1, K) with K odd -> (N, D, L): ``F.conv1d(x, weight,
    padding=K // 2, groups=D)`` up to float rounding. On a CPU PyTorch's depthwise conv1d is many
    times slower and needs a contiguous input.
    """
    taps = weight.shape[-1]
    half = taps // 2
    w = weight[:, 0, :, None]  # (D, K, 1)
    y = x * w[:, half]
    length = x.shape[-1]
    for j in range(taps):
        shift = j - half  # y[t] += w[j] * x[t + shift]
        if shift == 0 or abs(shift) >= length:
            continue
        if shift < 0:
            y[..., -shift:].addcmul_(x[..., :shift], w[:, j])
        else:
            y[..., :-shift].addcmul_(x[..., shift:], w[:, j])
    return y
