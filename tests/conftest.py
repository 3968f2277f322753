"""Session-wide check: a test run leaves no files behind outside temporary folders.

Before the first test and after the last one, the files under the repository (and under
~/.cache/mmmv) are listed; a file that appeared in between fails the session with its path.
Tests must write into ``tmp_path`` (tools: ``--work-dir`` / ``cwd`` in a temporary folder).
What installing and importing legitimately create is not counted: .venv/, build/, *.egg-info/,
__pycache__/, .pytest_cache/, the compiled extension mmmv/ops/*.so, and ~/.cache/mmmv's wheel
cache and build log. Set MMMV_CHECK_LEFTOVERS=0 to skip the check (e.g. while other people
write into the same checkout).
"""
import fnmatch
import os
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CACHE = osp.join(osp.expanduser('~'), '.cache', 'mmmv')
SKIPPED_DIRS = ('.git', '.venv', 'venv', '__pycache__', '.pytest_cache', '*.egg-info', '.eggs')
SKIPPED_TOP_DIRS = ('build', )
SKIPPED_FILES = ('*.pyc', '.coverage', '.coverage.*')
SKIPPED_PATHS = ('mmmv/ops/*.so', )
SKIPPED_IN_CACHE = ('wheels', 'build_mmcv.log')


def _skipped(name, patterns):
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _files(root, top_skips=()):
    found = set()
    if not osp.isdir(root):
        return found
    for folder, dirs, files in os.walk(root):
        rel = osp.relpath(folder, root)
        dirs[:] = [d for d in dirs if not _skipped(d, SKIPPED_DIRS) and
                   not (rel == '.' and d in top_skips)]
        for name in files:
            if rel == '.' and name in top_skips:
                continue
            path = osp.normpath(osp.join(rel, name))
            if not _skipped(name, SKIPPED_FILES) and not _skipped(path, SKIPPED_PATHS):
                found.add(path)
    return found


def snapshot():
    """Files of the repository and of ~/.cache/mmmv, less what installing creates."""
    return ({osp.join(ROOT, p) for p in _files(ROOT, SKIPPED_TOP_DIRS)} |
            {osp.join(CACHE, p) for p in _files(CACHE, SKIPPED_IN_CACHE)})


@pytest.fixture(scope='session', autouse=True)
def no_files_left_behind():
    if os.environ.get('MMMV_CHECK_LEFTOVERS', '1') == '0':
        yield
        return
    before = snapshot()
    yield
    new = sorted(snapshot() - before)
    if new:
        listed = '\n  '.join(new[:30]) + (f'\n  ... and {len(new) - 30} more'
                                          if len(new) > 30 else '')
        pytest.fail(f'the tests left {len(new)} new files outside temporary folders (write into '
                    f'tmp_path instead):\n  {listed}', pytrace=False)


@pytest.fixture(scope='module')
def one_thread():
    """For modules of tiny-input tests: intra-op threads only add overhead (a lot on a busy
    machine). Use with ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
