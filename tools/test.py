"""Evaluate a checkpoint: COCO bbox / segm mAP or ADE20K mIoU (mmdet's / mmseg's flags).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--show-dir DIR] [--tta]
        [--amp [--amp-force]]

Prints the metrics table and writes them to ``<work-dir>/metrics.json``. The checkpoint is read
with mmmv's safe loader and must fit the model: a checkpoint of another arch stops the run with
the keys and shapes that differ (mmmv.engine.hooks.CheckpointFitHook) instead of testing a partly
random model.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.dist import get_rank

from mmmv.checkpoint import load_checkpoint
from mmmv.cli import add_amp_argument, add_runner_arguments, parse_runner_arguments
from mmmv.engine import (build_runner, enable_inference_preparation, enable_result_dump,
                         enable_test_amp, enable_tta, enable_visualization, load_config,
                         release_distributed)
from mmmv.errors import cli_main
from mmmv.input_checks import check_dataset_paths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a MambaVision model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics.json')
    parser.add_argument('--out', help='detection: dump predictions to this .pkl; '
                        'segmentation: write prediction PNGs into this dir')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', metavar='DIR',
                        help='save drawn predictions (ground truth beside prediction) into this '
                        'dir. Detection (mmdet\'s DetVisualizationHook): a relative DIR is put '
                        'under the run\'s timestamped folder, <work-dir>/<timestamp>/DIR, an '
                        'absolute one is used as it is; one PNG per image, named after it. '
                        'Segmentation (mmseg\'s visualizer): DIR/vis_data/vis_image/, DIR '
                        'relative to the current folder. Pass an absolute DIR to know where')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    add_amp_argument(parser, 'inference')
    return parse_runner_arguments(add_runner_arguments(parser), argv)


def format_metrics(metrics):
    width = max((len(k) for k in metrics), default=0)
    return '\n'.join(f'{k:<{width}}  {v:.4f}' if isinstance(v, float) else f'{k:<{width}}  {v}'
                     for k, v in metrics.items())


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    load_checkpoint(args.checkpoint)  # a bad one is named before the runner makes the work dir
    check_dataset_paths(cfg, ['test_dataloader'], ['test_evaluator'])
    cfg.load_from = args.checkpoint
    enable_inference_preparation(cfg)
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show_dir, args.show, args.wait_time)
    if args.tta:
        enable_tta(cfg)
    if args.out:
        enable_result_dump(cfg, args.out)
    if args.amp:
        enable_test_amp(cfg, args.amp_force)
    try:
        # mmseg reports numpy scalars: make every metric a plain Python number
        metrics = {k: v.item() if hasattr(v, 'item') else v
                   for k, v in build_runner(cfg).test().items()}
        main_process = get_rank() == 0  # asked while the process group still exists
    finally:
        release_distributed()
    if main_process:
        print(format_metrics(metrics))
        os.makedirs(cfg.work_dir, exist_ok=True)
        path = osp.join(cfg.work_dir, 'metrics.json')
        with open(path, 'w') as f:
            json.dump(metrics, f, indent=2)
        print(f'metrics written to {path}')


if __name__ == '__main__':
    cli_main(main)
