"""Clear errors for bad input: missing dataset folders, unreadable image files, checkpoints of
another model.

- :func:`check_dataset_paths` runs before a tool builds anything (a few ``os.stat`` calls): the
  ``data_root``, annotation files and image / label folders of the dataloaders a tool will use
  must exist; the error names the missing path and the config key, and says how to make the demo
  data or where COCO / ADE20K go.
- :func:`name_bad_files` wraps a dataset's pipeline so that a sample that fails to load raises
  :class:`DataFileError` naming the file that is missing, empty or cannot be decoded. Nothing is
  checked while loading succeeds; the diagnosis runs only on the error path.
- :func:`checkpoint_mismatches` / :func:`check_checkpoint_fits` compare a checkpoint's tensors with
  a model's; :class:`CheckpointMismatchError` lists the keys and shapes that differ.
"""
import os
import os.path as osp
from typing import Dict, Iterable, List, Sequence, Tuple

import torch

DEMO_HINT = ('The demo configs read the synthetic data that `python tools/make_demo_data.py` '
             'writes to ./data/demo (`make demo` makes it too); run the tools from the folder '
             'that holds data/ (the repository root).')
DATASET_HINTS = {
    'mmdet': 'COCO 2017 goes to data/coco/{train2017,val2017,annotations} (annotations/'
             'instances_{train,val}2017.json).',
    'mmseg': 'ADE20K goes to data/ade/ADEChallengeData2016/{images,annotations}/'
             '{training,validation}.',
}
IMAGE_KEYS = ('img_path', 'seg_map_path')
MAX_LISTED = 10


class DataFileError(RuntimeError):
    """A sample's file is missing, empty or not a decodable image."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model (another arch, another number of classes)."""


# ------------------------------------------------------------------------ dataset paths
def _is_remote(path: str) -> bool:
    return '://' in path


def _join(root, path):
    if not path or root is None or osp.isabs(path) or _is_remote(path):
        return path
    return osp.join(root, path)


def _leaf_datasets(dataset_cfg) -> Iterable[dict]:
    """The datasets inside wrappers (ConcatDataset, RepeatDataset, ClassBalancedDataset, ...)."""
    if not isinstance(dataset_cfg, dict):
        return
    if isinstance(dataset_cfg.get('datasets'), (list, tuple)):
        for sub in dataset_cfg['datasets']:
            yield from _leaf_datasets(sub)
    elif isinstance(dataset_cfg.get('dataset'), dict):
        yield from _leaf_datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def _hint(task) -> str:
    return ' '.join([DEMO_HINT] + ([DATASET_HINTS[task]] if task in DATASET_HINTS else
                                   list(DATASET_HINTS.values())))


def _missing(path, what, key, task, cwd) -> FileNotFoundError:
    where = '' if osp.isabs(path) else f' (relative to the working directory {cwd})'
    return FileNotFoundError(f"{what} '{path}' of {key} does not exist{where}. {_hint(task)}")


def check_dataset_paths(cfg, loaders: Sequence[str] = ('train_dataloader', ),
                        evaluators: Sequence[str] = ()) -> None:
    """Raise FileNotFoundError naming the first missing dataset path of ``cfg``.

    For each dataset of the named dataloaders: ``data_root``, then ``ann_file`` and each
    ``data_prefix`` folder (joined to ``data_root`` as mmengine's BaseDataset joins them); for
    each named evaluator its ``ann_file`` (COCO metrics). Remote paths (``s3://`` ...) and unset
    entries are skipped. Costs one ``os.stat`` per path.
    """
    task = cfg.get('default_scope')
    cwd = os.getcwd()
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not isinstance(loader_cfg, dict):
            continue
        for dataset in _leaf_datasets(loader_cfg.get('dataset')):
            root = dataset.get('data_root')
            if root and not _is_remote(root) and not osp.isdir(root):
                raise _missing(root, 'data_root', f'{loader}.dataset', task, cwd)
            ann_file = _join(root, dataset.get('ann_file') or '')
            if ann_file and not _is_remote(ann_file) and not osp.isfile(ann_file):
                raise _missing(ann_file, 'annotation file', f'{loader}.dataset.ann_file', task,
                               cwd)
            for name, prefix in (dataset.get('data_prefix') or {}).items():
                folder = _join(root, prefix) if isinstance(prefix, str) else None
                if folder and not _is_remote(folder) and not osp.isdir(folder):
                    raise _missing(folder, 'folder', f'{loader}.dataset.data_prefix.{name}', task,
                                   cwd)
    for evaluator in evaluators:
        metrics = cfg.get(evaluator)
        for metric in metrics if isinstance(metrics, (list, tuple)) else [metrics]:
            ann_file = metric.get('ann_file') if isinstance(metric, dict) else None
            if ann_file and not _is_remote(ann_file) and not osp.isfile(ann_file):
                raise _missing(ann_file, 'annotation file', f'{evaluator}.ann_file', task, cwd)


# ------------------------------------------------------------------------ sample files
def _sample_files(results) -> Dict[str, str]:
    """The file paths a sample names (img_path, seg_map_path, ...)."""
    if not isinstance(results, dict):
        return {}
    return {k: v for k, v in results.items()
            if isinstance(v, str) and (k.endswith('_path') or k == 'filename')}


def _diagnose(files: Dict[str, str]) -> List[str]:
    """Why each bad file of a failed sample is bad (empty list: the files look fine)."""
    import mmcv
    problems = []
    for key, path in files.items():
        if _is_remote(path):
            continue
        if not osp.exists(path):
            problems.append(f"{key} '{path}' does not exist")
        elif osp.isfile(path) and osp.getsize(path) == 0:
            problems.append(f"{key} '{path}' is empty (0 bytes)")
        elif key in IMAGE_KEYS and osp.isfile(path):
            try:
                with open(path, 'rb') as f:
                    decoded = mmcv.imfrombytes(f.read(), flag='unchanged')
            except Exception:  # cv2 / PIL / turbojpeg errors alike
                decoded = None
            if decoded is None:
                problems.append(f"{key} '{path}' cannot be decoded as an image "
                                '(corrupt, truncated or not an image)')
    return problems


class FileNamingPipeline:
    """A dataset pipeline whose loading errors name the sample's bad file.

    Calls the wrapped pipeline unchanged. When it raises, the sample's files (``img_path``,
    ``seg_map_path``, ...) are checked; a missing, empty or undecodable one turns the error into
    :class:`DataFileError` naming it (the original error chained). Otherwise the original error
    is re-raised with the sample's files added as a note. Other attributes (``transforms``)
    are the wrapped pipeline's.
    """

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def __call__(self, results):
        files = _sample_files(results)
        try:
            return self.pipeline(results)
        except Exception as err:
            problems = _diagnose(files)
            if problems:
                raise DataFileError(
                    'bad file in the dataset: ' + '; '.join(problems) +
                    f' (loading it raised {type(err).__name__}: {err})') from err
            if files and hasattr(err, 'add_note'):
                err.add_note('while loading the sample ' +
                             ', '.join(f'{k}={v!r}' for k, v in files.items()))
            raise

    def __getattr__(self, name):
        if name.startswith('__') or name == 'pipeline':
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self):
        return f'FileNamingPipeline({self.pipeline!r})'


def name_bad_files(dataset) -> int:
    """Wrap the pipeline of ``dataset`` (and of the datasets inside wrappers) in
    :class:`FileNamingPipeline`; returns how many pipelines were wrapped. Idempotent."""
    wrapped = 0
    for sub in getattr(dataset, 'datasets', None) or []:
        wrapped += name_bad_files(sub)
    inner = getattr(dataset, 'dataset', None)
    if inner is not None and inner is not dataset:
        wrapped += name_bad_files(inner)
    pipeline = getattr(dataset, 'pipeline', None)
    if callable(pipeline) and not isinstance(pipeline, FileNamingPipeline):
        dataset.pipeline = FileNamingPipeline(pipeline)
        wrapped += 1
    return wrapped


# ------------------------------------------------------------------------ checkpoints
def _strip(state: Dict, prefix='module.') -> Dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def checkpoint_mismatches(model_state: Dict, checkpoint_state: Dict
                          ) -> Tuple[List[Tuple[str, tuple, tuple]], List[str], List[str]]:
    """``(shape_mismatches, missing, unexpected)`` between a model's and a checkpoint's state.

    shape_mismatches: ``(key, checkpoint shape, model shape)``; missing: model keys absent from
    the checkpoint; unexpected: checkpoint keys the model does not have. DDP's ``module.`` prefix
    is ignored.
    """
    checkpoint_state = _strip(checkpoint_state)
    shapes = [(k, tuple(v.shape), tuple(model_state[k].shape))
              for k, v in checkpoint_state.items()
              if k in model_state and isinstance(v, torch.Tensor)
              and tuple(v.shape) != tuple(model_state[k].shape)]
    missing = [k for k in model_state if k not in checkpoint_state]
    unexpected = [k for k in checkpoint_state if k not in model_state]
    return shapes, missing, unexpected


def _listing(items: List[str]) -> str:
    more = f' ... and {len(items) - MAX_LISTED} more' if len(items) > MAX_LISTED else ''
    return '; '.join(items[:MAX_LISTED]) + more


def describe_mismatch(name, shapes, missing, unexpected=()) -> str:
    parts = []
    if shapes:
        parts.append(f'{len(shapes)} tensors differ in shape: ' + _listing(
            [f'{k}: checkpoint {c}, model {m}' for k, c, m in shapes]))
    if missing:
        parts.append(f'{len(missing)} model tensors are not in the checkpoint: ' +
                     _listing(list(missing)))
    if unexpected:
        parts.append(f'{len(unexpected)} checkpoint tensors are not in the model: ' +
                     _listing(list(unexpected)))
    return (f'checkpoint {name} does not fit the model (made for another arch, neck or number '
            'of classes?): ' + ' | '.join(parts))


def unwrap_model(model):
    """The model whose state dict a checkpoint holds: without DDP wrappers and TTA models (as
    mmengine's ``load_state_dict`` unwraps them)."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def check_checkpoint_fits(model, checkpoint: Dict, name: str, allow_missing=False) -> None:
    """Raise :class:`CheckpointMismatchError` when a tensor of ``checkpoint`` (an mmengine
    checkpoint dict or a plain state dict) has another shape than the model's, or (unless
    ``allow_missing``) a model tensor is missing from it."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    shapes, missing, _ = checkpoint_mismatches(unwrap_model(model).state_dict(), state)
    missing = [] if allow_missing else missing
    if shapes or missing:
        raise CheckpointMismatchError(describe_mismatch(name, shapes, missing))


def load_checkpoint_exact(model, filename, map_location='cpu', strict=False, logger=None,
                          revise_keys=((r'^module\.', ''), )):
    """mmengine's ``load_checkpoint`` (same arguments), but a checkpoint that does not fit the
    model raises :class:`CheckpointMismatchError` instead of loading partially with a warning.
    Reads the file through mmengine's loaders, i.e. mmmv's safe loader."""
    from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model
    checkpoint = _load_checkpoint(filename, map_location=map_location, logger=logger)
    check_checkpoint_fits(model, checkpoint, repr(filename))
    return _load_checkpoint_to_model(model, checkpoint, strict, logger, list(revise_keys))
