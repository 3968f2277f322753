"""Run the same configs on one GPU, many GPUs or a CPU-only machine.

Without CUDA, :func:`adapt_to_device` makes these changes to a config, each logged:

- distributed runs use the ``gloo`` backend (NCCL needs GPUs), and the model is wrapped by
  :class:`CPUDistributedDataParallel` (mmengine passes GPU ``device_ids`` that CPU DDP refuses);
  :func:`build_runner` starts the process group itself, since mmengine's launcher code calls
  ``torch.cuda.set_device``;
- ``SyncBN`` layers become ``BN`` (PyTorch's SyncBatchNorm runs on GPUs only); in a multi-process
  CPU run each process then normalises over its own batch;
- ``AmpOptimWrapper`` (fp16 + loss scaling, CUDA only in mmengine) becomes
  :class:`CPUAutocastOptimWrapper`: bfloat16 autocast, which needs no loss scaling. mmcv's CPU
  kernels of NMS and RoI pooling take float32 only; under CPU autocast they get float32 inputs.

:func:`load_config` also adds mmmv's reliability hooks (:mod:`mmmv.hooks`) to every config, and
:func:`build_runner` makes data-loading errors name the bad file (:mod:`mmmv.input_checks`).
"""
import functools
import glob
import logging
import os.path as osp
import re
from contextlib import contextmanager

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper

TASKS = ('mmdet', 'mmseg')
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')
# mmcv ops whose CPU kernels take float32 only: autograd Functions (module, class) and the
# nn.Modules around them (their outputs are cast back to the input's dtype)
MMCV_FLOAT32_FUNCTIONS = (('mmcv.ops.nms', 'NMSop'), ('mmcv.ops.nms', 'SoftNMSop'),
                          ('mmcv.ops.roi_align', 'RoIAlignFunction'),
                          ('mmcv.ops.roi_pool', 'RoIPoolFunction'))
MMCV_FLOAT32_MODULES = (('mmcv.ops.roi_align', 'RoIAlign'), ('mmcv.ops.roi_pool', 'RoIPool'))
# added to custom_hooks by load_config unless the config lists them already
RELIABILITY_HOOKS = ('FiniteLossHook', 'RNGStateHook', 'CheckpointFitHook')


def _same_dtype_output(forward):
    """A module ``forward(self, input, ...)`` whose output has ``input``'s dtype."""

    @functools.wraps(forward)
    def wrapped(self, input, *args, **kwargs):
        out = forward(self, input, *args, **kwargs)
        return out.to(input.dtype) if isinstance(out, torch.Tensor) else out

    return wrapped


def mmcv_ops_in_float32():
    """Run mmcv's NMS / RoIAlign / RoIPool in float32 under CPU autocast.

    Their CPU kernels reject bfloat16 ("expected scalar type Float but found BFloat16"), and
    autocast does not cast the inputs of custom autograd Functions. Each Function's ``forward``
    is wrapped in ``torch.amp.custom_fwd(device_type='cpu', cast_inputs=torch.float32)`` (a no-op
    without CPU autocast; backward gradients are cast back by autograd), and RoIAlign / RoIPool
    modules return their input's dtype, as mmdet's RoI extractors expect. Idempotent.
    """
    import importlib

    def find(module_name, name):
        try:
            return getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            return None

    for module_name, name in MMCV_FLOAT32_FUNCTIONS:
        function = find(module_name, name)
        if function is None or getattr(function.forward, '_mmmv_float32', False):
            continue
        forward = torch.amp.custom_fwd(function.__dict__['forward'].__func__, device_type='cpu',
                                       cast_inputs=torch.float32)
        forward._mmmv_float32 = True
        function.forward = staticmethod(forward)
    for module_name, name in MMCV_FLOAT32_MODULES:
        module = find(module_name, name)
        if module is None or getattr(module.forward, '_mmmv_float32', False):
            continue
        module.forward = _same_dtype_output(module.forward)
        module.forward._mmmv_float32 = True


class CPUAutocastOptimWrapper(OptimWrapper):
    """OptimWrapper that runs the forward pass under CPU autocast (bfloat16 by default).

    Accepts and ignores ``loss_scale`` so that an ``AmpOptimWrapper`` config converts in place.
    """

    def __init__(self, *args, dtype='bfloat16', loss_scale=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        mmcv_ops_in_float32()

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


class CPUDistributedDataParallel(MMDistributedDataParallel):
    """MMDistributedDataParallel for modules on the CPU: ignores GPU ``device_ids``."""

    def __init__(self, module, device_ids=None, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)


def task_of(cfg: Config) -> str:
    """'mmdet' or 'mmseg', from the config's ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f"config default_scope must be one of {TASKS} to choose the task, "
                         f"got {scope!r}")
    return scope


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
    """Make a GPU config runnable on this machine (no-op when CUDA is available)."""
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


def enable_amp(cfg: Config):
    """The ``--amp`` flag: fp16 with dynamic loss scaling (bf16 autocast on CPU)."""
    if cfg.optim_wrapper.get('type', 'OptimWrapper') not in ('AmpOptimWrapper',
                                                             'CPUAutocastOptimWrapper'):
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'


def enable_visualization(cfg: Config, show_dir=None, show=False, wait_time=2.0):
    """The ``--show`` / ``--show-dir`` flags, as mmdet's and mmseg's test tools set them.

    Detection pictures go to ``show_dir/<image name>``; segmentation pictures to
    ``show_dir/vis_data/vis_image/`` (mmseg's visualizer layout), one per test image.
    """
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError("--show/--show-dir need a 'visualization' entry in default_hooks")
    hook.draw = True
    if show:
        hook.show = True
        hook.wait_time = wait_time
    if show_dir:
        if task_of(cfg) == 'mmdet':
            hook.test_out_dir = show_dir
        else:
            # mmseg's hook draws every `interval`-th image (50 by default): draw them all
            cfg.visualizer.save_dir = show_dir
            hook.interval = 1


def enable_result_dump(cfg: Config, out: str):
    """The ``--out`` flag: mmdet dumps predictions to a pickle, mmseg writes prediction PNGs."""
    if task_of(cfg) == 'mmdet':
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must end with .pkl or .pickle for detection, got {out!r}')
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [
            cfg.test_evaluator]
        cfg.test_evaluator = [*evaluators, ConfigDict(type='DumpDetResults', out_file_path=out)]
    else:
        cfg.test_evaluator.output_dir = out
        cfg.test_evaluator.keep_results = True


def enable_tta(cfg: Config):
    """The ``--tta`` flag: wrap the model in the config's ``tta_model`` with its
    ``tta_pipeline``."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise ValueError('--tta needs tta_model and tta_pipeline in the config')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def init_cpu_distributed(cfg: Config):
    """Start the gloo process group of a ``torchrun`` launch on a machine without CUDA."""
    import torch.distributed as dist
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if launcher != 'pytorch':
        raise ValueError(f"launcher={launcher!r} needs CUDA; on a CPU use launcher='pytorch' "
                         '(torchrun, tools/dist_train.sh)')
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    dist_cfg.pop('backend', None)
    if 'timeout' in dist_cfg:
        from datetime import timedelta
        dist_cfg['timeout'] = timedelta(seconds=dist_cfg['timeout'])
    dist.init_process_group(backend='gloo', **dist_cfg)


def release_distributed():
    """Destroy the process group a run used (a no-op without one). Left to interpreter exit,
    gloo's threads are torn down unjoined and a rank can abort ("terminate called without an
    active exception") after its work has finished."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _hook_name(hook) -> str:
    kind = hook.get('type') if isinstance(hook, dict) else type(hook)
    return (kind if isinstance(kind, str) else getattr(kind, '__name__', '')).split('.')[-1]


def add_reliability_hooks(cfg: Config) -> Config:
    """Add :data:`RELIABILITY_HOOKS` to ``cfg.custom_hooks`` (each unless listed already) and
    use :class:`~mmmv.hooks.CrashSafeCheckpointHook` for mmengine's ``CheckpointHook``."""
    hooks = list(cfg.get('custom_hooks') or [])
    present = {_hook_name(hook) for hook in hooks}
    hooks += [ConfigDict(type=name) for name in RELIABILITY_HOOKS if name not in present]
    cfg.custom_hooks = hooks
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint')
    if isinstance(checkpoint, dict) and _hook_name(checkpoint) == 'CheckpointHook':
        checkpoint.type = 'CrashSafeCheckpointHook'
    return cfg


def find_resume_checkpoint(work_dir: str):
    """The checkpoint ``--resume`` (auto) continues from: the one ``last_checkpoint`` names, or,
    when that file is missing or names a file that is gone, the newest ``iter_*.pth`` /
    ``epoch_*.pth`` in ``work_dir``; None when there is none."""
    from mmengine.logging import print_log
    named = None
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and osp.isfile(named):
            return named
    found = []
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        match = re.fullmatch(r'(iter|epoch)_(\d+)\.pth', osp.basename(path))
        if match:
            found.append((match.group(1) == 'iter', int(match.group(2)), path))
    if not found:
        return None
    newest = max(found)[2]
    print_log(f'last_checkpoint names {named!r}, which does not exist; resuming from the newest '
              f'checkpoint in {work_dir}: {newest}' if named else
              f'no last_checkpoint in {work_dir}; resuming from {newest}', logger='current',
              level=logging.WARNING)
    return newest


def _dataloaders_naming_bad_files(build_dataloader):
    """Wrap ``Runner.build_dataloader`` so each dataset's pipeline names bad files on error.

    Done when the dataloader is built, before mmengine creates its iterator (and forks workers).
    """
    from .input_checks import name_bad_files

    @functools.wraps(build_dataloader)
    def build(dataloader, *args, **kwargs):
        loader = build_dataloader(dataloader, *args, **kwargs)
        if hasattr(loader, 'dataset'):
            name_bad_files(loader.dataset)
        return loader

    return build


def build_runner(cfg: Config):
    """The Runner the config asks for (``runner_type``) or mmengine's default.

    Its dataloaders' pipelines raise errors that name a missing, empty or corrupt file
    (:func:`mmmv.input_checks.name_bad_files`).
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    init_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.build_dataloader = _dataloaders_naming_bad_files(runner.build_dataloader)
    return runner


def load_config(path: str, cfg_options=None, work_dir=None, launcher='none') -> Config:
    """Read a config and apply the command-line settings every tool shares.

    The work dir is, by priority, ``work_dir``, the config's own ``work_dir``, then
    ``./work_dirs/<config name>``, as in mmdet's and mmseg's tools. mmmv's reliability hooks are
    added (:func:`add_reliability_hooks`).
    """
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    task_of(cfg)
    add_reliability_hooks(cfg)
    return adapt_to_device(cfg)


def add_runner_arguments(parser):
    """Add the flags ``tools/train.py`` and ``tools/test.py`` share (mmdet's / mmseg's names)."""
    from mmengine.config import DictAction
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle checkpoints fully (only for files you trust)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_runner_arguments(parser):
    """Parse, and export what the shared flags set: LOCAL_RANK, MMMV_UNSAFE_LOAD."""
    import os
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.unsafe_load:
        os.environ['MMMV_UNSAFE_LOAD'] = '1'
    return args
