"""The PyTorch path a GPU runs without mamba-ssm, checked for its launch count and host syncs.

On CUDA every ATen op is a kernel launch and every ``aten::_local_scalar_dense`` (``.item()``,
``bool(tensor)``, a Python ``if`` on a tensor) waits for the device. Both are visible on a CPU by
recording the ops that reach the dispatcher, so these tests hold the CUDA path to its design
without a GPU: the 'torch' scan issues O(sqrt(L)) ops per call, not O(L), and the backbone's
forward and backward (the 'torch' scan, PyTorch's attention) never read a tensor value back.
"""
import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmmv.models import MambaVision
from mmmv.ops import selective_scan

# ops that copy a device value to the host (each a synchronisation on CUDA)
HOST_READS = ('_local_scalar_dense', 'item', 'is_nonzero', 'nonzero', 'equal', 'allclose')


class OpRecorder(TorchDispatchMode):
    """Counts the ATen ops run inside the block, by name."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def scan_ops(length):
    """Ops of one forward and backward of the 'torch' scan over `length` tokens."""
    torch.manual_seed(0)
    u, delta = torch.randn(2, 1, 8, length).unbind(0)
    delta = delta.requires_grad_()
    A = -torch.rand(8, 4) - 0.5
    B, C = torch.randn(2, 1, 4, length).unbind(0)
    with OpRecorder() as recorder:
        y = selective_scan(u, delta, A, B, C, delta_softplus=True, backend='torch')
        y.sum().backward()
    return recorder.ops


def test_torch_scan_launches_grow_with_sqrt_length():
    short, long = sum(scan_ops(256).values()), sum(scan_ops(4096).values())
    # 16x the tokens: a per-token loop would need ~16x the ops, the chunked scan ~4x (sqrt; 3.5x
    # measured, 816 -> 2,832 ops forward and backward)
    assert long <= 5 * short, (short, long)
    assert long < 4096, long  # fewer ops than tokens; a per-token loop needs several per token


def test_torch_scan_never_reads_back():
    ops = scan_ops(1000)
    assert not {name: ops[name] for name in HOST_READS if ops[name]}


def test_backbone_step_never_reads_back(monkeypatch):
    monkeypatch.setenv('MMMV_SCAN_BACKEND', 'torch')
    torch.manual_seed(0)
    model = MambaVision(dict(dim=16, in_dim=8, depths=(1, 1, 2, 2), num_heads=(1, 2, 2, 4)),
                        window_size=(8, 8, 7, 4))
    model.init_weights()
    x = torch.randn(1, 3, 96, 64)
    with OpRecorder() as recorder:
        outs = model(x)
        sum(o.mean() for o in outs).backward()
    assert recorder.ops['scaled_dot_product_attention'] + recorder.ops[
        '_scaled_dot_product_flash_attention_for_cpu'] > 0  # the attention blocks ran
    assert not {name: recorder.ops[name] for name in HOST_READS if recorder.ops[name]}
