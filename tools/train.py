"""Train a detector or segmentor from a config (mmdet's / mmseg's `tools/train.py` flags).

    python tools/train.py configs/det/cascade_mambavision_t_coco.py [--work-dir DIR] [--amp]
        [--resume [CHECKPOINT]] [--auto-scale-lr] [--cfg-options k=v ...] [--launcher pytorch]

Checks that the dataset paths exist before building anything. mmmv's hooks stop training at a
non-finite loss and make `--resume` continue exactly where a killed run left off
(mmmv.engine.hooks).
"""
import argparse

from mmmv.checkpoint import load_checkpoint
from mmmv.cli import add_amp_argument, add_runner_arguments, parse_runner_arguments
from mmmv.engine import (build_runner, enable_amp, find_resume_checkpoint, load_config,
                         release_distributed)
from mmmv.errors import ConfigError, cli_main
from mmmv.input_checks import check_dataset_paths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a MambaVision detector or segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by total batch / auto_scale_lr.base_batch_size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CHECKPOINT, or from the latest one in the work dir')
    add_amp_argument(parser, 'training')
    return parse_runner_arguments(add_runner_arguments(parser), argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    validate = bool(cfg.get('val_cfg')) and cfg.get('val_dataloader') is not None
    check_dataset_paths(cfg, ['train_dataloader'] + (['val_dataloader'] if validate else []),
                        ['val_evaluator'] if validate else [])
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ConfigError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        # last_checkpoint, or the newest iter_/epoch_ checkpoint if it names a missing file
        cfg.load_from = find_resume_checkpoint(cfg.work_dir)
        cfg.resume = cfg.load_from is not None
        if not cfg.resume:
            print(f'--resume: no checkpoint in {cfg.work_dir}; training from the start')
    elif args.resume is not None:
        load_checkpoint(args.resume)  # a bad one is named before the runner makes the work dir
        cfg.resume, cfg.load_from = True, args.resume
    try:
        build_runner(cfg).train()
    finally:
        release_distributed()


if __name__ == '__main__':
    cli_main(main)
