"""Clear errors for bad input data: missing dataset folders, unreadable image files.

- :func:`check_dataset_paths` runs before a tool builds anything (a few ``os.stat`` calls): the
  ``data_root``, annotation files and image / label folders of the dataloaders a tool will use
  must exist; the error names the missing path and the config key, and says how to make the demo
  data or where COCO / ADE20K go.
- :func:`name_bad_files` wraps a dataset's pipeline so that a sample that fails to load raises
  :class:`DataFileError` naming the file that is missing, empty or cannot be decoded. Nothing is
  checked while loading succeeds; the diagnosis runs only on the error path.
- :func:`read_image_file` reads a tool's input image, or names it and says what is wrong.
"""
import os
import os.path as osp
from typing import Dict, Iterable, List, Sequence

from .errors import UserError, check_file, looks_like

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
# what read_image_file offers in its advice (OpenCV reads these)
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
MAX_LISTED = 10


class DataFileError(UserError, RuntimeError):
    """A sample's file is missing, empty or not a decodable image."""


class DatasetPathError(UserError, FileNotFoundError):
    """A dataset path of the config (data_root, ann_file, data_prefix folder) does not exist."""


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


def _missing(path, what, key, task, cwd) -> DatasetPathError:
    where = '' if osp.isabs(path) else f' (relative to the working directory {cwd})'
    return DatasetPathError(f"{what} '{path}' of {key} does not exist{where}. {_hint(task)}")


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


# ------------------------------------------------------------------------ image files
def _decode(path: str, **kwargs):
    """The image file at ``path`` decoded by ``mmcv.imfrombytes(**kwargs)``, or None."""
    import mmcv
    try:
        with open(path, 'rb') as f:
            return mmcv.imfrombytes(f.read(), **kwargs)
    except Exception:  # cv2 / PIL / turbojpeg errors alike
        return None


def read_image_file(path: str, what: str = 'image'):
    """The image at ``path`` as an (H, W, 3) RGB uint8 array.

    Raises :class:`~mmmv.errors.UserError` naming ``path`` when it is missing, empty, a folder
    (saying whether it holds images, and naming one) or cannot be decoded (saying what the file
    looks like: a corrupt image, text, an archive ...).
    """
    todo = f'Give a {", ".join(s.lstrip(".").upper() for s in IMAGE_SUFFIXES)} image file'
    if osp.isdir(path):
        images = sorted(name for name in os.listdir(path) if name.lower().endswith(IMAGE_SUFFIXES))
        if not images:
            raise UserError(f'{what} folder', path, 'holds no images (' +
                            ', '.join(IMAGE_SUFFIXES) + ')', todo)
        raise UserError(what, path, f'is a folder of {len(images)} images, not an image file',
                        f"Give one image, e.g. '{osp.join(path, images[0])}'")
    check_file(path, what, todo)
    image = _decode(path, flag='color', channel_order='rgb')
    if image is None:
        kind = looks_like(path)
        why = (f'cannot be decoded: it starts like {kind} but is corrupt or truncated'
               if kind.endswith(' image') else f'is not an image: it looks like {kind}')
        raise UserError(what, path, why, todo)
    return image


# ------------------------------------------------------------------------ sample files
def _sample_files(results) -> Dict[str, str]:
    """The file paths a sample names (img_path, seg_map_path, ...)."""
    if not isinstance(results, dict):
        return {}
    return {k: v for k, v in results.items()
            if isinstance(v, str) and (k.endswith('_path') or k == 'filename')}


def _diagnose(files: Dict[str, str]) -> List[str]:
    """Why each bad file of a failed sample is bad (empty list: the files look fine)."""
    problems = []
    for key, path in files.items():
        if _is_remote(path):
            continue
        if not osp.exists(path):
            problems.append(f"{key} '{path}' does not exist")
        elif osp.isfile(path) and osp.getsize(path) == 0:
            problems.append(f"{key} '{path}' is empty (0 bytes)")
        elif key in IMAGE_KEYS and osp.isfile(path):
            if _decode(path, flag='unchanged') is None:
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

