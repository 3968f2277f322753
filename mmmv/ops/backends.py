"""What the ops share: loading the optional C++ extensions and reading a backend choice."""
import functools
import importlib
import os


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
