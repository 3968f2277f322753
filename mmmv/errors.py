"""Mistakes at the command line: one line that names them, and exit status 2.

A :class:`UserError` is something the user can fix: a missing or unreadable file, a file of the
wrong kind, a bad value, an unknown key. The tools run their ``main`` through :func:`cli_main`,
which prints such an error as one line on stderr::

    error: <what> '<which>': <why>. <what to do>

and exits with status 2, as argparse does for bad arguments, without a traceback. With
``MMMV_DEBUG=1`` in the environment the exception propagates with its traceback. Any other
exception is a programming error and keeps its traceback.

This module imports nothing heavy: every part of mmmv can derive its errors from it.
"""
import functools
import os
import os.path as osp
import sys

DEBUG_ENV = 'MMMV_DEBUG'
EXIT_STATUS = 2
# How PyTorch's DataLoader re-raises a worker's exception: type(err)(message) where the message
# holds the worker's traceback text after this line.
_WORKER_TRACEBACK = '\nOriginal Traceback (most recent call last):'
# (leading bytes, what a file starting with them is)
_SIGNATURES = (
    (b'\x89PNG\r\n\x1a\n', 'a PNG image'),
    (b'\xff\xd8\xff', 'a JPEG image'),
    (b'GIF8', 'a GIF image'),
    (b'BM', 'a BMP image'),
    (b'II*\x00', 'a TIFF image'),
    (b'MM\x00*', 'a TIFF image'),
    (b'PK\x03\x04', 'a zip archive'),
    (b'\x1f\x8b', 'a gzip archive'),
    (b'BZh', 'a bzip2 archive'),
    (b'\xfd7zXZ\x00', 'an xz archive'),
    (b'7z\xbc\xaf\x27\x1c', 'a 7-zip archive'),
    (b'%PDF', 'a PDF document'),
    (b'\x7fELF', 'an executable'),
    (b'\x80', 'a pickle'),
)
_SNIFF_BYTES = 512


class UserError(Exception):
    """A mistake the user can fix; its message is ``<what> '<which>': <why>. <todo>``.

    Args:
        what: the kind of thing at fault ("checkpoint", "config file", "--shape").
        which: the offending file, key or value (quoted in the message).
        why: what is wrong with it.
        todo: what to do about it (optional).

    With ``which`` and ``why`` left out, ``what`` is the whole message: subclasses that build
    their own messages use this, and so does PyTorch's DataLoader, which re-raises a worker's
    exception as ``type(err)(message)``.
    """

    def __init__(self, what, which=None, why=None, todo=None):
        self.what, self.which, self.why, self.todo = what, which, why, todo
        super().__init__(self._message())

    def _message(self) -> str:
        if self.which is None and self.why is None:
            return str(self.what)
        message = f"{self.what} '{self.which}': {str(self.why).rstrip('.')}."
        if self.todo:
            todo = str(self.todo)
            message += f' {todo}' + ('' if todo.endswith(('.', '?', '!', ')')) else '.')
        return message


class ConfigError(UserError, ValueError):
    """A config key or value (from the file or ``--cfg-options``) that cannot work."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a DataLoader worker's traceback text left out)."""
    message = str(err)
    if _WORKER_TRACEBACK in message:
        raised = message.rstrip().splitlines()[-1]  # "package.module.ErrorClass: message"
        message = raised.split(': ', 1)[-1]
    return ' '.join(line.strip() for line in message.splitlines() if line.strip())


def debugging() -> bool:
    """Whether ``MMMV_DEBUG=1`` asks for tracebacks of user errors."""
    return os.environ.get(DEBUG_ENV, '') == '1'


def cli_main(main, *args, **kwargs):
    """Run a tool's ``main(*args, **kwargs)``; a :class:`UserError` ends the process with one
    line ``error: ...`` on stderr and exit status 2 (its traceback too with ``MMMV_DEBUG=1``).
    Returns what ``main`` returns."""
    try:
        return main(*args, **kwargs)
    except UserError as err:
        if debugging():
            raise
        sys.stdout.flush()
        print(f'error: {one_line(err)}', file=sys.stderr, flush=True)
        sys.exit(EXIT_STATUS)


def user_errors(main):
    """Decorator form of :func:`cli_main`."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        return cli_main(main, *args, **kwargs)

    return run


def looks_like(path: str) -> str:
    """What a file's first bytes say it is ("a PNG image", "a zip archive", "text", "empty (0
    bytes)", ...), for messages about a file of the wrong kind."""
    with open(path, 'rb') as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        return 'empty (0 bytes)'
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if len(head) > 262 and head[257:262] == b'ustar':
        return 'a tar archive'
    try:
        head.decode('utf-8')
    except UnicodeDecodeError as err:  # a multi-byte character cut at the end is still text
        if err.start < len(head) - 3:
            return 'binary data of an unknown kind'
    return 'text'


def check_file(path: str, what: str, todo: str = '') -> str:
    """``path`` if it names a readable, non-empty file; otherwise a :class:`UserError` naming
    it as ``what`` ("config file", "image", ...) with ``todo`` as the advice."""
    if not osp.exists(path):
        where = '' if osp.isabs(path) else f' (relative to {os.getcwd()})'
        raise UserError(what, path, f'does not exist{where}', todo)
    if osp.isdir(path):
        raise UserError(what, path, 'is a folder, not a file', todo)
    if not os.access(path, os.R_OK):
        raise UserError(what, path, 'cannot be read (permission denied)', todo)
    if osp.getsize(path) == 0:
        raise UserError(what, path, 'is empty (0 bytes)', todo)
    return path


def check_output_file(path: str, what: str = 'output', todo: str = '') -> str:
    """``path`` if a file can be written there: not a folder, and the folder above it (made if
    missing) is not a file. Run before the work, so that a run never ends at its last step."""
    if osp.isdir(path):
        raise UserError(what, path, 'is a folder, not a file name',
                        todo or f"Give a file name, e.g. '{osp.join(path, 'out')}'")
    parent = osp.dirname(osp.abspath(path))
    while not osp.exists(parent):
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        raise UserError(what, path, f"cannot be written: '{parent}' is a file, not a folder",
                        todo)
    if not os.access(parent, os.W_OK):
        raise UserError(what, path, f"cannot be written: no permission to write in '{parent}'",
                        todo)
    return path
