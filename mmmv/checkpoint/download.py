"""Checkpoints by URL: downloaded once into torch hub's cache, safely, or a clear error.

A URL is fetched into ``<torch hub dir>/checkpoints/<file name>`` (``$TORCH_HOME/hub/checkpoints``,
by default ``~/.cache/torch/hub/checkpoints``: the cache mmengine and torchvision use), then read
like a local file. The download goes to a temporary file in the same folder that is renamed when
complete, so an interrupted download never becomes the cached file. Processes that share the
cache folder (the ranks of a torchrun job on one machine) download once: the first takes a lock,
the others wait for it and read the file it wrote. A connection that stays silent for
``TIMEOUT`` seconds ends the attempt with a :class:`CheckpointDownloadError` naming the URL, the
cache path and how to work offline.
"""
import fcntl
import http.client
import math
import os
import os.path as osp
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from typing import Optional

import torch
from mmengine.utils import ProgressBar

from .atomic import FILE_MODE
from .safe_load import CheckpointError

TIMEOUT = 20  # seconds without a byte from the server (connecting or reading)
CHUNK = 1 << 20
OFFLINE_HINT = ('pass a local path instead of the URL (for a backbone: --cfg-options '
                'model.backbone.init_cfg.checkpoint=PATH)')


class CheckpointDownloadError(CheckpointError):
    """A checkpoint URL could not be downloaded (offline, unreachable, HTTP error, cut off)."""


def cache_path(url: str, model_dir: Optional[str] = None) -> str:
    """Where ``url`` is cached: ``model_dir`` (default torch hub's ``checkpoints`` folder) /
    the last component of the URL's path."""
    name = osp.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise CheckpointError(url, 'names no file (its path ends with /)',
                              'Give the URL of the checkpoint file itself')
    return osp.join(model_dir or osp.join(torch.hub.get_dir(), 'checkpoints'), name)


@contextmanager
def _locked(path):
    """Hold an exclusive lock on ``.<name>.lock`` beside ``path``; yields whether another
    process held it first (we waited)."""
    folder, name = osp.split(path)
    with open(osp.join(folder, f'.{name}.lock'), 'a') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            fcntl.flock(lock, fcntl.LOCK_EX)
            waited = True
        try:
            yield waited
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _failure(url, path, why) -> CheckpointDownloadError:
    return CheckpointDownloadError(
        url, f'cannot download it ({why})',
        f"Download it where you can and {OFFLINE_HINT}, or place the file at '{path}'")


def _why(err) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f'HTTP error {err.code}: {err.reason}'
    reason = getattr(err, 'reason', err)
    if isinstance(reason, TimeoutError):
        return f'no answer within {TIMEOUT} s'
    return str(reason) or type(reason).__name__


def _download(url, path, progress):
    """Stream ``url`` into a temporary file beside ``path``; rename it once complete."""
    folder, name = osp.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{name}.', suffix='.part')
    received = total = 0
    try:
        with os.fdopen(fd, 'wb') as f:
            request = urllib.request.Request(url, headers={'User-Agent': 'mmmv'})
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                total = int(response.headers.get('Content-Length') or 0)
                bar = ProgressBar(math.ceil(total / CHUNK), file=sys.stderr) if progress else None
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update()
            if bar is not None:
                sys.stderr.write('\n')
            if total and received != total:
                raise http.client.IncompleteRead(b'', total - received)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except (OSError, http.client.HTTPException) as err:  # URLError and timeouts are OSErrors
        why = (f'the connection closed after {received} of {total} bytes'
               if isinstance(err, http.client.IncompleteRead) else _why(err))
        raise _failure(url, path, why) from None
    finally:
        if osp.exists(tmp):
            os.unlink(tmp)


def download_checkpoint(url: str, model_dir: Optional[str] = None,
                        progress: Optional[bool] = None) -> str:
    """The local path of ``url``'s file, downloading it first unless it is cached.

    Args:
        url: http(s) URL of a checkpoint file.
        model_dir: cache folder; default torch hub's ``checkpoints`` folder.
        progress: show a progress bar on stderr; default: when stderr is a terminal.

    Raises:
        CheckpointDownloadError: the download failed (nothing is left in the cache).
    """
    path = cache_path(url, model_dir)
    if osp.isfile(path):
        return path
    os.makedirs(osp.dirname(path), exist_ok=True)
    with _locked(path) as waited:
        if osp.isfile(path):
            return path
        if waited:  # the process that held the lock tried and failed: do not try again
            raise _failure(url, path, 'another process sharing the cache failed to download it')
        _download(url, path, sys.stderr.isatty() if progress is None else progress)
    return path
