"""Safe checkpoint loading and conversion of the MambaVision checkpoint formats.

Every checkpoint read by mmmv (``init_cfg`` Pretrained, ``--resume``, ``tools/test.py``,
``tools/convert_checkpoint.py``, ``tools/image_demo.py``) goes through :func:`load_checkpoint_file`:
``torch.load(weights_only=True)`` plus an explicit allow-list of the few non-tensor types that
real checkpoints hold (an ``argparse.Namespace`` in NVIDIA's ImageNet files; numpy scalars and
mmengine's ``HistoryBuffer`` in mmengine training checkpoints). Anything else is refused with
:class:`UnsafeCheckpointError`. Unsafe unpickling happens only when the caller asks for it
explicitly (``allow_unsafe=True`` or ``MMMV_UNSAFE_LOAD=1``), and it prints a warning.

``import mmmv`` routes mmengine's local and http(s) checkpoint loaders through this module, so the
Runner's ``load_from`` / ``resume`` and ``PretrainedInit`` are safe too, and makes mmengine's local
file writes atomic (:class:`AtomicLocalBackend`), so a run killed while saving never leaves a
truncated checkpoint or ``last_checkpoint`` behind.
"""
import argparse
import os
import os.path as osp
import pickle
import tempfile
import warnings
from typing import Dict, List, Tuple

import numpy as np
import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.fileio import LocalBackend, register_backend
from mmengine.fileio import io as mmengine_io
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

UNSAFE_ENV = 'MMMV_UNSAFE_LOAD'
CLASSIFIER_PREFIXES = ('norm.', 'head.')

# mmengine's HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, name).
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')
# numpy >= 1.25 pickles a dtype through its class (numpy.dtypes.Float64DType, ...).
_NUMPY_DTYPE_CLASSES = [type(np.dtype(t)) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64)]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds an object outside mmmv's allow-list; it was not unpickled."""


def _restricted_getattr(obj, name):
    """The only ``getattr`` a checkpoint may call: HistoryBuffer's statistics methods."""
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r}) is not on the allow-list')


def safe_globals() -> List:
    """The allow-list passed to ``torch.serialization.safe_globals``."""
    return [
        argparse.Namespace,
        HistoryBuffer,
        (_restricted_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
        *_NUMPY_DTYPE_CLASSES,
        (np._core.multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
        (np._core.multiarray.scalar, 'numpy._core.multiarray.scalar'),
        (np._core.multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (np._core.multiarray.scalar, 'numpy.core.multiarray.scalar'),
    ]


def _unsafe_requested(allow_unsafe):
    return os.environ.get(UNSAFE_ENV, '') == '1' if allow_unsafe is None else bool(allow_unsafe)


def _refusal_reason(err) -> str:
    """The line of torch's long weights-only message that names the offending object."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if 'GLOBAL' in line or 'got <' in line or 'Unsupported' in line]
    return (named or lines or [repr(err)])[0]


def _safe_torch_load(load, filename, allow_unsafe):
    """Run ``load(weights_only)`` under the allow-list; turn refusals into a clear error."""
    if _unsafe_requested(allow_unsafe):
        warnings.warn(
            f'Loading {filename} with full unpickling ({UNSAFE_ENV}=1 / allow_unsafe=True): '
            'a malicious checkpoint can run arbitrary code. Only do this for files you trust.',
            stacklevel=3)
        return load(False)
    with torch.serialization.safe_globals(safe_globals()):
        try:
            return load(True)
        except pickle.UnpicklingError as err:
            reason = _refusal_reason(err)
            raise UnsafeCheckpointError(
                f"Refused to load checkpoint '{filename}': it contains an object that is not on "
                f"mmmv's allow-list of safe types ({reason}). If you trust the file, set "
                f'{UNSAFE_ENV}=1 (or pass --unsafe-load to the tools) to unpickle it '
                'fully.') from None


def load_checkpoint_file(filename: str, map_location='cpu', allow_unsafe=None) -> Dict:
    """Load a ``.pth`` / ``.pth.tar`` / ``.safetensors`` checkpoint without running its code.

    Args:
        filename: local path.
        map_location: as in :func:`torch.load` (ignored for safetensors, which load on CPU).
        allow_unsafe: ``True`` unpickles everything (prints a warning); ``None`` reads
            ``MMMV_UNSAFE_LOAD``.

    Returns:
        The checkpoint object (a dict for every supported format).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"checkpoint '{filename}' does not exist")
    if filename.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(filename, device='cpu')
    return _safe_torch_load(
        lambda weights_only: torch.load(filename, map_location=map_location,
                                        weights_only=weights_only),
        filename, allow_unsafe)


def _load_from_local(filename, map_location=None):
    return load_checkpoint_file(filename, map_location=map_location)


def _load_from_http(filename, map_location=None, model_dir=None, progress=os.isatty(0)):
    """mmengine's http(s) scheme, downloading on local rank 0 first, then loading safely."""
    from torch.hub import load_state_dict_from_url
    rank, world_size = get_dist_info()

    def load(weights_only):
        return load_state_dict_from_url(filename, model_dir=model_dir, map_location=map_location,
                                        progress=progress, weights_only=weights_only)

    if rank == 0:
        checkpoint = _safe_torch_load(load, filename, None)
    if world_size > 1:
        barrier()
        if rank > 0:
            checkpoint = _safe_torch_load(load, filename, None)
    return checkpoint


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: os.umask can only be read by setting it


def atomic_write(path: str, data: bytes):
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    The file gets the permissions a plain ``open(path, 'w')`` would give it (0o666 minus the
    umask; ``mkstemp`` alone would make it readable by its owner only).
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's LocalBackend with atomic ``put`` / ``put_text`` (checkpoints, last_checkpoint)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(str(filepath), obj.encode(encoding))


def _allow_listed(loader):
    """One of mmengine's other schemes (``open-mmlab://``, ``s3://``, ``pavi://`` ...), run under
    mmmv's allow-list. torch >= 2.6 loads weights-only by default, so their ``torch.load`` calls
    are safe already; this gives them the allow-list and the clear refusal message."""
    if getattr(loader, '_mmmv_safe', False):
        return loader

    def load(filename, map_location=None, *args, **kwargs):
        return _safe_torch_load(lambda weights_only: loader(filename, map_location, *args,
                                                            **kwargs), filename, False)

    load._mmmv_safe = True
    return load


def install_checkpoint_io():
    """Safe loading for every mmengine checkpoint scheme; atomic local writes."""
    from mmengine.runner import checkpoint as mmengine_checkpoint
    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_from_local)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), force=True)(_load_from_http)
    # torchvision://, open-mmlab:// and mmcls:// download through this module-level function
    mmengine_checkpoint.load_from_http = _load_from_http
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if loader not in (_load_from_local, _load_from_http):
            CheckpointLoader.register_scheme(prefixes=prefix, force=True)(_allow_listed(loader))
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    mmengine_io.backend_instances.clear()


def extract_state_dict(checkpoint: Dict) -> Dict[str, torch.Tensor]:
    """The weights of any supported checkpoint layout (mmengine, timm ``.pth.tar``, plain)."""
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def convert_backbone_state_dict(
        checkpoint: Dict) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map any released layout to backbone keys (SPEC section 2).

    Handles NVIDIA's ImageNet ``.pth.tar`` (classifier keys), Hugging Face safetensors (``model.``
    prefix), mmengine detector / segmentor checkpoints (``backbone.`` prefix) and DDP's
    ``module.`` prefix.

    Returns:
        ``(state_dict, dropped)``: backbone weights and the sorted names of the keys left out.
    """
    state = extract_state_dict(checkpoint)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    dropped = []
    for prefix in ('backbone.', 'model.'):
        if any(k.startswith(prefix) for k in state):
            dropped += [k for k in state if not k.startswith(prefix)]
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    dropped += [k for k in state if k.startswith(CLASSIFIER_PREFIXES)]
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    return state, sorted(dropped)


def load_backbone_state_dict(filename: str, map_location='cpu') -> Dict[str, torch.Tensor]:
    """Safely read ``filename`` (any supported format) and return backbone weights."""
    state, _ = convert_backbone_state_dict(load_checkpoint_file(filename, map_location))
    return state
