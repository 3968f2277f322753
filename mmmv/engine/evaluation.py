"""What ``tools/test.py``'s flags change in a config (mmdet's and mmseg's flag names)."""
from mmengine.config import Config, ConfigDict

from ..errors import ConfigError
from .config import task_of


def enable_inference_preparation(cfg: Config):
    """What ``tools/test.py`` always does: the model prepared for inference once, before the
    test loop (:class:`~mmmv.engine.hooks.PrepareInferenceHook`: MambaVision's BatchNorm folded
    into its convs, segmentation logits channels-last)."""
    cfg.custom_hooks = [*cfg.get('custom_hooks', []), ConfigDict(type='PrepareInferenceHook')]


def enable_visualization(cfg: Config, show_dir=None, show=False, wait_time=2.0):
    """The ``--show`` / ``--show-dir`` flags, as mmdet's and mmseg's test tools set them.

    Detection pictures go to ``show_dir/<image name>``; segmentation pictures to
    ``show_dir/vis_data/vis_image/`` (mmseg's visualizer layout), one per test image.
    """
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ConfigError("--show/--show-dir need a 'visualization' entry in default_hooks")
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
            raise ConfigError(f'--out must end with .pkl or .pickle for detection, got {out!r}')
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [
            cfg.test_evaluator]
        cfg.test_evaluator = [*evaluators, ConfigDict(type='DumpDetResults', out_file_path=out)]
    else:
        cfg.test_evaluator.output_dir = out


def enable_tta(cfg: Config):
    """The ``--tta`` flag: wrap the model in the config's ``tta_model`` with its
    ``tta_pipeline``."""
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise ConfigError('--tta needs tta_model and tta_pipeline in the config')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
