"""Selective scan (S6 recurrence). PLACEHOLDER: sequential reference, replaced by the real ops."""
import torch
import torch.nn.functional as F


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend=None):
    """u, delta: (b, d, l); A: (d, n); B, C: (b, n, l); D, delta_bias: (d,). Returns (b, d, l)."""
    dtype = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.float()[:, None] * u
    return y.to(dtype)
