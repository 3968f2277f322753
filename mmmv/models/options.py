"""Checks of MambaVision's constructor values, run before any module is built.

Every bad value raises :class:`mmmv.errors.ConfigError` (a ``ValueError``) naming the parameter,
the value and the allowed range; unknown names come with the closest valid one.
"""
import difflib
import math
from numbers import Real

from mmmv.errors import ConfigError

NUM_STAGES = 4
ARCH_REQUIRED = ('dim', 'in_dim', 'depths', 'num_heads')
# optional keys of an arch dict and their values when left out (those of every published model)
ARCH_DEFAULTS = dict(layer_scale=None, layer_scale_conv=None, mlp_ratio=4.)
FLAGS = ('fit_window', 'norm_eval', 'with_cp', 'fast_paths')


def did_you_mean(name, valid):
    """"did you mean 'x'? Valid: a, b, c" for an unknown ``name`` among ``valid``."""
    valid = list(valid)
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ''
    return f'{hint}Valid: {", ".join(valid)}'


def check_arch(arch, presets):
    """The full arch dict (:data:`ARCH_REQUIRED` and :data:`ARCH_DEFAULTS` keys, checked) of a
    preset name in ``presets`` or of an arch dict."""
    if isinstance(arch, str):
        if arch not in presets:
            raise ConfigError('arch', arch, 'no such MambaVision arch', did_you_mean(arch, presets))
        arch = presets[arch]
    elif not isinstance(arch, dict):
        raise ConfigError('arch', repr(arch), f'must be a preset name or a dict, not a '
                          f'{type(arch).__name__}', did_you_mean('', presets))
    missing = [k for k in ARCH_REQUIRED if k not in arch]
    if missing:
        raise ConfigError('arch', arch, f'missing keys {missing}',
                          f'an arch dict needs {", ".join(ARCH_REQUIRED)}')
    valid = ARCH_REQUIRED + tuple(ARCH_DEFAULTS)
    for key in arch:
        if key not in valid:
            raise ConfigError('arch key', key, 'unknown', did_you_mean(key, valid))
    cfg = dict(ARCH_DEFAULTS, **arch)
    for key in ('dim', 'in_dim'):
        _check(key, cfg[key], _is_int(cfg[key]) and cfg[key] >= 1, 'must be an int >= 1')
    cfg['depths'] = _four_ints('depths', cfg['depths'])
    cfg['num_heads'] = heads = _four_ints('num_heads', cfg['num_heads'])
    for i in range(2, NUM_STAGES):  # the hybrid stages: heads split the channels
        channels = cfg['dim'] * 2**i
        _check('num_heads', heads, channels % heads[i] == 0,
               f'{heads[i]} heads do not divide the {channels} channels of stage {i}')
    for key in ('layer_scale', 'layer_scale_conv'):
        _check(key, cfg[key], cfg[key] is None or _is_positive(cfg[key]),
               'must be None (no layer scale) or a number > 0')
    _check('mlp_ratio', cfg['mlp_ratio'], _is_positive(cfg['mlp_ratio']), 'must be a number > 0')
    return cfg


def check_options(arch, presets, out_indices, window_size, drop_path_rate, frozen_stages,
                  **flags):
    """Checked (arch dict, out_indices tuple, window_size tuple) of MambaVision's arguments;
    ``flags`` are the boolean options (:data:`FLAGS`)."""
    cfg = check_arch(arch, presets)
    last = NUM_STAGES - 1
    if isinstance(out_indices, int) or not hasattr(out_indices, '__iter__'):
        raise ConfigError('out_indices', out_indices, 'must be a sequence of stage numbers',
                          f'e.g. (0, 1, 2, {last})')
    out_indices = tuple(out_indices)
    _check('out_indices', out_indices, len(out_indices) > 0, 'names no stage',
           f'give at least one stage in 0..{last}')
    for i in out_indices:
        _check('out_indices', out_indices, _is_int(i) and 0 <= i <= last,
               f'entries must be stage numbers in 0..{last}, got {i!r}')
    window_size = _four_ints('window_size', window_size,
                             ' (a side per stage; stages 0 and 1 ignore theirs)')
    _check('drop_path_rate', drop_path_rate,
           isinstance(drop_path_rate, Real) and 0 <= drop_path_rate < 1,
           'must be a number in [0, 1)')
    _check('frozen_stages', frozen_stages,
           _is_int(frozen_stages) and -1 <= frozen_stages <= NUM_STAGES,
           f'must be an int in -1..{NUM_STAGES} (-1: nothing frozen, k: the stem and stages '
           '0..k-1)')
    for name, value in flags.items():
        _check(name, value, isinstance(value, bool), 'must be True or False')
    return cfg, out_indices, window_size


def _check(name, value, ok, why, todo=None):
    if not ok:
        raise ConfigError(name, value, why, todo)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive(value):
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) \
        and value > 0


def _four_ints(name, value, detail=''):
    """``value`` as a tuple of NUM_STAGES ints >= 1."""
    values = tuple(value) if isinstance(value, (list, tuple)) else (value, )
    _check(name, value, len(values) == NUM_STAGES and all(_is_int(v) and v >= 1 for v in values),
           f'must be {NUM_STAGES} ints >= 1{detail}')
    return values
