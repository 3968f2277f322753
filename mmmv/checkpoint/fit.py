"""Whether a checkpoint fits a model, and loading that says so.

One comparison (:func:`checkpoint_mismatches`) serves every path: a backbone's pretrained
weights (:func:`load_backbone_weights`: a tensor of another shape is an error, keys the
checkpoint lacks are logged, as an ImageNet classifier has no ``outnorm*``), testing and resuming
(``CheckpointFitHook`` and :func:`load_checkpoint_exact`: every model tensor must be there with
its shape).
"""
import logging
import re
from typing import Dict, List, Tuple

import torch
from mmengine.logging import print_log
from mmengine.runner import load_state_dict
from mmengine.runner.checkpoint import CheckpointLoader

from .convert import convert_backbone_state_dict, extract_state_dict
from .safe_load import CheckpointError

MAX_LISTED = 10


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's tensors do not fit the model (another arch, another number of classes)."""


def _strip(state: Dict, prefix='module.') -> Dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def checkpoint_mismatches(model_state: Dict, checkpoint_state: Dict
                          ) -> Tuple[List[Tuple[str, tuple, tuple]], List[str], List[str]]:
    """``(shape_mismatches, missing, unexpected)`` between a model's and a checkpoint's state.

    shape_mismatches: ``(key, checkpoint shape, model shape)``; missing: model keys absent from
    the checkpoint; unexpected: checkpoint keys the model does not have. DDP's ``module.`` prefix
    is ignored.
    """
    checkpoint_state = _strip(checkpoint_state)
    shapes = [(k, tuple(v.shape), tuple(model_state[k].shape))
              for k, v in checkpoint_state.items()
              if k in model_state and isinstance(v, torch.Tensor)
              and tuple(v.shape) != tuple(model_state[k].shape)]
    missing = [k for k in model_state if k not in checkpoint_state]
    unexpected = [k for k in checkpoint_state if k not in model_state]
    return shapes, missing, unexpected


def _listing(items: List[str]) -> str:
    more = f' ... and {len(items) - MAX_LISTED} more' if len(items) > MAX_LISTED else ''
    return '; '.join(items[:MAX_LISTED]) + more


def describe_mismatch(name, shapes, missing, unexpected=()) -> str:
    """One line: checkpoint ``name`` (already quoted) does not fit, with the keys and shapes."""
    parts = []
    if shapes:
        parts.append(f'{len(shapes)} tensors differ in shape: ' + _listing(
            [f'{k}: checkpoint {c}, model {m}' for k, c, m in shapes]))
    if missing:
        parts.append(f'{len(missing)} model tensors are not in the checkpoint: ' +
                     _listing(list(missing)))
    if unexpected:
        parts.append(f'{len(unexpected)} checkpoint tensors are not in the model: ' +
                     _listing(list(unexpected)))
    return (f'checkpoint {name}: does not fit the model (made for another arch, neck or number '
            'of classes?): ' + ' | '.join(parts))


def unwrap_model(model):
    """The model whose state dict a checkpoint holds: without DDP wrappers and TTA models (as
    mmengine's ``load_state_dict`` unwraps them)."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def check_checkpoint_fits(model, checkpoint: Dict, name: str, allow_missing=False) -> None:
    """Raise :class:`CheckpointMismatchError` when a tensor of ``checkpoint`` (an mmengine
    checkpoint dict or a plain state dict) has another shape than the model's, or (unless
    ``allow_missing``) a model tensor is missing from it."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    shapes, missing, _ = checkpoint_mismatches(unwrap_model(model).state_dict(), state)
    missing = [] if allow_missing else missing
    if shapes or missing:
        raise CheckpointMismatchError(describe_mismatch(name, shapes, missing))


def load_checkpoint_exact(model, filename, map_location='cpu', strict=False, logger=None,
                          revise_keys=((r'^module\.', ''), )):
    """mmengine's ``load_checkpoint`` (same arguments), but a checkpoint that does not fit the
    model raises :class:`CheckpointMismatchError` instead of loading partially with a warning."""
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location,
                                                  logger=logger or 'current')
    check_checkpoint_fits(model, checkpoint, repr(filename))
    state = extract_state_dict(checkpoint)
    for pattern, replacement in revise_keys:
        state = {re.sub(pattern, replacement, k): v for k, v in state.items()}
    load_state_dict(unwrap_model(model), state, strict, logger)
    return checkpoint


def load_backbone_weights(backbone: torch.nn.Module, checkpoint: str) -> None:
    """Load a backbone's weights from a checkpoint file or URL in any released layout.

    The file is read by mmengine's CheckpointLoader (mmmv's safe local and http(s) loaders),
    converted by :func:`~mmmv.checkpoint.convert_backbone_state_dict` and checked: a tensor of
    another shape raises :class:`CheckpointMismatchError` (a checkpoint of another arch); the
    backbone keys it lacks and the keys it left out are logged by name.
    """
    state, dropped = convert_backbone_state_dict(
        CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu', logger='current'))
    shapes, missing, unexpected = checkpoint_mismatches(backbone.state_dict(), state)
    if shapes:
        raise CheckpointMismatchError(describe_mismatch(repr(checkpoint), shapes, []))
    backbone.load_state_dict(state, strict=False)
    print_log(f'loaded {checkpoint} into {type(backbone).__name__}', logger='current')
    if missing:
        print_log(f'missing keys in {checkpoint}: {", ".join(missing)}', logger='current',
                  level=logging.WARNING)
    if unexpected:
        print_log(f'unexpected keys in {checkpoint}: {", ".join(unexpected)}',
                  logger='current', level=logging.WARNING)
    if dropped:
        print_log(f'not backbone weights, left out of {checkpoint}: {", ".join(dropped)}',
                  logger='current')
