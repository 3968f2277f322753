"""Convert NVIDIA's ImageNet `.pth.tar`, a Hugging Face `model.safetensors` or an mmengine
detector / segmentor checkpoint into a backbone checkpoint for ``init_cfg``.

    python tools/convert_checkpoint.py mambavision_tiny_1k.pth.tar checkpoints/mv_tiny.pth \
        [--arch tiny]

Prints how many tensors it kept and the names it dropped. With ``--arch`` it also loads the
result into that backbone with ``strict=True`` and stops on any mismatch.
"""
import argparse
import io
import os

import torch


def parse_args():
    parser = argparse.ArgumentParser(description='Convert a MambaVision checkpoint')
    parser.add_argument('src', help='.pth.tar / .pth / .safetensors checkpoint')
    parser.add_argument('dst', help='output backbone checkpoint (.pth)')
    parser.add_argument('--arch', help='verify against this arch with strict loading')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle the source fully (only for files you trust)')
    return parser.parse_args()


def main():
    args = parse_args()
    from mmmv.checkpoint import atomic_write, convert_backbone_state_dict, load_checkpoint_file
    state, dropped = convert_backbone_state_dict(
        load_checkpoint_file(args.src, allow_unsafe=args.unsafe_load or None))
    if args.arch:
        from mmmv.models import MambaVision
        MambaVision(arch=args.arch).load_state_dict(state, strict=True)
        print(f'loads into MambaVision(arch={args.arch!r}) with strict=True')
    buffer = io.BytesIO()
    torch.save({'state_dict': state, 'meta': {'source': os.path.basename(args.src)}}, buffer)
    atomic_write(args.dst, buffer.getvalue())
    print(f'kept {len(state)} tensors, dropped {len(dropped)}: {", ".join(dropped) or "-"}')
    print(f'wrote {args.dst}')


if __name__ == '__main__':
    main()
