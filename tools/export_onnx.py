"""Export a MambaVision segmentor (whole model) or detector (backbone + neck) to ONNX and check
the file in onnxruntime against PyTorch.

    python tools/export_onnx.py CONFIG [CHECKPOINT] --shape H W --out FILE.onnx

Input of the graph: the normalised image batch (N, 3, H, W), as the config's data preprocessor
hands it to the model. Output: for a segmentor the logits at the input size (N, classes, H, W),
``model.encode_decode(inputs, metas)``; for a detector the neck's maps, ``model.extract_feat``.
Without CHECKPOINT the weights are random (no pretrained download). After the export the file runs
in onnxruntime on a random input; the tool prints the largest absolute and relative differences
against PyTorch and exits with status 1 when a relative one exceeds --tolerance.

The shape is fixed (FIXED_SHAPE below, also printed by --help).
"""
import argparse
import os.path as osp
import sys

from mmmv.cli import add_cfg_options_argument, add_shape_argument, check_shape
from mmmv.errors import check_output_file, cli_main

FIXED_SHAPE = (
    'The graph has the fixed input shape N x 3 x H x W of --batch and --shape; there is no '
    '--dynamic. PyTorch 2.14\'s exporter (torch.export) cannot keep H, W and N symbolic through '
    'MambaVision: asked to, it stops with "Constraints violated (batch, height, width)", because '
    'the model decides in Python from the feature-map size whether a hybrid stage pads its map '
    'and whether the padded map is one window or several (the window partition\'s reshapes '
    'depend on it), and the selective scan splits its sequence into blocks and chunks by Python '
    'integers computed from the sizes; each decision becomes a guard that holds only for the '
    'traced size. Export once per input size you deploy.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a MambaVision detector (backbone + '
                                     'neck) or segmentor to ONNX and check it in onnxruntime',
                                     epilog=FIXED_SHAPE)
    parser.add_argument('config', help='detector or segmentor config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (default: random weights)')
    add_shape_argument(parser, required=True)
    parser.add_argument('--out', required=True, help='ONNX file to write')
    parser.add_argument('--batch', type=int, default=1, help='batch size N (default 1)')
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset (default 18)')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest accepted relative difference (default 1e-4)')
    parser.add_argument('--threads', type=int, default=None,
                        help='onnxruntime intra-op threads for the check (default: all cores)')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmmv.deploy import (build_exportable, check_batch, differences,
                             example_input, export_onnx, format_differences,
                             onnxruntime_outputs, onnxruntime_session, output_names,
                             pytorch_outputs)
    shape = check_shape(args.shape)
    batch = check_batch(args.batch)
    check_output_file(args.out, '--out')
    module, task = build_exportable(args.config, args.checkpoint, args.cfg_options)
    inputs = example_input(shape, batch, seed=0)
    reference = pytorch_outputs(module, inputs)
    names = output_names(task, reference)
    seconds = export_onnx(module, inputs, args.out, names, args.opset)
    print(f'wrote {args.out}: {osp.getsize(args.out) / 2**20:.1f} MiB (weights of the exported '
          f'part: {module.weight_bytes() / 2**20:.1f} MiB), input {batch}x3x{shape[0]}x'
          f'{shape[1]}, exported in {seconds:.1f} s')
    checked = example_input(shape, batch, seed=1)  # another input than the traced one
    rows = differences(pytorch_outputs(module, checked),
                       onnxruntime_outputs(onnxruntime_session(args.out, args.threads), checked),
                       names)
    print('onnxruntime against PyTorch on a random input:')
    print(format_differences(rows))
    worst = max(row['rel'] for row in rows)
    if worst > args.tolerance:
        print(f'FAILED: relative difference {worst:.3e} > --tolerance {args.tolerance:g}',
              file=sys.stderr)
        return 1
    print(f'OK: every relative difference <= {args.tolerance:g}')
    return 0


if __name__ == '__main__':
    sys.exit(cli_main(main))
