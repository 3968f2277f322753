"""Atomic writes of local files, for checkpoints and ``last_checkpoint``.

:class:`AtomicLocalBackend` replaces mmengine's local file backend (``import mmmv`` registers
it), so a run killed while saving never leaves a truncated checkpoint or ``last_checkpoint``.
"""
import os
import os.path as osp
import tempfile

from mmengine.fileio import LocalBackend


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# what a plain open(path, 'w') gives a new file; read once, at import: os.umask can only be read
# by setting it
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str, data: bytes):
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    The file gets the permissions a plain ``open(path, 'w')`` would give it (0o666 minus the
    umask; ``mkstemp`` alone would make it readable by its owner only).
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    try:
        os.fchmod(fd, FILE_MODE)
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
