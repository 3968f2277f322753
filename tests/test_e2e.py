"""End-to-end runs of the command-line tools on freshly generated demo data (marked slow)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize('config,keys', [(DET, ('coco/bbox_mAP', 'coco/segm_mAP')),
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
        assert isinstance(value, float) and (0 <= value <= 1 if key.startswith('coco') else
                                             0 <= value <= 100)
    assert len(list(show_dir.rglob('*.png'))) == 4


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
