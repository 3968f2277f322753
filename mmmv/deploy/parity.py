"""Run an exported ONNX file in onnxruntime and compare it with the PyTorch model.

The difference of an output is reported as its largest absolute difference and that divided by the
largest absolute value of the PyTorch output (``rel``): a scale-free measure that tiny reference
values cannot blow up.
"""
import torch

from .onnx_export import INPUT_NAME, set_fast_paths

TOLERANCE = 1e-4  # largest accepted rel difference


def onnxruntime_session(path, threads=None):
    """An onnxruntime CPU session of ``path``; ``threads`` intra-op threads (None: its
    default, one per core)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def onnxruntime_outputs(session, inputs):
    """The session's outputs for the batch ``inputs`` (a tensor), as float32 tensors."""
    outputs = session.run(None, {INPUT_NAME: inputs.numpy()})
    return [torch.from_numpy(o) for o in outputs]


@torch.no_grad()
def pytorch_outputs(module, inputs):
    """The module's outputs as a list, computed as mmmv runs it by default: fast paths on, each
    op on the backend mmmv chooses (the C++ CPU kernels where they run)."""
    set_fast_paths(module, True)
    outputs = module(inputs)
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def differences(reference, outputs, names):
    """One dict per output: name, shape, max_abs and rel (max_abs / max |reference|).

    A shape that differs raises ValueError."""
    if not len(names) == len(reference) == len(outputs):
        raise ValueError(f'onnxruntime gives {len(outputs)} outputs, PyTorch {len(reference)}')
    rows = []
    for name, ref, out in zip(names, reference, outputs):
        if tuple(ref.shape) != tuple(out.shape):
            raise ValueError(f'output {name}: onnxruntime gives shape {tuple(out.shape)}, '
                             f'PyTorch {tuple(ref.shape)}')
        max_abs = (ref.double() - out.double()).abs().max().item()
        scale = ref.double().abs().max().item()
        rows.append(dict(name=name, shape=tuple(ref.shape), max_abs=max_abs,
                         rel=max_abs / scale if scale > 0 else max_abs))
    return rows


def format_differences(rows):
    """The rows of :func:`differences` as a text table."""
    lines = [f'{"output":<8} {"shape":<22} {"max abs diff":>13} {"rel diff":>10}']
    for row in rows:
        shape = 'x'.join(map(str, row['shape']))
        lines.append(f'{row["name"]:<8} {shape:<22} {row["max_abs"]:>13.3e} {row["rel"]:>10.3e}')
    return '\n'.join(lines)
