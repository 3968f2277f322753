"""The command-line flags the tools share, with mmdet's and mmseg's names.

    parser = argparse.ArgumentParser()
    ...                                # the tool's own flags
    add_runner_arguments(parser)       # --cfg-options --launcher --local-rank --unsafe-load
    add_amp_argument(parser)           # --amp (training) / add_amp_argument(parser, 'inference')
    args = parse_runner_arguments(parser)

:func:`parse_runner_arguments` also exports what the flags mean for the whole process:
``LOCAL_RANK`` (:func:`mmmv.engine.export_local_rank`) and ``MMMV_UNSAFE_LOAD``.
"""
import argparse
import os

from mmengine.config import DictAction

from .checkpoint import UNSAFE_ENV
from .engine.distributed import LAUNCHERS, export_local_rank
from .errors import UserError
from .models.mambavision import MIN_INPUT_SIZE

AMP_HELP = {
    'training': 'mixed precision: float16 with dynamic loss scaling on CUDA, bfloat16 autocast '
                'on a CPU (mmmv.engine.enable_amp)',
    'inference': 'mixed precision: bfloat16 autocast (mmmv.engine.inference_autocast)',
}


def add_unsafe_load_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--unsafe-load``: unpickle checkpoints fully instead of through the allow-list."""
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle checkpoints fully (only for files you trust)')
    return parser


def add_cfg_options_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--cfg-options KEY=VALUE ...``: override settings of the config (mmdet's flag)."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value')
    return parser


def add_shape_argument(parser: argparse.ArgumentParser, required=False, default=''
                       ) -> argparse.ArgumentParser:
    """``--shape H [W]``: the input size (one value: square); check it with :func:`check_shape`.
    ``default`` describes what the tool takes without the flag."""
    parser.add_argument('--shape', type=int, nargs='+', required=required, metavar='SIZE',
                        help=f'input height and width (one value: square), at least '
                        f'{MIN_INPUT_SIZE}' + (f'; default {default}' if default else ''))
    return parser


def check_shape(shape):
    """``(H, W)`` from ``--shape``'s one (square) or two ints, each at least the backbone's
    minimum; a :class:`UserError` naming ``--shape`` otherwise."""
    given = ' '.join(map(str, shape))
    if len(shape) not in (1, 2):
        raise UserError('--shape', given, f'has {len(shape)} values; it takes H W or one size',
                        'For example --shape 512 512')
    if min(shape) < MIN_INPUT_SIZE:
        raise UserError('--shape', given, f'MambaVision needs at least {MIN_INPUT_SIZE} pixels '
                        'in height and width', f'Give H, W >= {MIN_INPUT_SIZE}')
    return int(shape[0]), int(shape[-1])


def add_runner_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags ``tools/train.py`` and ``tools/test.py`` share."""
    add_unsafe_load_argument(parser)
    add_cfg_options_argument(parser)
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # passed by the legacy torch.distributed.launch only; torchrun, slurm and mpi set variables
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None,
                        help=argparse.SUPPRESS)
    return parser


def add_amp_argument(parser: argparse.ArgumentParser, use='training'
                     ) -> argparse.ArgumentParser:
    """``--amp`` with the same meaning in every tool; ``use`` is 'training' or 'inference'."""
    if use not in AMP_HELP:
        raise ValueError(f'use must be one of {tuple(AMP_HELP)}, got {use!r}')
    parser.add_argument('--amp', action='store_true', help=AMP_HELP[use])
    if use == 'inference':
        parser.add_argument('--amp-force', action='store_true',
                            help='with --amp: bfloat16 even on a CPU without native bfloat16 '
                            '(AVX512-BF16 / AMX), where it runs slower than float32')
    return parser


def apply_unsafe_load(args: argparse.Namespace) -> None:
    """``--unsafe-load`` given: every checkpoint this process loads is unpickled fully."""
    if getattr(args, 'unsafe_load', False):
        os.environ[UNSAFE_ENV] = '1'


def parse_runner_arguments(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` (default: the command line) and export what the shared flags set for the
    process: ``LOCAL_RANK`` from the launcher's variables and ``MMMV_UNSAFE_LOAD``."""
    args = parser.parse_args(argv)
    export_local_rank(args.launcher, args.local_rank)
    apply_unsafe_load(args)
    return args
