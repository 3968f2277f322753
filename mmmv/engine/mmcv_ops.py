"""mmcv's NMS / RoIAlign / RoIPool on a CPU: float32 under autocast (their CPU kernels take float32
only), and RoIAlign's inference by mmmv's multi-threaded kernel."""
import functools
import importlib

import torch

from mmmv.ops.roi_align import cpu_roi_align_unavailable_reason, roi_align_cpu

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


def _cpu_kernel_first(forward):
    """mmcv's ``RoIAlign.forward`` that runs :func:`mmmv.ops.roi_align.roi_align_cpu` where it
    applies (CPU, average pooling, no gradient needed, extension built), else mmcv's own."""

    @functools.wraps(forward)
    def wrapped(self, input, rois):
        if self.use_torchvision or cpu_roi_align_unavailable_reason(input, rois, self.pool_mode):
            return forward(self, input, rois)
        return roi_align_cpu(input, rois, self.output_size, self.spatial_scale,
                             self.sampling_ratio, self.aligned)

    return wrapped


def _find(module_name, name):
    """``module_name.name``, or None where mmcv (or its compiled ops) is not installed."""
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None


def mmcv_ops_in_float32():
    """Run mmcv's NMS / RoIAlign / RoIPool in float32 under CPU autocast, and RoIAlign's CPU
    inference by mmmv's kernel.

    Their CPU kernels reject bfloat16 ("expected scalar type Float but found BFloat16"), and
    autocast does not cast the inputs of custom autograd Functions. Each Function's ``forward``
    is wrapped in ``torch.amp.custom_fwd(device_type='cpu', cast_inputs=torch.float32)`` (a no-op
    without CPU autocast, and on CUDA; backward gradients are cast back by autograd), and
    RoIAlign / RoIPool modules return their input's dtype, as mmdet's RoI extractors expect.
    mmcv's CPU RoIAlign runs one thread; where no gradient is needed ``RoIAlign`` modules run
    :func:`mmmv.ops.roi_align.roi_align_cpu` instead (the same numbers, every thread, bfloat16
    maps read without a float32 copy). Idempotent; ``import mmmv`` calls it once.
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
        forward = _same_dtype_output(module.forward)
        module.forward = _cpu_kernel_first(forward) if name == 'RoIAlign' else forward
        module.forward._mmmv_float32 = True
