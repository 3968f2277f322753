"""Pure-PyTorch selective scan core: a blocked two-level scan that runs on any device.

The core computes ``y_t = sum_n C_t[n] h_t[n]``, ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``,
for an already prepared ``delta`` (the caller applies bias, softplus and the ``D`` skip term).
No Python loop runs once per token: the sequence is cut into blocks of at most ``block_length``
tokens (the state is carried from block to block), and inside a block :func:`linear_scan` needs
about ``2 * sqrt(block)`` tensor operations. Nothing synchronises with the host, so it also suits
CUDA. Internally tensors are time-major ``(l, b, n, d)``, so that every broadcast runs along ``d``.
Reductions are products and sums, not matmuls, so TF32 settings cannot lower the precision.

Memory bound: one ``(block, b, n, d)`` float32 tensor holds at most ``BLOCK_ELEMENTS`` elements
(16 MiB at the default 2**22). The forward keeps about 6 such tensors alive at once and the
backward about 10, i.e. ~100 MiB and ~160 MiB of working memory whatever ``l`` is. On top come
``O(b d l)`` tensors (time-major copies, outputs, gradients: about 8 of size ``b * d * l`` in the
backward) and the saved block-start states (``ceil(l / block) * b * n * d`` elements).

While exported (:func:`exporting`, e.g. by ``torch.onnx.export(dynamo=True)``) the
sequence is one block (the block length would depend on ``b``, the number of windows) and the two
recurrences of :func:`linear_scan` are ``torch.scan`` loops, which become ONNX ``Scan`` nodes: the
same products and sums in the same order, in a graph of a few nodes instead of a few per step.
"""
import math

import torch

BLOCK_ELEMENTS = 1 << 22


def block_length(b, d, n, l):
    """Tokens per block: a (block, b, n, d) tensor stays within BLOCK_ELEMENTS (at least 1)."""
    return max(1, min(l, BLOCK_ELEMENTS // max(1, b * d * n)))


def exporting():
    """Whether torch.export is tracing the call (False on a PyTorch without that query)."""
    is_exporting = getattr(torch.compiler, 'is_exporting', None)
    return is_exporting is not None and is_exporting()


def _torch_scan(combine_fn, init, xs, dim=0):
    """``torch.scan`` (a prototype of PyTorch >= 2.6, imported only while exporting): the
    outputs of ``combine_fn`` (carry, x) -> (carry, y) stacked along ``dim``."""
    from torch._higher_order_ops.scan import scan
    return scan(combine_fn, init, xs, dim=dim)[1]


def _blocks(b, d, n, l):
    """(start, end) token ranges of the blocks of a length-l sequence (one while exporting)."""
    size = l if exporting() else block_length(b, d, n, l)
    return [(s, min(s + size, l)) for s in range(0, l, size)]


def chunk_steps(length):
    """Steps per chunk of the two-level scan of `length` >= 1 steps: ceil(sqrt(length))."""
    return math.isqrt(length - 1) + 1


def _scan_chunks(a, x):
    """Scan every chunk from a zero state, all chunks at once, with the running products of a.

    a, x: (K, T, *S). Returns local states and products of a since the chunk start, (K, T, *S) each.
    """
    if exporting():
        init = (torch.zeros_like(x[:, 0]), torch.ones_like(a[:, 0]))
        return _torch_scan(_chunk_step, init, (a, x), dim=1)
    local, decay = torch.empty_like(x), torch.empty_like(a)
    local[:, 0], decay[:, 0] = x[:, 0], a[:, 0]
    for i in range(1, x.shape[1]):
        torch.addcmul(x[:, i], a[:, i], local[:, i - 1], out=local[:, i])
        torch.mul(a[:, i], decay[:, i - 1], out=decay[:, i])
    return local, decay


def _carry_states(chunk_decay, chunk_end, h0):
    """State entering each chunk. chunk_decay, chunk_end: (K, *S) products of a and local end states
    of the chunks; h0: (*S) state before the first chunk. Returns (K, *S)."""
    if exporting() and chunk_end.shape[0] > 1:
        carried = _torch_scan(_carry_step, h0, (chunk_decay[:-1], chunk_end[:-1]))
        return torch.cat([h0.unsqueeze(0), carried])
    carry = torch.empty_like(chunk_end)
    carry[0] = h0
    for k in range(1, carry.shape[0]):
        torch.addcmul(chunk_end[k - 1], chunk_decay[k - 1], carry[k - 1], out=carry[k])
    return carry


def _chunk_step(carry, inputs):
    """One step of :func:`_scan_chunks` as a ``torch.scan`` body: (state, product of a), (a, x)
    -> the next pair, also as this step's outputs."""
    (h, decay), (a, x) = carry, inputs
    h, decay = torch.addcmul(x, a, h), a * decay
    return (h, decay), (h.clone(), decay.clone())


def _carry_step(h, inputs):
    """One step of :func:`_carry_states` as a ``torch.scan`` body."""
    decay, end = inputs
    h = torch.addcmul(end, decay, h)
    return h, h.clone()


def linear_scan(a, x, h0, steps):
    """Solve ``h_t = a_t * h_{t-1} + x_t`` along dim 0 with ``h_{-1} = h0``.

    a, x: (K * steps, *S); h0: (*S). Returns h: (K * steps, *S). The chunks of `steps` steps are
    scanned at once from zero (steps - 1 tensor ops), K - 1 ops carry the chunk-end states across
    chunks, and one op adds each carried state times the running product of a. Every product is
    formed as in the sequential loop, so the result is as exact.
    """
    shape = a.shape[1:]
    a = a.reshape(-1, steps, *shape)
    local, decay = _scan_chunks(a, x.reshape(a.shape))
    carry = _carry_states(decay[:, -1], local[:, -1], h0)
    return torch.addcmul(local, decay, carry.unsqueeze(1)).reshape(-1, *shape)


def _pad_time(x, length):
    """Zero-pad dim 0 of x up to `length`."""
    pad = length - x.shape[0]
    return x if pad == 0 else torch.cat([x, x.new_zeros((pad,) + x.shape[1:])])


def _scan_tokens(delta, drive, A, B, h0):
    """Decays and states of ``h_t = exp(delta_t A) h_{t-1} + drive_t B_t`` from ``h0``.

    delta, drive: (T, b, 1, d); A: (n, d); B: (T, b, n, 1); h0: (b, n, d). Returns decay, h:
    (T, b, n, d). Padding uses delta = drive = 0, i.e. decay 1 and no input.
    """
    length = delta.shape[0]
    steps = chunk_steps(length)
    padded = -(-length // steps) * steps
    delta, drive, B = (_pad_time(t, padded) for t in (delta, drive, B))
    decay = torch.exp(delta * A)
    h = linear_scan(decay, drive * B, h0, steps)
    return decay[:length], h[:length]


def _time_major(*tensors):
    """(b, c, l) tensors -> contiguous (l, b, c)."""
    return [t.permute(2, 0, 1).contiguous() for t in tensors]


def _inputs(u, delta, A, B, C):
    """Contiguous time-major operands: u, delta, drive = delta * u as (l, b, 1, d); A as (n, d);
    B, C as (l, b, n, 1)."""
    u_t, delta_t, B_t, C_t = _time_major(u, delta, B, C)
    u_t, delta_t = u_t.unsqueeze(2), delta_t.unsqueeze(2)
    return u_t, delta_t, delta_t * u_t, A.t().contiguous(), B_t.unsqueeze(3), C_t.unsqueeze(3)


class TorchScan(torch.autograd.Function):
    """y = scan(u, delta, A, B, C) with a reverse-scan backward; float32 tensors on one device.

    u, delta: (b, d, l); A: (d, n); B, C: (b, n, l). Returns y: (b, d, l).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        b, d, l = u.shape
        n = A.shape[1]
        _, delta_t, drive, A_t, B_t, C_t = _inputs(u, delta, A, B, C)
        y = u.new_empty(l, b, 1, d)
        starts = [u.new_zeros(b, n, d)]  # state before each block, then the final state
        for s, e in _blocks(b, d, n, l):
            _, states = _scan_tokens(delta_t[s:e], drive[s:e], A_t, B_t[s:e], starts[-1])
            y[s:e] = (states * C_t[s:e]).sum(2, keepdim=True)
            starts.append(states[-1].clone())  # a view would keep the block alive
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(starts)[:-1])
        return y.squeeze(2).permute(1, 2, 0).contiguous()

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, B, C, starts = ctx.saved_tensors
        b, d, l = u.shape
        n = A.shape[1]
        u_t, delta_t, drive, A_t, B_t, C_t = _inputs(u, delta, A, B, C)
        (gy_t,) = _time_major(grad_y)
        gy_t = gy_t.unsqueeze(2)
        grad_u, grad_delta = torch.empty_like(u_t), torch.empty_like(u_t)
        grad_B, grad_C = torch.empty_like(B_t), torch.empty_like(C_t)
        grad_A = torch.zeros_like(A_t)
        carry = u.new_zeros(b, n, d)
        for (s, e), h0 in reversed(list(zip(_blocks(b, d, n, l), starts))):
            decay, states = _scan_tokens(delta_t[s:e], drive[s:e], A_t, B_t[s:e], h0)
            adjoint = _adjoint_states(delta_t[s:e], A_t, gy_t[s:e], C_t[s:e], carry)
            carry = decay[0] * adjoint[0]
            h_prev = torch.cat([h0.unsqueeze(0), states[:-1]])
            grads = _block_grads(decay, states, h_prev, adjoint, delta_t[s:e], u_t[s:e], A_t,
                                 B_t[s:e], gy_t[s:e])
            grad_u[s:e], grad_delta[s:e], block_grad_A, grad_B[s:e], grad_C[s:e] = grads
            grad_A += block_grad_A
        return (_batch_major(grad_u), _batch_major(grad_delta), grad_A.t(), _batch_major(grad_B),
                _batch_major(grad_C))


def _batch_major(x):
    """(l, b, c, 1) or (l, b, 1, c) -> (b, c, l)."""
    return x.flatten(2).permute(1, 2, 0)


def _adjoint_states(delta, A, grad_y, C, carry):
    """g_t = dLoss/dh_t = exp(delta_{t+1} A) g_{t+1} + grad_y_t C_t within one block.

    delta, grad_y: (T, b, 1, d); A: (n, d); C: (T, b, n, 1); carry: (b, n, d) = decay_e g_e from
    the next block (zero after the last). Runs as a forward scan over reversed time, where the
    decay of step t is exp(delta_{t+1} A) and the first step takes the carry unchanged.
    Returns g: (T, b, n, d).
    """
    next_delta = torch.cat([delta[1:], torch.zeros_like(delta[:1])])
    _, g = _scan_tokens(next_delta.flip(0), grad_y.flip(0), A, C.flip(0), carry)
    return g.flip(0)


def _block_grads(decay, states, h_prev, adjoint, delta, u, A, B, grad_y):
    """Gradients of one block from its decays, states h_t, h_{t-1} and adjoint states g_t.

    decay, states, h_prev, adjoint: (T, b, n, d); delta, u, grad_y: (T, b, 1, d); A: (n, d);
    B: (T, b, n, 1). Returns grad_u, grad_delta (T, b, 1, d), grad_A (n, d), grad_B, grad_C
    (T, b, n, 1).
    """
    g_dot_b = (adjoint * B).sum(2, keepdim=True)
    through_decay = adjoint * decay * h_prev
    grad_u = g_dot_b * delta
    grad_delta = g_dot_b * u + (through_decay * A).sum(2, keepdim=True)
    grad_A = (through_decay * delta).sum((0, 1))
    grad_B = (adjoint * (delta * u)).sum(3, keepdim=True)
    grad_C = (states * grad_y).sum(3, keepdim=True)
    return grad_u, grad_delta, grad_A, grad_B, grad_C
