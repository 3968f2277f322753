"""Build the Runner a config asks for, with data-loading errors that name the bad file."""
import functools

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..env import require_mmcv_cuda_ops
from ..input_checks import name_bad_files
from .distributed import init_cpu_distributed


def _dataloaders_naming_bad_files(build_dataloader):
    """Wrap ``Runner.build_dataloader`` so each dataset's pipeline names bad files on error.

    Done when the dataloader is built, before mmengine creates its iterator (and forks workers).
    """

    @functools.wraps(build_dataloader)
    def build(dataloader, *args, **kwargs):
        loader = build_dataloader(dataloader, *args, **kwargs)
        if hasattr(loader, 'dataset'):
            name_bad_files(loader.dataset)
        return loader

    return build


def build_runner(cfg: Config):
    """The Runner the config asks for (``runner_type``) or mmengine's default.

    Starts the gloo process group of a CPU ``torchrun`` launch first
    (:func:`~mmmv.engine.distributed.init_cpu_distributed`). Its dataloaders' pipelines raise
    errors that name a missing, empty or corrupt file
    (:func:`mmmv.input_checks.name_bad_files`). A detection run on a GPU with an mmcv built
    without CUDA ops stops here, naming the fix (:func:`mmmv.env.require_mmcv_cuda_ops`).
    """
    require_mmcv_cuda_ops(task=cfg.get('default_scope'))
    init_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.build_dataloader = _dataloaders_naming_bad_files(runner.build_dataloader)
    return runner
