"""C++ CPU selective scan core (the `mmmv.ops._scan_cpu` extension, built by setup.py)."""
import functools
import importlib

import torch


@functools.lru_cache(maxsize=None)
def _load():
    """(extension module, None) or (None, reason it cannot be imported)."""
    try:
        return importlib.import_module('mmmv.ops._scan_cpu'), None
    except ImportError as err:
        return None, (f'the C++ extension mmmv.ops._scan_cpu is not built ({err}); build it '
                      'with `pip install --no-build-isolation -e .` or '
                      '`python setup.py build_ext --inplace`')


def unavailable_reason():
    """None when the extension is importable, else a sentence saying why it is not."""
    return _load()[1]


class CppScan(torch.autograd.Function):
    """y = scan(u, delta, A, B, C) by the C++ kernel, with its reverse-scan backward.

    Float32 CPU tensors: u, delta: (b, d, l); A: (d, n); B, C: (b, n, l). Returns y: (b, d, l).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        ctx.save_for_backward(u, delta, A, B, C)
        return _load()[0].forward(u, delta, A, B, C)

    @staticmethod
    def backward(ctx, grad_y):
        return tuple(_load()[0].backward(*ctx.saved_tensors, grad_y.contiguous()))
