"""Check a backbone config before anything is built: :func:`check_backbone_cfg`."""
import inspect

from mmmv.errors import ConfigError

from .mambavision import ARCH_SETTINGS, MambaVision
from .nvidia_compat import nvidia_options
from .options import check_options, did_you_mean

BACKBONE_TYPES = ('MambaVision', 'MM_mamba_vision')


def _parameters(fn, skip=()):
    return [name for name, p in inspect.signature(fn).parameters.items()
            if p.kind is p.POSITIONAL_OR_KEYWORD and name not in skip]


OPTIONS = _parameters(MambaVision.__init__, skip=('self', ))  # MambaVision's keywords
NVIDIA_KEYWORDS = _parameters(nvidia_options)


def check_backbone_cfg(cfg):
    """Raise :class:`mmmv.errors.ConfigError` for what would stop a MambaVision backbone config
    from building: an unknown keyword (with the closest valid one), an unknown arch name, a value
    out of range (naming the limit). Configs of other backbone types pass unchecked.

    Args:
        cfg (dict): A backbone config: ``type`` 'MambaVision' or 'MM_mamba_vision' (with or
            without a registry scope such as 'mmdet.') and its keywords.
    """
    cfg = dict(cfg)
    kind = str(cfg.pop('type', 'MambaVision')).rsplit('.', 1)[-1]
    if kind not in BACKBONE_TYPES:
        return
    valid = OPTIONS if kind == 'MambaVision' else NVIDIA_KEYWORDS + [
        k for k in OPTIONS if k != 'arch']
    for key in cfg:
        if key not in valid:
            raise ConfigError(f'{kind} argument', key, 'unknown', did_you_mean(key, valid))
    if kind == 'MM_mamba_vision':
        missing = [k for k in NVIDIA_KEYWORDS[:4] if k not in cfg]
        if missing:
            raise ConfigError('MM_mamba_vision', ', '.join(missing), 'missing',
                              'NVIDIA\'s keywords dim, in_dim, depths and num_heads are required')
        cfg = nvidia_options(**cfg)
    args = inspect.signature(MambaVision.__init__).bind_partial(**cfg)
    args.apply_defaults()
    values = dict(args.arguments)
    values.pop('self', None)
    values.pop('init_cfg')
    check_options(values.pop('arch'), ARCH_SETTINGS, values.pop('out_indices'),
                  values.pop('window_size'), values.pop('drop_path_rate'),
                  values.pop('frozen_stages'), **values)

