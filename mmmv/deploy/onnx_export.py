"""Export a detector's features or a segmentor's logits to ONNX with PyTorch's dynamo exporter.

The exported graph is the published computation in standard ONNX ops: MambaVision's fast paths
off, the selective scan as the pure-PyTorch scan (whose recurrences become ONNX ``Scan`` loops
while exporting, see :mod:`mmmv.ops.scan_torch`) and attention as PyTorch's
``scaled_dot_product_attention``. The C++ CPU kernels are opaque to exporters, so they are never
selected while exporting.
"""
import contextlib
import os
import time

import torch

from mmmv.checkpoint.atomic import atomic_write
from mmmv.errors import UserError
from mmmv.models.mambavision import MambaVision
from mmmv.ops.attention import ENV_VAR as ATTENTION_ENV
from mmmv.ops.selective_scan import ENV_VAR as SCAN_ENV

OPSET = 18
INPUT_NAME = 'inputs'
# what the pure-PyTorch ops are called by the backend variables (see mmmv.ops)
EXPORT_BACKENDS = {SCAN_ENV: 'torch', ATTENTION_ENV: 'sdpa'}


@contextlib.contextmanager
def environment(**variables):
    """Set environment variables inside the block, restoring the previous values after it."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def set_fast_paths(module, enabled):
    """Turn the fast paths of every MambaVision inside ``module`` on or off."""
    for m in module.modules():
        if isinstance(m, MambaVision):
            m.set_fast_paths(enabled)


def example_input(shape, batch=1, seed=0):
    """A random normalised batch (batch, 3, H, W), shape = (H, W), drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *shape, generator=generator)


def output_names(task, outputs):
    """Names of the graph outputs: 'logits' for a segmentor, 'feat0', 'feat1', ... for a
    detector's neck maps."""
    if task == 'mmseg':
        return ['logits']
    return [f'feat{i}' for i in range(len(outputs))]


def export_onnx(module, inputs, out, names, opset=OPSET):
    """Export ``module`` traced on ``inputs`` (N, 3, H, W) to the ONNX file ``out``, with graph
    outputs called ``names``; returns the seconds the export took.

    The file is written whole or not at all (a temporary file beside ``out``, then renamed) and
    holds every weight once, inside the file (no external data). The shape is fixed to that of
    ``inputs``.
    """
    start = time.perf_counter()
    set_fast_paths(module, False)
    with environment(**EXPORT_BACKENDS):
        try:
            program = torch.onnx.export(module, (inputs, ), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=names,
                                        external_data=False, verbose=False)
        except torch.onnx.OnnxExporterError as err:
            raise RuntimeError(f'the ONNX export failed: {err}') from err
    proto = program.model_proto.SerializeToString()
    if len(proto) >= 2**31:
        raise UserError('--out', out, 'the model needs more than the 2 GiB a single ONNX file '
                        'holds', 'Export a smaller arch')
    atomic_write(out, proto)
    return time.perf_counter() - start
