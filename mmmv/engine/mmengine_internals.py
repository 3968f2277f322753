"""Every mmengine internal mmmv relies on, named here and nowhere else.

mmmv uses mmengine's public API except where a job has no public route. Each such use is an
:class:`Internal`: the private method it overrides or the private attribute it reads, what
relies on it, and a fingerprint of what was checked (mmengine 0.10.7): the source of a function
(sha256 of its dedented text) or the type of an attribute. :func:`changed_internals` lists the
ones that an installed mmengine has changed; ``tests/test_runtime.py`` fails naming them, so the
code that relies on one is reviewed before an mmengine upgrade is accepted.
"""
import dataclasses
import hashlib
import importlib
import inspect
import textwrap
from typing import List, Optional


@dataclasses.dataclass(frozen=True)
class Internal:
    """A private mmengine method or attribute that mmmv relies on.

    Args:
        path: dotted import path, e.g. 'mmengine.hooks.CheckpointHook._save_checkpoint_with_step'.
        used_by: what in mmmv relies on it, and how.
        source_sha256: for a function, the sha256 of its dedented source when it was checked.
        kind: for an attribute, the type it had when it was checked.
    """
    path: str
    used_by: str
    source_sha256: Optional[str] = None
    kind: Optional[type] = None


INTERNALS = (
    Internal('mmengine.hooks.CheckpointHook._save_checkpoint_with_step',
             'mmmv.engine.hooks.CrashSafeCheckpointHook overrides it (same arguments, same '
             'bookkeeping of keep_ckpt_ids / last_ckpt) to delete outdated checkpoints after the '
             'new one is written and to write last_checkpoint atomically',
             source_sha256='9b971b6cd3cc507da3041d5432ba5766d048eeebcf8b365df4417729c92d4763'),
    Internal('mmengine.hooks.CheckpointHook._save_checkpoint',
             'calls _save_checkpoint_with_step(runner, step, meta) for every periodic and last '
             'save, so the override sees all of them',
             source_sha256='087650c11b029688ed990d56d3d8249c11710f9c85defe6be50f4f6e74271e41'),
    Internal('mmengine.runner.IterBasedTrainLoop.run',
             'mmmv.engine.hooks.RNGStateHook: before_train runs before the loop replays the '
             'trained batches through next(self.dataloader_iterator), then draws the new ones '
             'from the same attribute',
             source_sha256='4ae70d98940dda6c7791c157fe07ebdf129cc3c3f59804a6051c9b60fc0c55ff'),
    Internal('mmengine.fileio.io.backend_instances',
             'mmmv.checkpoint.install_checkpoint_io clears the cached file backends so that '
             'the atomic local backend is used from then on',
             kind=dict),
)


def resolve(path: str):
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    parts = path.split('.')
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f'no module in {path!r}')


def source_sha256(function) -> str:
    """sha256 of a function's dedented source text."""
    return hashlib.sha256(textwrap.dedent(inspect.getsource(function)).encode()).hexdigest()


def changed_internals() -> List[str]:
    """One line per internal that the installed mmengine no longer has as checked."""
    changed = []
    for internal in INTERNALS:
        try:
            obj = resolve(internal.path)
        except (ImportError, AttributeError) as err:
            changed.append(f'{internal.path} is gone ({err}); used by {internal.used_by}')
            continue
        if internal.kind is not None and not isinstance(obj, internal.kind):
            changed.append(f'{internal.path} is a {type(obj).__name__}, not a '
                           f'{internal.kind.__name__}; used by {internal.used_by}')
        if internal.source_sha256 is not None and source_sha256(obj) != internal.source_sha256:
            changed.append(f'{internal.path} has changed; used by {internal.used_by}')
    return changed
