"""Checkpoints: one load path for every file and URL.

Every checkpoint mmmv reads (backbone ``init_cfg`` Pretrained, ``load_from``, ``--resume``,
``tools/test.py CONFIG CHECKPOINT``, ``tools/image_demo.py``, ``tools/convert_checkpoint.py``)
goes through mmengine's ``CheckpointLoader`` with mmmv's local and http(s) schemes
(:mod:`.schemes`): URLs are downloaded once into torch hub's cache (:mod:`.download`), files are
read without running code and bad ones named (:mod:`.safe_load`). Backbone weights then pass one
key conversion (:mod:`.convert`) and one fit check (:mod:`.fit`). All errors are
:class:`CheckpointError` s with one-line messages.
"""
from .atomic import AtomicLocalBackend, atomic_write
from .convert import convert_backbone_state_dict, extract_state_dict
from .download import CheckpointDownloadError, cache_path, download_checkpoint
from .fit import (CheckpointMismatchError, check_checkpoint_fits, checkpoint_mismatches,
                  describe_mismatch, load_backbone_weights, load_checkpoint_exact, unwrap_model)
from .safe_load import (UNSAFE_ENV, CheckpointError, CheckpointNotFoundError,
                        UnsafeCheckpointError, load_checkpoint_file, safe_globals)
from .schemes import install_checkpoint_io, load_checkpoint

__all__ = [
    'AtomicLocalBackend', 'CheckpointDownloadError', 'CheckpointError',
    'CheckpointMismatchError', 'CheckpointNotFoundError', 'UNSAFE_ENV', 'UnsafeCheckpointError',
    'atomic_write', 'cache_path', 'check_checkpoint_fits', 'checkpoint_mismatches',
    'convert_backbone_state_dict', 'describe_mismatch', 'download_checkpoint',
    'extract_state_dict', 'install_checkpoint_io', 'load_backbone_weights', 'load_checkpoint',
    'load_checkpoint_exact', 'load_checkpoint_file', 'safe_globals', 'unwrap_model'
]
