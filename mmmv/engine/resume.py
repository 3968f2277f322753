"""Which checkpoint ``--resume`` (auto) continues from."""
import glob
import logging
import os.path as osp
import re

from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint

CHECKPOINT_NAME = re.compile(r'(iter|epoch)_(\d+)\.pth')


def find_resume_checkpoint(work_dir: str):
    """The checkpoint that ``last_checkpoint`` names (mmengine's ``find_latest_checkpoint``);
    when that file is missing or names a file that is gone, the newest ``iter_*.pth`` /
    ``epoch_*.pth`` in ``work_dir``; None when there is none."""
    named = find_latest_checkpoint(work_dir) if osp.isdir(work_dir) else None
    if named and osp.isfile(named):
        return named
    found = []
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        match = CHECKPOINT_NAME.fullmatch(osp.basename(path))
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
