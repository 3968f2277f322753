"""Mistakes at the command line get one line that names them, and exit status 2.

Each case of CASES is a row of README's "Mistakes at the command line" table: the tool runs as a
subprocess in a temporary folder on tiny inputs and must exit with status 2, print no traceback,
end with one ``error:`` line naming the offending file, key or value, and leave nothing
half-written behind (no output file, no work dir). The unit tests at the end check mmmv.errors
itself: the message format, MMMV_DEBUG=1, and that programming errors keep their tracebacks.
"""
import os
import os.path as osp
import pickle
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Sequence

import cv2
import numpy as np
import pytest
import torch

import _reliability_helpers as helpers
from mmmv.errors import UserError, check_file, cli_main, looks_like, one_line

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
DET = osp.join(ROOT, 'configs', 'det', 'demo_cascade_mambavision_t.py')
SEG = osp.join(ROOT, 'configs', 'seg', 'demo_upernet_mambavision_t.py')
UNSAFE_ADVICE = 'MMMV_UNSAFE_LOAD'
KEEP = 'not to be overwritten\n'


def write_inputs(root):
    """Bad (and a few good) inputs for the tools, in ``root``."""
    (root / 'notes.txt').write_text('shopping list: eggs, flour\n')
    cv2.imwrite(str(root / 'photo.png'), np.full((32, 32, 3), 128, np.uint8))
    (root / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4)
    (root / 'no_images').mkdir()
    (root / 'no_images' / 'readme.txt').write_text('the pictures are elsewhere\n')
    torch.save({'state_dict': {'weight': torch.zeros(64, 64)}, 'meta': {}}, root / 'good.pth')
    data = (root / 'good.pth').read_bytes()
    (root / 'half.pth').write_bytes(data[:len(data) // 2])
    (root / 'work').mkdir()
    torch.save({'state_dict': {}, 'meta': {}}, root / 'work' / 'iter_2.pth')
    (root / 'work' / 'last_checkpoint').write_text('work/iter_2.pth')
    torch.save({'state_dict': {}, 'payload': helpers.Marker('ran')}, root / 'evil.pth')
    (root / 'outputs').mkdir()
    (root / 'keep.txt').write_text(KEEP)


def run_tool(cwd, tool, *args, env=None):
    """Run tools/<tool> in ``cwd`` as a user would (MMMV_DEBUG unset); returns the process."""
    environ = {k: v for k, v in os.environ.items() if k not in ('MMMV_DEBUG', 'MMMV_UNSAFE_LOAD')}
    environ.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', **(env or {}))
    return subprocess.run([sys.executable, osp.join(TOOLS, tool), *map(str, args)], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=600)


def error_line(proc) -> str:
    """The one line a user mistake gets; fails unless the exit status is 2 and no traceback was
    printed."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert 'Traceback' not in out, out[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines, out[-3000:]
    line = lines[-1]
    # ours: "error: ..."; argparse's own checks: a usage line, then "PROG: error: ..."
    assert line.startswith('error: ') or ': error: ' in line, out[-3000:]
    return line


class Case(NamedTuple):
    """A row of README's table: ``tool args`` run in a folder of :func:`write_inputs`."""
    id: str
    tool: str
    args: Sequence[str]
    named: Sequence[str]             # what the error line must say
    absent: Sequence[str] = ()       # paths that must not exist afterwards
    unsaid: Sequence[str] = ()       # what the error line must not say


WORK_DIRS = ('work_dirs', )  # where train.py / test.py make their work dir by default
CASES = [
    # ---------------------------------------------------------------- image_demo.py
    Case('image_demo_text_file', 'image_demo.py',
         [DET, 'good.pth', 'notes.txt', '--out-file', 'outputs/out.png'],
         ["image 'notes.txt'", 'looks like text'], ['outputs/out.png']),
    Case('image_demo_corrupt_image', 'image_demo.py',
         [DET, 'good.pth', 'broken.png', '--out-file', 'outputs/out.png'],
         ["image 'broken.png'", 'PNG image but is corrupt or truncated'], ['outputs/out.png']),
    Case('image_demo_empty_image_folder', 'image_demo.py',
         [SEG, 'good.pth', 'no_images', '--out-file', 'outputs/out.png'],
         ["image folder 'no_images'", 'holds no images'], ['outputs/out.png']),
    Case('image_demo_missing_image', 'image_demo.py',
         [SEG, 'good.pth', 'holiday.jpg', '--out-file', 'outputs/out.png'],
         ["image 'holiday.jpg'", 'does not exist'], ['outputs/out.png']),
    Case('image_demo_missing_config', 'image_demo.py',
         ['configs/det/mine.py', 'good.pth', 'broken.png', '--out-file', 'outputs/out.png'],
         ["config file 'configs/det/mine.py'", 'does not exist'], ['outputs/out.png']),
    Case('image_demo_truncated_checkpoint', 'image_demo.py',
         [SEG, 'half.pth', 'photo.png', '--out-file', 'outputs/out.png'],
         ["checkpoint 'half.pth'", 'truncated'], ['outputs/out.png'], [UNSAFE_ADVICE]),
    # ---------------------------------------------------------------- test.py
    Case('test_truncated_checkpoint', 'test.py', [SEG, 'half.pth'],
         ["checkpoint 'half.pth'", 'truncated', 'Download or copy it again'], WORK_DIRS,
         [UNSAFE_ADVICE]),
    Case('test_checkpoint_folder', 'test.py', [SEG, 'work'],
         ["checkpoint 'work'", 'is a folder', "last_checkpoint names 'work/iter_2.pth'"],
         WORK_DIRS),
    Case('test_missing_checkpoint', 'test.py', [SEG, 'gone.pth'],
         ["checkpoint 'gone.pth'", 'does not exist'], WORK_DIRS),
    Case('test_missing_config', 'test.py', ['configs/seg/mine.py', 'good.pth'],
         ["config file 'configs/seg/mine.py'", 'does not exist'], WORK_DIRS),
    Case('test_config_is_a_folder', 'test.py', ['outputs', 'good.pth'],
         ["config file 'outputs'", 'is a folder'], WORK_DIRS),
    Case('test_unknown_backbone_key', 'test.py',
         [SEG, 'good.pth', '--cfg-options', 'model.backbone.archh=small'],
         ["'archh'", "did you mean 'arch'?"], WORK_DIRS),
    # ---------------------------------------------------------------- train.py
    Case('train_unknown_arch', 'train.py', [DET, '--cfg-options', 'model.backbone.arch=smal'],
         ["'smal'", "did you mean 'small'?"], WORK_DIRS),
    Case('train_out_indices_out_of_range', 'train.py',
         [SEG, '--cfg-options', 'model.backbone.out_indices=[0,1,2,4]'],
         ['out_indices', 'in 0..3', 'got 4'], WORK_DIRS),
    Case('train_missing_data', 'train.py', [SEG],
         ["data_root 'data/demo/ade'", 'tools/make_demo_data.py'], WORK_DIRS),
    Case('train_config_not_a_config', 'train.py', ['notes.txt'],
         ["config file 'notes.txt'", 'is not a config'], WORK_DIRS),
    # ---------------------------------------------------------------- get_flops.py
    Case('get_flops_three_sizes', 'get_flops.py', [SEG, '--shape', '512', '512', '3'],
         ["--shape '512 512 3'", 'it takes H W or one size']),
    Case('get_flops_too_small', 'get_flops.py', [SEG, '--shape', '16'],
         ["--shape '16'", 'at least 32']),
    Case('get_flops_missing_config', 'get_flops.py', ['upernet.py'],
         ["config file 'upernet.py'", 'does not exist']),
    # ---------------------------------------------------------------- convert_checkpoint.py
    Case('convert_text_file', 'convert_checkpoint.py', ['notes.txt', 'outputs/mv.pth'],
         ["checkpoint 'notes.txt'", 'is not a checkpoint: it is text'], ['outputs/mv.pth'],
         [UNSAFE_ADVICE, '--unsafe-load']),
    Case('convert_code_carrying_checkpoint', 'convert_checkpoint.py',
         ['evil.pth', 'outputs/mv.pth'],
         ["checkpoint 'evil.pth'", 'allow-list', '--unsafe-load'], ['outputs/mv.pth', 'ran']),
    Case('convert_missing_file', 'convert_checkpoint.py',
         ['mambavision_tiny_1k.pth.tar', 'outputs/mv.pth'],
         ["checkpoint 'mambavision_tiny_1k.pth.tar'", 'does not exist'], ['outputs/mv.pth']),
    Case('convert_unknown_arch', 'convert_checkpoint.py',
         ['good.pth', 'outputs/mv.pth', '--arch', 'tinny'],
         ["'tinny'", "did you mean 'tiny'?"], ['outputs/mv.pth']),
    Case('convert_output_is_a_folder', 'convert_checkpoint.py', ['good.pth', 'outputs'],
         ["output 'outputs'", 'is a folder']),
    # ---------------------------------------------------------------- make_demo_data.py
    Case('make_demo_data_no_images', 'make_demo_data.py', ['--out', 'd', '--num-train', '0'],
         ["--num-train '0'", 'at least 1'], ['d']),
    Case('make_demo_data_tiny_images', 'make_demo_data.py', ['--out', 'd', '--size', '16'],
         ["--size '16'", 'at least 32'], ['d']),
    Case('make_demo_data_out_is_a_file', 'make_demo_data.py',
         ['--out', 'keep.txt', '--num-train', '1', '--num-val', '1'],
         ["--out 'keep.txt'", 'is a file']),
    Case('make_demo_data_out_holds_other_files', 'make_demo_data.py',
         ['--out', 'no_images', '--num-train', '1', '--num-val', '1', '--size', '32'],
         ["--out 'no_images'", 'did not write']),
    # ---------------------------------------------------------------- export_onnx.py
    Case('export_onnx_too_small', 'export_onnx.py',
         [SEG, '--shape', '16', '--out', 'outputs/model.onnx'],
         ["--shape '16'", 'at least 32'], ['outputs/model.onnx']),
    Case('export_onnx_output_is_a_folder', 'export_onnx.py',
         [SEG, '--shape', '64', '--out', 'outputs'], ["--out 'outputs'", 'is a folder']),
    Case('export_onnx_missing_config', 'export_onnx.py',
         ['segformer.py', '--shape', '64', '--out', 'outputs/model.onnx'],
         ["config file 'segformer.py'", 'does not exist'], ['outputs/model.onnx']),
    # ---------------------------------------------------------------- benchmark.py
    Case('benchmark_no_images', 'benchmark.py', [SEG, '--batch', '0'],
         ["--batch '0'", 'must be an integer >= 1']),
    Case('benchmark_unknown_device', 'benchmark.py', [SEG, '--device', 'gpu0'],
         ["--device 'gpu0'", "expected 'cpu', 'cuda' or 'cuda:N'"]),
    Case('benchmark_truncated_checkpoint', 'benchmark.py', [SEG, 'half.pth', '--shape', '64',
                                                            '64'],
         ["checkpoint 'half.pth'", 'truncated']),
]
WORKERS = max(1, min(4, (os.cpu_count() or 1)))


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory, request):
    """``{case id: (folder, process)}`` for the selected CASES, each run in its own copy of the
    inputs. The runs start together, WORKERS at a time: each is a fresh Python that imports
    torch, mmdet and mmseg, seconds of CPU before it can find the mistake."""
    selected = {item.callspec.id for item in request.session.items
                if getattr(item, 'originalname', '') == 'test_mistake_gets_one_line'}
    template = tmp_path_factory.mktemp('cli_inputs')
    write_inputs(template)
    folders = {}
    for case in CASES:
        if case.id in selected:
            folders[case.id] = tmp_path_factory.mktemp(case.id)
            shutil.copytree(template, folders[case.id], dirs_exist_ok=True)
    with ThreadPoolExecutor(WORKERS) as pool:
        runs = {case.id: pool.submit(run_tool, folders[case.id], case.tool, *case.args)
                for case in CASES if case.id in folders}
    return {name: (folders[name], run.result()) for name, run in runs.items()}


@pytest.mark.parametrize('case', CASES, ids=[case.id for case in CASES])
def test_mistake_gets_one_line(outcomes, case):
    folder, proc = outcomes[case.id]
    line = error_line(proc)
    for text in case.named:
        assert text in line, line
    for text in case.unsaid:
        assert text not in line, line
    for path in case.absent:
        assert not (folder / path).exists(), f'{path} left behind: {line}'
    assert (folder / 'keep.txt').read_text() == KEEP
    assert sorted(os.listdir(folder / 'outputs')) == [], 'a file was written to outputs/'


def test_debug_shows_the_traceback(tmp_path):
    proc = run_tool(tmp_path, 'get_flops.py', 'upernet.py', env={'MMMV_DEBUG': '1'})
    assert proc.returncode != 0 and 'Traceback' in proc.stderr, proc.stderr[-3000:]
    assert "config file 'upernet.py'" in proc.stderr


# ------------------------------------------------------------------------ mmmv.errors
def test_message_format():
    err = UserError('config key', 'model.backbone.archh', 'unknown key.',
                    "Did you mean 'arch'?")
    assert str(err) == ("config key 'model.backbone.archh': unknown key. "
                        "Did you mean 'arch'?")
    assert str(UserError('image', 'a.png', 'is empty', 'Give an image')) == (
        "image 'a.png': is empty. Give an image.")
    assert str(UserError('image', 'a.png', 'is empty')) == "image 'a.png': is empty."
    assert str(UserError('a whole message')) == 'a whole message'


class MissingThing(UserError, FileNotFoundError):
    """A UserError that is also a FileNotFoundError (as mmmv's missing-file errors are)."""


def test_subclass_keeps_its_stdlib_type_and_pickles():
    err = MissingThing('config file', 'x.py', 'does not exist')
    assert isinstance(err, FileNotFoundError) and str(err) == "config file 'x.py': does not exist."
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is MissingThing and str(again) == str(err)


def test_one_line_drops_a_dataloader_workers_traceback():
    # how torch.utils.data re-raises a worker's exception: type(err)(message)
    message = ('Caught DataFileError in DataLoader worker process 0.\n'
               'Original Traceback (most recent call last):\n'
               '  File "x.py", line 1, in f\n    raise DataFileError(...)\n'
               "mmmv.input_checks.DataFileError: bad file: img_path 'a.jpg' is empty\n")
    assert one_line(UserError(message)) == "bad file: img_path 'a.jpg' is empty"
    assert one_line(UserError('two\n  lines')) == 'two lines'


def _raises(err):
    raise err


def test_cli_main_prints_one_line_and_exits_2(capsys, monkeypatch):
    monkeypatch.delenv('MMMV_DEBUG', raising=False)
    with pytest.raises(SystemExit) as info:
        cli_main(_raises, UserError('image', 'a.png', 'is empty'))
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: image 'a.png': is empty.\n"
    assert cli_main(lambda x: x + 1, 1) == 2


def test_cli_main_debug_reraises(monkeypatch):
    monkeypatch.setenv('MMMV_DEBUG', '1')
    with pytest.raises(UserError, match='a.png'):
        cli_main(_raises, UserError('image', 'a.png', 'is empty'))


def test_programming_errors_keep_their_traceback(monkeypatch):
    monkeypatch.delenv('MMMV_DEBUG', raising=False)
    with pytest.raises(TypeError, match='bug'):
        cli_main(_raises, TypeError('bug'))


def test_looks_like(tmp_path):
    cases = {
        'text': 'plain words\n'.encode(),
        'a PNG image': b'\x89PNG\r\n\x1a\n' + bytes(20),
        'a JPEG image': b'\xff\xd8\xff\xe0' + bytes(20),
        'a gzip archive': b'\x1f\x8b\x08' + bytes(20),
        'empty (0 bytes)': b'',
        'binary data of an unknown kind': bytes(range(1, 255)),
    }
    for kind, content in cases.items():
        path = tmp_path / 'f'
        path.write_bytes(content)
        assert looks_like(str(path)) == kind
    with zipfile.ZipFile(tmp_path / 'z', 'w') as z:
        z.writestr('a', 'b')
    assert looks_like(str(tmp_path / 'z')) == 'a zip archive'


def test_check_file(tmp_path):
    (tmp_path / 'empty').write_bytes(b'')
    (tmp_path / 'ok').write_text('x')
    assert check_file(str(tmp_path / 'ok'), 'config file') == str(tmp_path / 'ok')
    for name, why in (('gone', 'does not exist'), ('empty', 'is empty'), ('', 'is a folder')):
        with pytest.raises(UserError, match=why):
            check_file(str(tmp_path / name), 'config file', 'Give a config')
