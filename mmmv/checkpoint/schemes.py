"""mmengine's checkpoint loading, made safe and URL-capable: what ``import mmmv`` changes.

:func:`install_checkpoint_io` runs once, at ``import mmmv``, through mmengine's and PyTorch's
public registration APIs:

- adds the types real checkpoints hold to PyTorch's weights-only allow-list
  (``torch.serialization.add_safe_globals``), so every ``torch.load`` in the process (mmengine's
  own loaders, mmdet's ``init_detector``) reads mmengine training checkpoints on torch >= 2.6;
- registers mmmv's loaders for local paths and http(s) URLs in ``CheckpointLoader``: the
  Runner's ``load_from`` / ``resume``, ``init_cfg`` Pretrained and the tools all read checkpoints
  through :func:`load_checkpoint_file` (clear errors, safetensors) and
  :func:`download_checkpoint` (cache, lock, timeout);
- registers :class:`AtomicLocalBackend` as mmengine's local file backend.
"""
import torch
from mmengine.fileio import register_backend
from mmengine.fileio import io as mmengine_io
from mmengine.runner.checkpoint import CheckpointLoader

from .atomic import AtomicLocalBackend
from .download import download_checkpoint
from .safe_load import load_checkpoint_file, safe_globals


def load_from_local(filename, map_location=None):
    """mmengine's scheme for local paths (prefix ''), read safely."""
    return load_checkpoint_file(filename, map_location=map_location)


def load_from_http(filename, map_location=None, model_dir=None, progress=None):
    """mmengine's scheme for http(s) URLs: cached download, then read like a local file."""
    path = download_checkpoint(filename, model_dir=model_dir, progress=progress)
    return load_checkpoint_file(path, map_location=map_location, cached_from=filename)


def load_checkpoint(filename: str, map_location='cpu'):
    """Read a checkpoint file or URL the way every mmmv path does (mmengine's CheckpointLoader
    with mmmv's schemes); returns the checkpoint object."""
    return CheckpointLoader.load_checkpoint(filename, map_location=map_location,
                                            logger='current')


def install_checkpoint_io():
    """Safe loading for mmengine's local and http(s) schemes; atomic local writes. Idempotent."""
    torch.serialization.add_safe_globals(safe_globals())
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_from_local)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), force=True)(load_from_http)
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    # mmengine caches backend instances (a private dict, listed in mmmv/engine/
    # mmengine_internals.py): drop them so that the atomic backend is used from now on
    mmengine_io.backend_instances.clear()
