"""The main job on the built-in demo data (`make demo`): make data, train, test, report.

For each demo config (Cascade Mask R-CNN and UperNet with MambaVision-T) it runs
``tools/train.py`` then ``tools/test.py --show-dir``, and finally prints bbox mAP, segm mAP, mIoU
and where the drawn predictions are.
"""
import argparse
import json
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
JOBS = {
    'det': 'configs/det/demo_cascade_mambavision_t.py',
    'seg': 'configs/seg/demo_upernet_mambavision_t.py',
}
HEADLINE = {'det': ('coco/bbox_mAP', 'coco/segm_mAP'), 'seg': ('mIoU', )}


def run(args):
    print('$ ' + ' '.join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def train_and_test(task, work_root, cfg_options):
    config = JOBS[task]
    work_dir = osp.join(work_root, task)
    options = ['--cfg-options', *cfg_options] if cfg_options else []
    run(['tools/train.py', config, '--work-dir', work_dir, *options])
    with open(osp.join(ROOT, work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    show_dir = osp.join(work_dir, 'pictures')
    run(['tools/test.py', config, checkpoint, '--work-dir', work_dir, '--show-dir', show_dir,
         *options])
    with open(osp.join(ROOT, work_dir, 'metrics.json')) as f:
        metrics = json.load(f)
    return metrics, osp.join(ROOT, show_dir)


def main():
    parser = argparse.ArgumentParser(description='Train and test the demo configs')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--tasks', nargs='+', choices=sorted(JOBS), default=sorted(JOBS))
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='passed to both train.py and test.py (e.g. train_cfg.max_iters=5)')
    args = parser.parse_args()

    run(['tools/make_demo_data.py'])
    results = {task: train_and_test(task, args.work_dir, args.cfg_options)
               for task in args.tasks}
    print('\n==== demo results ====')
    for task, (metrics, pictures) in results.items():
        for key in HEADLINE[task]:
            print(f'{task}  {key:<14} {metrics[key]}')
        print(f'{task}  pictures       {pictures}')


if __name__ == '__main__':
    main()
