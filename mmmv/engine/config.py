"""Read a config the way every tool does: the work dir, mmmv's hooks, the device adaptation."""
import os.path as osp

from mmengine.config import Config, ConfigDict

from ..errors import ConfigError, UserError, check_file
from ..models import check_backbone_cfg
from .device import adapt_to_device

TASKS = ('mmdet', 'mmseg')
CONFIG_SUFFIXES = ('.py', '.json', '.yaml', '.yml')  # what mmengine's Config.fromfile reads
# added to custom_hooks by load_config unless the config lists them already
RELIABILITY_HOOKS = ('FiniteLossHook', 'RNGStateHook', 'CheckpointFitHook')


def task_of(cfg: Config) -> str:
    """'mmdet' or 'mmseg', from the config's ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ConfigError(f"config default_scope must be one of {TASKS} to choose the task, "
                          f"got {scope!r}")
    return scope


def _hook_name(hook) -> str:
    kind = hook.get('type') if isinstance(hook, dict) else type(hook)
    return (kind if isinstance(kind, str) else getattr(kind, '__name__', '')).split('.')[-1]


def add_reliability_hooks(cfg: Config) -> Config:
    """Add :data:`RELIABILITY_HOOKS` to ``cfg.custom_hooks`` (each unless listed already) and
    use :class:`~mmmv.engine.hooks.CrashSafeCheckpointHook` for mmengine's ``CheckpointHook``."""
    hooks = list(cfg.get('custom_hooks') or [])
    present = {_hook_name(hook) for hook in hooks}
    hooks += [ConfigDict(type=name) for name in RELIABILITY_HOOKS if name not in present]
    cfg.custom_hooks = hooks
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint')
    if isinstance(checkpoint, dict) and _hook_name(checkpoint) == 'CheckpointHook':
        checkpoint.type = 'CrashSafeCheckpointHook'
    return cfg


def check_config_file(path: str) -> str:
    """``path`` if it is a readable config file mmengine can read, else a UserError naming it."""
    todo = 'Give a config file, e.g. configs/det/demo_cascade_mambavision_t.py'
    check_file(path, 'config file', todo)
    if not path.endswith(CONFIG_SUFFIXES):
        raise UserError('config file', path, 'is not a config: mmengine reads '
                        f'{", ".join(CONFIG_SUFFIXES)} files', todo)
    return path


def load_config(path: str, cfg_options=None, work_dir=None, launcher='none') -> Config:
    """Read a config and apply the command-line settings every tool shares.

    The work dir is, by priority, ``work_dir``, the config's own ``work_dir``, then
    ``./work_dirs/<config name>``, as in mmdet's and mmseg's tools. mmmv's reliability hooks are
    added (:func:`add_reliability_hooks`) and the config is made runnable on this machine
    (:func:`~mmmv.engine.device.adapt_to_device`).
    """
    check_config_file(path)
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    backbone = (cfg.get('model') or {}).get('backbone')
    if isinstance(backbone, dict):
        check_backbone_cfg(backbone)  # unknown keys and bad values named before anything is built
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    task_of(cfg)
    add_reliability_hooks(cfg)
    return adapt_to_device(cfg)
