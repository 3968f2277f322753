"""Make a GPU config runnable on this machine.

Without CUDA, :func:`adapt_to_device` makes these changes to a config, each logged:

- distributed runs use the ``gloo`` backend (NCCL needs GPUs), and the model is wrapped by
  :class:`CPUDistributedDataParallel` (mmengine passes GPU ``device_ids`` that CPU DDP refuses);
  :func:`mmmv.engine.build_runner` starts the process group itself, since mmengine's launcher
  code calls ``torch.cuda.set_device`` (:mod:`mmmv.engine.distributed`);
- ``SyncBN`` layers become ``BN`` (PyTorch's SyncBatchNorm runs on GPUs only); in a multi-process
  CPU run each process then normalises over its own batch;
- ``AmpOptimWrapper`` (fp16 + loss scaling, CUDA only in mmengine) becomes
  :class:`~mmmv.engine.amp.CPUAutocastOptimWrapper`: bfloat16 autocast.
"""
import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from mmengine.model import MMDistributedDataParallel

SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')


class CPUDistributedDataParallel(MMDistributedDataParallel):
    """MMDistributedDataParallel for modules on the CPU: ignores GPU ``device_ids``."""

    def __init__(self, module, device_ids=None, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)


def _replace_sync_bn(node) -> int:
    """Turn every ``norm_cfg`` of a SyncBN type into BN in place; returns how many changed."""
    changed = 0
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = 'BN'
            changed += 1
        for value in node.values():
            changed += _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            changed += _replace_sync_bn(value)
    return changed


def adapt_to_device(cfg: Config, cuda_available=None) -> Config:
    """Make a GPU config runnable on this machine (no-op when CUDA is available). Idempotent."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if cuda_available:
        return cfg
    logger = MMLogger.get_current_instance()
    if cfg.get('env_cfg', {}).get('dist_cfg') is not None:
        cfg.env_cfg.dist_cfg.backend = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(type='MMDistributedDataParallel')
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        cfg.model_wrapper_cfg = ConfigDict(wrapper, type='CPUDistributedDataParallel')
    if _replace_sync_bn(cfg.model):
        logger.info('No CUDA: SyncBN layers of the model run as BN.')
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is not None and optim_wrapper.get('type') == 'AmpOptimWrapper':
        optim_wrapper.type = 'CPUAutocastOptimWrapper'
        optim_wrapper.pop('dtype', None)
        logger.info('No CUDA: mixed precision runs as bfloat16 CPU autocast.')
    return cfg
