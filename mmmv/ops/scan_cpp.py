"""C++ CPU selective scan core (the `mmmv.ops._scan_cpu` extension, built by setup.py)."""
import torch

from .backends import load_extension


def unavailable_reason():
    """None when the extension is importable, else a sentence saying why it is not."""
    return load_extension('_scan_cpu')[1]


class CppScan(torch.autograd.Function):
    """y = scan(u, delta, A, B, C) by the C++ kernel, with its reverse-scan backward.

    Float32 CPU tensors: u, delta: (b, d, l); A: (d, n); B, C: (b, n, l). Returns y: (b, d, l).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        ctx.save_for_backward(u, delta, A, B, C)
        return load_extension('_scan_cpu')[0].forward(u, delta, A, B, C)

    @staticmethod
    def backward(ctx, grad_y):
        return tuple(load_extension('_scan_cpu')[0].backward(*ctx.saved_tensors,
                                                             grad_y.contiguous()))
