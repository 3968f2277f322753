"""RoIAlign (average pooling) forward on a CPU: the `_roi_align_cpu` extension.

The RoIAlign of Mask R-CNN (He et al., 2017), with the half-pixel shift of Detectron2 when
``aligned``: for each box (batch index, x1, y1, x2, y2) and each of the out_h x out_w bins, the
mean of bilinear samples of the feature map on a regular grid in the bin (``sampling_ratio`` per
side, or ceil(bin size) when 0). The same numbers as mmcv's and torchvision's CPU RoIAlign (up to
float rounding), which run one thread and take float32 only: this kernel splits the boxes over
threads, reads float32 or bfloat16 maps and runs its multiply-adds along the channels. Forward
only (inference). :func:`mmmv.engine.mmcv_ops_in_float32` makes mmcv's ``RoIAlign`` module use it
where it applies (:func:`cpu_roi_align_unavailable_reason`).
"""
import torch

from .backends import load_extension, note_backend

EXTENSION = '_roi_align_cpu'


def cpu_roi_align_unavailable_reason(features, rois, pool_mode='avg'):
    """None when :func:`roi_align_cpu` can run these inputs, else why it cannot."""
    reason = load_extension(EXTENSION)[1]
    if reason is not None:
        return reason
    if features.device.type != 'cpu' or rois.device.type != 'cpu':
        return f'the CPU RoIAlign needs CPU tensors, got {features.device.type} features'
    if features.dtype not in (torch.float32, torch.bfloat16):
        return f'the CPU RoIAlign needs float32 or bfloat16 features, got {features.dtype}'
    if pool_mode != 'avg':
        return f"the CPU RoIAlign pools by average only, got pool_mode={pool_mode!r}"
    if torch.is_grad_enabled() and (features.requires_grad or rois.requires_grad):
        return ('the CPU RoIAlign has no backward; run it under torch.no_grad() or '
                'torch.inference_mode()')
    return None


def roi_align_cpu(features, rois, output_size, spatial_scale=1.0, sampling_ratio=0,
                  aligned=True):
    """RoIAlign of ``rois`` on ``features`` by the C++ kernel.

    Args:
        features: (N, C, H, W) float32 or bfloat16 CPU tensor.
        rois: (K, 5) boxes (batch index, x1, y1, x2, y2) in input pixels.
        output_size: (out_h, out_w).
        spatial_scale: feature pixels per input pixel (1 / stride).
        sampling_ratio: samples per bin side; 0 for ceil(bin size).
        aligned: shift the scaled boxes by -0.5 pixel (Detectron2's alignment).

    Returns:
        (K, C, out_h, out_w) in ``features``' dtype (computed in float32).
    """
    out_h, out_w = output_size
    note_backend('roi_align', 'cpp', features.dtype)
    out = load_extension(EXTENSION)[0].forward(features, rois, out_h, out_w, float(spatial_scale),
                                                int(sampling_ratio), bool(aligned))
    return out.to(features.dtype)
