"""Deployment: ONNX export of MambaVision segmentors and detector features, checked in
onnxruntime against PyTorch (``tools/export_onnx.py``).

- :mod:`.model`: what is exported (:class:`SegmentorLogits`, :class:`DetectorFeatures`), built
  from a config and an optional checkpoint.
- :mod:`.onnx_export`: the export itself (published computation, pure-PyTorch ops).
- :mod:`.parity`: onnxruntime sessions and the differences against PyTorch.
"""
from .model import DetectorFeatures, SegmentorLogits, build_exportable, check_batch
from .onnx_export import OPSET, example_input, export_onnx, output_names, set_fast_paths
from .parity import (TOLERANCE, differences, format_differences, onnxruntime_outputs,
                     onnxruntime_session, pytorch_outputs)

__all__ = [
    'DetectorFeatures', 'SegmentorLogits', 'build_exportable', 'check_batch',
    'OPSET', 'example_input', 'export_onnx', 'output_names', 'set_fast_paths', 'TOLERANCE',
    'differences', 'format_differences', 'onnxruntime_outputs', 'onnxruntime_session',
    'pytorch_outputs'
]
