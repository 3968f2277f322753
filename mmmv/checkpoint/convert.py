"""One pure function from any released checkpoint layout to MambaVision backbone keys.

The layouts (key names as NVIDIA's code writes them, github.com/NVlabs/MambaVision):

- ImageNet classifiers (``mambavision_*.pth.tar``, timm's training checkpoints): the backbone's
  keys at the top of ``state_dict``, plus the classifier's ``norm.*`` (BatchNorm) and ``head.*``.
- Hugging Face ``model.safetensors``: the same keys under ``model.``.
- Detectors and segmentors (mmdet / mmseg checkpoints of ``MM_mamba_vision``, also ours): the
  backbone under ``backbone.``, beside ``neck.*`` / ``decode_head.*`` ...
- Any of these saved from a DistributedDataParallel model: a leading ``module.``.
"""
from typing import Dict, List, Tuple

import torch

CLASSIFIER_PREFIXES = ('norm.', 'head.')
MODEL_PREFIXES = ('backbone.', 'model.')


def extract_state_dict(checkpoint: Dict) -> Dict[str, torch.Tensor]:
    """The weights of a checkpoint: its ``state_dict`` (mmengine, timm) or ``model`` entry, or
    the checkpoint itself when it is a plain state dict."""
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def convert_backbone_state_dict(
        checkpoint: Dict) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Backbone weights of a checkpoint in any of the released layouts.

    Args:
        checkpoint: what :func:`mmmv.checkpoint.load_checkpoint` returned.

    Returns:
        ``(state_dict, dropped)``: the backbone's weights under MambaVision's own names, and the
        sorted names of the keys left out (classifier, neck, heads).
    """
    state = extract_state_dict(checkpoint)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    dropped = []
    for prefix in MODEL_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            dropped += [k for k in state if not k.startswith(prefix)]
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    dropped += [k for k in state if k.startswith(CLASSIFIER_PREFIXES)]
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    return state, sorted(dropped)
