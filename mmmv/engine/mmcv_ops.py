"""mmcv's NMS / RoIAlign / RoIPool under CPU autocast: their CPU kernels take float32 only."""
import functools
import importlib

import torch

# autograd Functions (module, class) whose CPU kernels take float32 only, and the nn.Modules
# around them (their outputs are cast back to the input's dtype)
MMCV_FLOAT32_FUNCTIONS = (('mmcv.ops.nms', 'NMSop'), ('mmcv.ops.nms', 'SoftNMSop'),
                          ('mmcv.ops.roi_align', 'RoIAlignFunction'),
                          ('mmcv.ops.roi_pool', 'RoIPoolFunction'))
MMCV_FLOAT32_MODULES = (('mmcv.ops.roi_align', 'RoIAlign'), ('mmcv.ops.roi_pool', 'RoIPool'))


def _same_dtype_output(forward):
    """A module ``forward(self, input, ...)`` whose output has ``input``'s dtype."""

    @functools.wraps(forward)
    def wrapped(self, input, *args, **kwargs):
        out = forward(self, input, *args, **kwargs)
        return out.to(input.dtype) if isinstance(out, torch.Tensor) else out

    return wrapped


def _find(module_name, name):
    """``module_name.name``, or None where mmcv (or its compiled ops) is not installed."""
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None


def mmcv_ops_in_float32():
    """Run mmcv's NMS / RoIAlign / RoIPool in float32 under CPU autocast.

    Their CPU kernels reject bfloat16 ("expected scalar type Float but found BFloat16"), and
    autocast does not cast the inputs of custom autograd Functions. Each Function's ``forward``
    is wrapped in ``torch.amp.custom_fwd(device_type='cpu', cast_inputs=torch.float32)`` (a no-op
    without CPU autocast, and on CUDA; backward gradients are cast back by autograd), and
    RoIAlign / RoIPool modules return their input's dtype, as mmdet's RoI extractors expect.
    Idempotent; ``import mmmv`` calls it once.
    """
    for module_name, name in MMCV_FLOAT32_FUNCTIONS:
        function = _find(module_name, name)
        if function is None or getattr(function.forward, '_mmmv_float32', False):
            continue
        forward = torch.amp.custom_fwd(function.__dict__['forward'].__func__, device_type='cpu',
                                       cast_inputs=torch.float32)
        forward._mmmv_float32 = True
        function.forward = staticmethod(forward)
    for module_name, name in MMCV_FLOAT32_MODULES:
        module = _find(module_name, name)
        if module is None or getattr(module.forward, '_mmmv_float32', False):
            continue
        module.forward = _same_dtype_output(module.forward)
        module.forward._mmmv_float32 = True
