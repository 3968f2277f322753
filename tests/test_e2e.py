"""End-to-end runs of the command-line tools on freshly generated demo data (marked slow)."""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mmmv.visualization import GAP

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET = osp.join(ROOT, 'configs', 'det', 'demo_cascade_mambavision_t.py')
SEG = osp.join(ROOT, 'configs', 'seg', 'demo_upernet_mambavision_t.py')
FAST = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2']

pytestmark = pytest.mark.slow


def run_tool(cwd, *args, env=None):
    """Run a tool as a user would; returns its stdout (fails the test on a non-zero exit)."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    """A working directory whose data/demo holds a small demo dataset (4 validation images)."""
    root = tmp_path_factory.mktemp('demo')
    run_tool(root, osp.join(ROOT, 'tools', 'make_demo_data.py'), '--num-train', '8',
             '--num-val', '4')
    return root


@pytest.mark.parametrize('config,keys', [(DET, ('bbox/bbox_mAP', 'segm/segm_mAP',
                                                'bbox/circle_precision', 'segm/square_precision')),
                                         (SEG, ('mIoU', 'aAcc'))], ids=['det', 'seg'])
def test_train_then_test(demo_dir, config, keys):
    work_dir = demo_dir / ('work_' + osp.basename(config)[:-3])
    run_tool(demo_dir, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', str(work_dir),
             '--cfg-options', *FAST)
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    assert osp.isfile(checkpoint) and checkpoint.endswith('iter_2.pth')

    show_dir = work_dir / 'pictures'
    out = run_tool(demo_dir, osp.join(ROOT, 'tools', 'test.py'), config, checkpoint,
                   '--work-dir', str(work_dir), '--show-dir', str(show_dir))
    metrics = json.loads((work_dir / 'metrics.json').read_text())
    for key in keys:
        assert key in out
        value = metrics[key]
        assert isinstance(value, float) and (0 <= value <= 1 if '/' in key else
                                             0 <= value <= 100)
    assert len(list(show_dir.rglob('*.png'))) == 4


def test_demo_end_to_end(tmp_path):
    """tools/demo.py on 8 training and 4 validation images, 2 iterations per model: both splits
    tested, one picture per image where the report says, a contact sheet per split and task,
    and per-class numbers that agree with mmdet's / mmseg's own."""
    out = run_tool(tmp_path, osp.join(ROOT, 'tools', 'demo.py'), '--num-train', '8',
                   '--num-val', '4', '--cfg-options', *FAST)
    results = json.loads((tmp_path / 'work_dirs' / 'demo' / 'results.json').read_text())
    assert sorted(results) == ['det', 'seg']
    for task, result in results.items():
        assert result['iterations'] == 2 and result['train_seconds'] > 0
        for split, sheet in (('val', 'predictions.png'), ('val_random', 'predictions_random.png')):
            found = result['splits'][split]
            pictures = tmp_path / 'work_dirs' / 'demo' / task / (
                'pictures' if split == 'val' else 'pictures_random')
            assert found['pictures'] == str(pictures) and str(pictures) in out
            assert sorted(p.name for p in pictures.iterdir()) == [
                f'{i:06d}.png' for i in range(4)]
            assert found['sheet'] == str(pictures.parent / sheet) and found['sheet'] in out
            # pictures: ground truth | prediction at twice the 192-pixel images' size; sheet:
            # 4 of them at their own size, 3 per row
            assert cv2.imread(str(pictures / '000000.png')).shape[1] == 2 * 384 + GAP
            assert cv2.imread(found['sheet']).shape[1] == 3 * (2 * 192 + GAP) + 2 * GAP
    seg = results['seg']['splits']['val']
    assert seg['metrics']['mIoU'] == pytest.approx(np.nanmean(seg['IoU']), abs=0.02)
    assert 'background pixels predicted background' in out and 'bbox mAP' in out


def test_two_process_cpu_training(demo_dir):
    """torchrun with 2 processes on a CPU: gloo is chosen and SyncBN runs as BN."""
    work_dir = demo_dir / 'work_dist'
    run_tool(demo_dir, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                   '--master_port=29533', osp.join(ROOT, 'tools', 'train.py'), SEG,
                   '--launcher', 'pytorch', '--work-dir', str(work_dir), '--cfg-options', *FAST,
                   'model.backbone.with_cp=True', env={'OMP_NUM_THREADS': '1'})
    log = next(work_dir.glob('*/*.log')).read_text()
    assert 'Distributed training: True' in log
    assert "dist_cfg: {'backend': 'gloo'}" in log
    assert "model_wrapper_cfg = dict(type='CPUDistributedDataParallel')" in log
    assert (work_dir / 'iter_2.pth').is_file()


def _demo_checkpoint(config, path, edit):
    """Save the demo model of ``config`` (seeded random weights, changed by ``edit(model)``) with
    the dataset meta a training run stores; returns (path, dataset meta)."""
    import torch
    from mmengine.registry import init_default_scope

    from mmmv.engine import load_config, task_of
    cfg = load_config(config)
    init_default_scope(task_of(cfg))
    from mmengine.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    edit(model)
    meta = dict(classes=cfg.metainfo.classes, palette=[list(c) for c in cfg.metainfo.palette])
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': meta}}, path)
    return str(path), meta


def _read_rgb(path):
    import cv2
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(float)


def test_image_demo_draws_the_segmentors_prediction(demo_dir, tmp_path):
    """A checkpoint whose head says 'square' (class 2) everywhere: the drawing is the image
    blended with the square's palette colour at the given opacity (except where the class name
    is written)."""
    import torch

    def always_square(model):
        for head in (model.decode_head, model.auxiliary_head):
            torch.nn.init.zeros_(head.conv_seg.weight)
            head.conv_seg.bias.data = torch.tensor([0., 0., 10., 0.])

    checkpoint, meta = _demo_checkpoint(SEG, tmp_path / 'square.pth', always_square)
    image = demo_dir / 'data' / 'demo' / 'ade' / 'images' / 'validation' / '000000.jpg'
    out = tmp_path / 'drawn.png'
    run_tool(demo_dir, osp.join(ROOT, 'tools', 'image_demo.py'), SEG, checkpoint, str(image),
             '--out-file', str(out), '--opacity', '0.5', '--device', 'cpu')
    original, drawn = _read_rgb(image), _read_rgb(out)
    assert drawn.shape == original.shape
    expected = 0.5 * original + 0.5 * np.array(meta['palette'][2])
    close = (abs(drawn - expected) <= 1.5).all(axis=2)
    assert close.mean() > 0.9, close.mean()


def test_image_demo_draws_the_detectors_boxes_above_the_threshold(demo_dir, tmp_path):
    checkpoint, _ = _demo_checkpoint(DET, tmp_path / 'det.pth', lambda model: None)
    image = demo_dir / 'data' / 'demo' / 'coco' / 'val' / '000000.png'
    drawings = {}
    for threshold in ('0', '1.01'):
        out = tmp_path / f'drawn_{threshold}.png'
        run_tool(demo_dir, osp.join(ROOT, 'tools', 'image_demo.py'), DET, checkpoint, str(image),
                 '--out-file', str(out), '--score-thr', threshold, '--device', 'cpu')
        drawings[threshold] = _read_rgb(out)
    original = _read_rgb(image)
    assert (drawings['1.01'] == original).all()  # no score reaches 1.01: nothing drawn
    changed = (drawings['0'] != original).any(axis=2)
    assert changed.mean() > 0.01  # every prediction drawn: boxes and masks
