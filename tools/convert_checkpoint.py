"""Convert NVIDIA's ImageNet `.pth.tar`, a Hugging Face `model.safetensors` or an mmdet / mmseg
checkpoint (a file or a URL) into a backbone checkpoint for ``init_cfg``.

    python tools/convert_checkpoint.py SRC checkpoints/mv_tiny.pth [--arch tiny]
    python tools/convert_checkpoint.py \
        https://huggingface.co/nvidia/MambaVision-T-1K/resolve/main/mambavision_tiny_1k.pth.tar \
        checkpoints/mv_tiny.pth --arch tiny

Prints how many tensors it kept and the names it dropped. With ``--arch`` it also checks that the
result holds every tensor of that backbone with its shape (and nothing else), and stops on any
mismatch before writing. A URL is downloaded
once into torch hub's cache (``$TORCH_HOME/hub/checkpoints``).
"""
import argparse
import io
import os

import torch

from mmmv.errors import check_output_file, cli_main


def parse_args():
    parser = argparse.ArgumentParser(description='Convert a MambaVision checkpoint')
    parser.add_argument('src', help='.pth.tar / .pth / .safetensors checkpoint file or URL')
    parser.add_argument('dst', help='output backbone checkpoint (.pth)')
    parser.add_argument('--arch',
                        help='check that the result fits this arch (tiny, small, ..., large3)')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle the source fully (only for files you trust)')
    return parser.parse_args()


def check_fits(state, arch, name):
    """Every tensor of a MambaVision of ``arch`` is in ``state`` with its shape, and nothing else
    is, or :class:`~mmmv.checkpoint.CheckpointMismatchError` naming the keys and shapes that
    differ. The ``outnorm*`` layers exist only in detector / segmentor checkpoints."""
    from mmmv.checkpoint import CheckpointMismatchError, checkpoint_mismatches, describe_mismatch
    from mmmv.models import MambaVision
    with torch.device('meta'):  # shapes only: no memory, no initialisation
        model_state = MambaVision(arch=arch).state_dict()
    shapes, missing, unexpected = checkpoint_mismatches(model_state, state)
    missing = [k for k in missing if not k.startswith('outnorm')]
    if shapes or missing or unexpected:
        raise CheckpointMismatchError(describe_mismatch(repr(name), shapes, missing, unexpected))


def main():
    args = parse_args()
    from mmmv.checkpoint import UNSAFE_ENV, atomic_write, convert_backbone_state_dict, \
        load_checkpoint
    from mmmv.models import check_backbone_cfg
    if args.unsafe_load:
        os.environ[UNSAFE_ENV] = '1'
    if args.arch:
        check_backbone_cfg(dict(arch=args.arch))
    check_output_file(args.dst, 'output', "Give a file name, e.g. 'checkpoints/mv_tiny.pth'")
    state, dropped = convert_backbone_state_dict(load_checkpoint(args.src))
    if args.arch:
        check_fits(state, args.arch, args.src)
        print(f'fits MambaVision(arch={args.arch!r}): every backbone tensor, with its shape')
    buffer = io.BytesIO()
    torch.save({'state_dict': state, 'meta': {'source': os.path.basename(args.src)}}, buffer)
    atomic_write(args.dst, buffer.getvalue())
    print(f'kept {len(state)} tensors, dropped {len(dropped)}: {", ".join(dropped) or "-"}')
    print(f'wrote {args.dst}')


if __name__ == '__main__':
    cli_main(main)
