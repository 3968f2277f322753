"""Parameters and FLOPs of a MambaVision detector or segmentor.

    python tools/get_flops.py CONFIG [--shape H [W]] [--detail] [--cfg-options KEY=VALUE ...]

The task (mmdet or mmseg) comes from the config's default_scope; the default input is 800x1280
(H x W) for detection and 512x2048 for segmentation. The model is built on the CPU with random
weights (no checkpoint is loaded) and traced once in ``mode='tensor'`` on one fake image, as
mmdet's and mmseg's get_flops tools do. FLOPs count multiply-accumulates and include the selective
scan and attention, which common counters skip; see ``mmmv/flops.py`` for the conventions.
"""
import argparse
import tempfile

from mmmv.cli import add_cfg_options_argument, add_shape_argument, check_shape
from mmmv.engine import load_config
from mmmv.errors import cli_main
from mmmv.flops import format_result, model_complexity


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Parameters and FLOPs of a detector or '
                                     'segmentor with a MambaVision backbone')
    parser.add_argument('config', help='config file path')
    add_shape_argument(parser, default='800 1280 for detection, 512 2048 for segmentation')
    parser.add_argument('--detail', action='store_true',
                        help='also print FLOPs by operator and a per-module breakdown')
    parser.add_argument('--depth', type=int, default=4,
                        help='module depth of the --detail breakdown (default 4)')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    shape = None if args.shape is None else check_shape(args.shape)
    with tempfile.TemporaryDirectory() as work_dir:
        cfg = load_config(args.config, args.cfg_options, work_dir=work_dir)
        result = model_complexity(cfg, shape)
    print(format_result(result, detail=args.detail, max_depth=args.depth))


if __name__ == '__main__':
    cli_main(main)
