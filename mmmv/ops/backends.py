"""What the ops share: loading the optional C++ extensions, reading a backend choice and recording
which backend each call ran."""
import collections
import contextlib
import functools
import importlib
import os

_RECORDERS = []  # Counters of the active record_backends() blocks


@functools.lru_cache(maxsize=None)
def load_extension(name):
    """(module ``mmmv.ops.<name>``, None), or (None, a sentence saying why it cannot load)."""
    try:
        return importlib.import_module(f'mmmv.ops.{name}'), None
    except ImportError as err:
        return None, (f'the C++ extension mmmv.ops.{name} is not built ({err}); build it with '
                      '`pip install --no-build-isolation -e .` or '
                      '`python setup.py build_ext --inplace`')


def requested_backend(op, backend, env_var, allowed):
    """The backend asked for by the ``backend`` argument, else by ``env_var``, else 'auto'.

    Raises ValueError naming the argument (or the variable) and the allowed values.
    """
    if backend is not None:
        source, value = 'backend', backend
    else:
        source, value = env_var, os.environ.get(env_var) or 'auto'
    if value not in allowed:
        names = ', '.join(repr(name) for name in allowed)
        raise ValueError(f'{op}: invalid {source}={value!r}; expected one of {names}')
    return value


def note_backend(op, backend, dtype):
    """Count one call of ``op`` run by ``backend`` in ``dtype`` in every active
    :func:`record_backends` block (nothing to do outside one)."""
    for recorder in _RECORDERS:
        recorder[op, backend, str(dtype).replace('torch.', '')] += 1


@contextlib.contextmanager
def record_backends():
    """Within the block, count the calls of the dispatching ops by the backend that ran them.

    Yields a Counter {(op, backend, dtype): calls}, e.g. ('attention', 'cpp', 'bfloat16') or
    ('selective_scan', 'cpp', 'float32'); ops note themselves where they dispatch.
    """
    recorder = collections.Counter()
    _RECORDERS.append(recorder)
    try:
        yield recorder
    finally:
        _RECORDERS.remove(recorder)
