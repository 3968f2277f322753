"""Reading one local checkpoint file without running its code, and naming what is wrong with it.

:func:`load_checkpoint_file` reads ``.pth`` / ``.pth.tar`` files with
``torch.load(weights_only=True)`` and ``.safetensors`` files with safetensors. The types real
checkpoints hold besides tensors (an ``argparse.Namespace`` in NVIDIA's ImageNet files; numpy
scalars and mmengine's ``HistoryBuffer`` in mmengine training checkpoints) are added to PyTorch's
weights-only allow-list once, by :func:`mmmv.checkpoint.install_checkpoint_io`. Anything else is
refused with :class:`UnsafeCheckpointError`; full unpickling happens only when asked for
(``allow_unsafe=True`` or ``MMMV_UNSAFE_LOAD=1``) and warns.

A file that cannot be read raises a :class:`CheckpointError` saying why: missing, a folder (and
which file its ``last_checkpoint`` names), empty, not a checkpoint at all (and what it looks
like: text, an image, an archive ...), truncated or corrupt.
"""
import argparse
import os
import os.path as osp
import pickle
import warnings
import zipfile
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from ..errors import UserError, looks_like

UNSAFE_ENV = 'MMMV_UNSAFE_LOAD'
FORMATS = '.pth / .pth.tar / .safetensors'

# mmengine's HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, name).
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')
# numpy >= 1.25 pickles a dtype through its class (numpy.dtypes.Float64DType, ...).
_NUMPY_DTYPE_CLASSES = [type(np.dtype(t)) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64)]
_ZIP_MAGIC = b'PK\x03\x04'  # torch.save's default format is a zip archive
_PICKLE_MAGIC = b'\x80'  # pickle protocol >= 2: torch.save(_use_new_zipfile_serialization=False)
# What torch's weights-only unpickler (and mmmv's getattr) say when they refuse an object; a
# damaged pickle fails otherwise ("Unsupported operand", "String is too long", ...).
_REFUSAL_MARKS = ('GLOBAL', 'getattr(', 'unrecognized function', 'Can only create new object',
                  'Can only build')


class CheckpointError(UserError, ValueError):
    """A checkpoint file or URL that cannot be loaded. The message is one line,
    ``checkpoint '<file or URL>': <why>. <what to do>``."""

    def __init__(self, which, why=None, todo=None):
        if why is None:  # re-raised as type(err)(message), as PyTorch's DataLoader does
            super().__init__(which)
        else:
            super().__init__('checkpoint', which, why, todo)


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint holds an object outside the allow-list; it was not unpickled."""


def _restricted_getattr(obj, name):
    """The only ``getattr`` a checkpoint may call: HistoryBuffer's statistics methods."""
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r}) is not on the allow-list')


def safe_globals() -> List:
    """What mmmv adds to ``torch.serialization``'s weights-only allow-list."""
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


def unsafe_requested(allow_unsafe: Optional[bool] = None) -> bool:
    """``allow_unsafe``, or when it is None whether ``MMMV_UNSAFE_LOAD=1`` is set."""
    return os.environ.get(UNSAFE_ENV, '') == '1' if allow_unsafe is None else bool(allow_unsafe)


def _refusal_reason(err) -> str:
    """The line of torch's long weights-only message that names the offending object."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if any(mark in line for mark in _REFUSAL_MARKS)]
    return (named or lines or [repr(err)])[0]


def _reason(err) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f'{type(err).__name__}: {lines[0]}' if lines else type(err).__name__


def _which(filename, cached_from):
    return cached_from or filename


def _check_is_file(filename, cached_from=None):
    """Raise a CheckpointError unless ``filename`` is a non-empty readable file."""
    which = _which(filename, cached_from)
    if osp.isdir(filename):
        pointer = osp.join(filename, 'last_checkpoint')
        if osp.isfile(pointer):
            with open(pointer) as f:
                named = f.read().strip()
            todo = f"Its last_checkpoint names '{named}': pass that file"
        else:
            names = sorted(n for n in os.listdir(filename) if n.endswith(('.pth', '.pth.tar',
                                                                          '.safetensors')))
            todo = (f'Pass one of the checkpoint files in it: {", ".join(names[:5])}' if names
                    else f'Pass a checkpoint file ({FORMATS})')
        raise CheckpointError(which, 'is a folder, not a file', todo)
    if not osp.exists(filename):
        where = '' if osp.isabs(filename) else f' (relative to {os.getcwd()})'
        raise CheckpointNotFoundError(which, f'does not exist{where}',
                                      'Check the path, or give a URL to download it')
    if not os.access(filename, os.R_OK):
        raise CheckpointError(which, 'cannot be read (permission denied)', None)
    if osp.getsize(filename) == 0:
        raise CheckpointError(which, 'is empty (0 bytes)', _again(filename, cached_from))


def _again(filename, cached_from) -> str:
    if cached_from:
        return f"Delete the cached copy '{filename}' and run again to download it anew"
    return 'Download or copy it again'


def _is_safetensors(head: bytes, size: int) -> bool:
    """safetensors: an 8-byte little-endian header length, then the JSON header."""
    return len(head) > 8 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') < size


def _not_a_checkpoint(filename, cached_from) -> CheckpointError:
    kind = looks_like(filename)
    if kind == 'text':
        with open(filename, 'rb') as f:
            head = f.read(512).lstrip().lower()
        if head.startswith((b'<!doctype html', b'<html')):
            kind = 'an HTML page (a web page saved instead of the file?)'
        elif head.startswith(b'version https://git-lfs'):
            kind = 'a Git LFS pointer (the file itself was never fetched: git lfs pull)'
    if kind == 'a zip archive':
        kind = 'a zip archive that is not a PyTorch checkpoint'
    todo = _again(filename, cached_from) if cached_from else f'Give a {FORMATS} checkpoint file'
    return CheckpointError(_which(filename, cached_from), f'is not a checkpoint: it is {kind}',
                           todo)


def _corrupt(filename, err, cached_from) -> CheckpointError:
    where = f" (its cached copy '{filename}')" if cached_from else ''
    return CheckpointError(_which(filename, cached_from),
                           f'is truncated or corrupt{where}: {_reason(err)}',
                           _again(filename, cached_from))


def _torch_zip_is_whole(filename) -> bool:
    """Whether a zip-format file has its central directory and a pickle (torch's layout)."""
    if not zipfile.is_zipfile(filename):
        return False
    with zipfile.ZipFile(filename) as archive:
        return any(name.endswith('data.pkl') for name in archive.namelist())


def _torch_load(filename, map_location, allow_unsafe, cached_from):
    which = _which(filename, cached_from)
    if unsafe_requested(allow_unsafe):
        warnings.warn(
            f'Loading {which} with full unpickling ({UNSAFE_ENV}=1 / allow_unsafe=True): '
            'a malicious checkpoint can run arbitrary code. Only do this for files you trust.',
            stacklevel=4)
        weights_only = False
    else:
        weights_only = True
    try:
        return torch.load(filename, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as err:
        if weights_only and any(mark in str(err) for mark in _REFUSAL_MARKS):
            raise UnsafeCheckpointError(
                which, f'refused to load it: it holds an object that is not on mmmv\'s '
                f'allow-list of safe types ({_refusal_reason(err)}), and unpickling it could '
                'run code', f'If you trust the file, set {UNSAFE_ENV}=1 (or pass --unsafe-load '
                'to the tools) to unpickle it fully') from None
        raise _corrupt(filename, err, cached_from) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise _corrupt(filename, err, cached_from) from None


def load_checkpoint_file(filename: str, map_location='cpu', allow_unsafe=None,
                         cached_from: Optional[str] = None) -> Dict:
    """Load a local ``.pth`` / ``.pth.tar`` / ``.safetensors`` checkpoint without running code.

    Args:
        filename: local path.
        map_location: as in :func:`torch.load` (safetensors files load on the CPU).
        allow_unsafe: ``True`` unpickles everything (warns); ``None`` reads ``MMMV_UNSAFE_LOAD``.
        cached_from: the URL ``filename`` was downloaded from; errors name the URL and say to
            delete the cached copy where that helps.

    Returns:
        The checkpoint object (a dict for every supported format).

    Raises:
        CheckpointError: the file is missing, a folder, empty, not a checkpoint, truncated or
            corrupt; :class:`UnsafeCheckpointError` when it holds objects off the allow-list.
    """
    filename = osp.expanduser(filename)
    _check_is_file(filename, cached_from)
    with open(filename, 'rb') as f:
        head = f.read(16)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        try:
            return _torch_load(filename, map_location, allow_unsafe, cached_from)
        except CheckpointError:
            if head.startswith(_ZIP_MAGIC) and zipfile.is_zipfile(filename) and \
                    not _torch_zip_is_whole(filename):
                raise _not_a_checkpoint(filename, cached_from) from None
            raise
    if _is_safetensors(head, osp.getsize(filename)):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(filename, device='cpu')
        except SafetensorError as err:
            raise _corrupt(filename, err, cached_from) from None
    raise _not_a_checkpoint(filename, cached_from)
