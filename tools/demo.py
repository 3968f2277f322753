"""The main job on the built-in demo data (`make demo`): make data, train, test, draw, report.

    python tools/demo.py [--work-dir work_dirs/demo] [--tasks det seg] [--cfg-options k=v ...]

Makes ``data/demo`` in the current folder (``tools/make_demo_data.py``), then for each demo
config (Cascade Mask R-CNN and UperNet with MambaVision-T) runs ``tools/train.py`` and
``tools/test.py`` on both validation splits: ``val`` (each class in its own hues, as in training)
and ``val_random`` (the same scenes with hues drawn independently of the class). The test dumps
its predictions (detections to a pickle, label maps to PNGs) and the demo draws each image's
ground truth beside its prediction from them:

    <work-dir>/<task>/pictures/000000.png ...         val, one PNG per image
    <work-dir>/<task>/pictures_random/000000.png ...  val_random
    <work-dir>/<task>/predictions.png                 contact sheet of the first 12 val images
    <work-dir>/<task>/predictions_random.png          the same scenes from val_random
    <work-dir>/results.json                           everything the final table prints

The final table has each model's training time and per-class AP (bbox and mask) or IoU on both
splits, and for segmentation the share of background pixels predicted as background.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

import numpy as np

from make_demo_data import SPLITS, make_demo_data  # tools/, the script's folder

TOOLS = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(TOOLS)

JOBS = {
    'det': 'configs/det/demo_cascade_mambavision_t.py',
    'seg': 'configs/seg/demo_upernet_mambavision_t.py',
}
NAMES = {'det': 'Cascade Mask R-CNN, MambaVision-T', 'seg': 'UperNet, MambaVision-T'}
TEST_SPLITS = {'val': ('pictures', 'predictions.png', 'hues by class, as in training'),
               'val_random': ('pictures_random', 'predictions_random.png',
                              'the same scenes, any hue')}
SHEET_IMAGES, SHEET_COLUMNS = 12, 3
SCORE_THR = 0.3     # detections drawn from this score on (tools/image_demo.py's default)


def run(args):
    print('$ ' + ' '.join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True)


def folders(split):
    """The folder names of a demo data split in the COCO and ADE layouts."""
    return next((coco, ade) for coco, ade, *_ in SPLITS if coco == split)


def split_options(task, cfg, split):
    """--cfg-options that point the test at ``split`` of the demo data."""
    coco, ade = folders(split)
    dataset = cfg.test_dataloader.dataset
    if task == 'seg':
        return [f'test_dataloader.dataset.data_prefix.img_path=images/{ade}',
                f'test_dataloader.dataset.data_prefix.seg_map_path=annotations/{ade}']
    ann_file = f'annotations/instances_{coco}.json'
    return [f'test_dataloader.dataset.ann_file={ann_file}',
            f'test_dataloader.dataset.data_prefix.img={coco}/',
            *(f'test_evaluator.{i}.ann_file={osp.join(dataset.data_root, ann_file)}'
              for i in range(len(cfg.test_evaluator)))]


def seconds_per_iteration(work_dir):
    """Mean logged iteration time of the newest training run in ``work_dir`` (mmengine's
    vis_data/scalars.json), or None."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isfile(
        osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        return None
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        times = [r['time'] for r in map(json.loads, f) if 'time' in r and 'loss' in r]
    return float(np.mean(times)) if times else None


def train(config, work_dir, options):
    """Train; returns (checkpoint, wall seconds, mean seconds per iteration)."""
    # no validation while training: the demo tests both splits right after
    no_val = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
    start = time.monotonic()
    run([osp.join(TOOLS, 'train.py'), config, '--work-dir', work_dir, '--cfg-options', *no_val,
         *options])
    wall = time.monotonic() - start
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return checkpoint, wall, seconds_per_iteration(work_dir)


def test(task, cfg, config, checkpoint, work_dir, split, options):
    """Test on ``split``; returns (metrics, where the predictions were dumped)."""
    test_dir = osp.join(work_dir, f'test_{split}')
    out = osp.join(test_dir, 'predictions.pkl' if task == 'det' else 'predictions')
    dump = (['--out', out] if task == 'det' else [])
    extra = split_options(task, cfg, split) + options
    if task == 'seg':  # mmseg's IoUMetric writes label-map PNGs into output_dir
        extra.append(f'test_evaluator.output_dir={out}')
    run([osp.join(TOOLS, 'test.py'), config, checkpoint, '--work-dir', test_dir, *dump,
         '--cfg-options', *extra])
    with open(osp.join(test_dir, 'metrics.json')) as f:
        return json.load(f), out


def load_config(path, options):
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(path)
    cfg.merge_from_dict({key: DictAction._parse_iterable(value)
                         for key, value in (o.split('=', 1) for o in options)})
    return cfg


def main():
    parser = argparse.ArgumentParser(description='Train and test the demo configs, draw and '
                                     'report their predictions')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--tasks', nargs='+', choices=sorted(JOBS), default=sorted(JOBS))
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='passed to train.py and test.py (e.g. train_cfg.max_iters=5)')
    parser.add_argument('--num-train', type=int, default=200, help='demo training images')
    parser.add_argument('--num-val', type=int, default=50, help='images per validation split')
    args = parser.parse_args()

    from mmmv.demo_report import draw_and_score, format_report
    data = make_demo_data('data/demo', num_train=args.num_train, num_val=args.num_val)
    work_root = osp.abspath(args.work_dir)
    results = {}
    for task in args.tasks:
        config = osp.join(ROOT, JOBS[task])
        cfg = load_config(config, args.cfg_options)
        work_dir = osp.join(work_root, task)
        checkpoint, wall, per_iter = train(config, work_dir, args.cfg_options)
        result = dict(config=JOBS[task], name=NAMES[task], iterations=cfg.train_cfg.max_iters,
                      classes=list(cfg.metainfo.classes), train_seconds=wall,
                      seconds_per_iteration=per_iter, splits={})
        for split, (pictures, sheet, what) in TEST_SPLITS.items():
            metrics, out = test(task, cfg, config, checkpoint, work_dir, split, args.cfg_options)
            found = draw_and_score(task, cfg.metainfo, data['out_dir'], folders(split), out,
                                   osp.join(work_dir, pictures), osp.join(work_dir, sheet),
                                   f'{NAMES[task]}: {split} ({what})', SHEET_IMAGES,
                                   SHEET_COLUMNS, SCORE_THR)
            result['splits'][split] = dict(metrics=metrics, **found)
        results[task] = result
    with open(osp.join(work_root, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    print('\n' + format_report(results, {k: v[2] for k, v in TEST_SPLITS.items()}))
    print(f'\nall numbers: {osp.join(work_root, "results.json")}')


if __name__ == '__main__':
    main()
