"""What inference does to a detector or segmentor once, before its first image:
``tools/test.py`` (:class:`~mmmv.engine.hooks.PrepareInferenceHook`), ``tools/benchmark.py`` and
``tools/image_demo.py`` call :func:`prepare_for_inference`."""
import torch
from torch import nn

from mmmv.models import fuse_conv_bn


def _channels_last_on_cpu(module, args, output):
    """Forward hook: a CPU output (N, C, H, W) in channels-last memory format (same values)."""
    if output.device.type != 'cpu':
        return output
    return output.contiguous(memory_format=torch.channels_last)


def channels_last_logits(model: nn.Module) -> nn.Module:
    """Make the class logits of every segmentation head in ``model`` (the output of an mmseg
    decode head's ``conv_seg``, (N, classes, h, w)) channels-last on a CPU; returns ``model``.

    mmseg then resizes the logits bilinearly to the input and again to the original image, and
    takes their argmax over the classes. PyTorch's CPU kernels for both run along the innermost
    dimension, so with the classes innermost they read contiguous memory: the same numbers, and
    on the 150 classes of ADE20K at 512 x 512 the three ops take about half the time in
    bfloat16 (see benchmarks/RESULTS.md). Idempotent.
    """
    for module in model.modules():
        conv = getattr(module, 'conv_seg', None)
        if isinstance(conv, nn.Conv2d) and not getattr(conv, '_mmmv_channels_last', False):
            conv.register_forward_hook(_channels_last_on_cpu)
            conv._mmmv_channels_last = True
    return model


# Layers whose weight CPU autocast casts to its low-precision dtype at every call (their ops are on
# autocast's lower-precision list: conv2d, conv_transpose2d, linear)
AUTOCAST_WEIGHT_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def cast_autocast_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the weights of ``model``'s Conv2d / ConvTranspose2d / Linear layers in ``dtype``, once;
    returns ``model``. Biases and every other parameter and buffer stay as they are.

    For a model that from then on runs only under ``torch.autocast('cpu', dtype)`` (the tools'
    ``--amp`` on a CPU): autocast rounds these weights to ``dtype`` at every call anyway (on a CPU
    its weight cache lasts one autocast block, one test iteration), so the outputs are the same,
    without the per-iteration casts, and the weights take half the memory. Outside autocast the
    layers no longer accept float32 inputs.
    """
    for module in model.modules():
        if isinstance(module, AUTOCAST_WEIGHT_LAYERS) and module.weight.is_floating_point():
            module.weight.data = module.weight.data.to(dtype)
    return model


def prepare_for_inference(model: nn.Module, autocast_dtype=None) -> nn.Module:
    """``model`` in eval mode, MambaVision's BatchNorm folded into its convs
    (:func:`mmmv.models.fuse_conv_bn`) and segmentation logits channels-last
    (:func:`channels_last_logits`); with ``autocast_dtype`` (bfloat16 for ``--amp`` on a CPU) the
    weights autocast would cast stored in it (:func:`cast_autocast_weights`), for a model that
    then runs only under CPU autocast. Returns ``model``; a prepared model cannot train again."""
    model = channels_last_logits(fuse_conv_bn(model.eval()))
    return model if autocast_dtype is None else cast_autocast_weights(model, autocast_dtype)
