"""ONNX export and onnxruntime against mmmv's PyTorch CPU path (not a test).

For UperNet-T (configs/seg/upernet_mambavision_t_ade20k.py, whole model, 512x512) and the
Cascade Mask R-CNN-T backbone + FPN (configs/det/cascade_mambavision_t_coco.py, 800x1344), random
weights, batch 1, the script exports with ``mmmv.deploy`` (timed once), then times interleaved in
one process (see ``benchmarks/common.py``):

    torch  mmmv's PyTorch CPU path: fast paths on, BatchNorm folded (``fuse_conv_bn``), C++ scan
           and attention kernels, ``torch.inference_mode``, --threads torch threads
    ort    the exported file in onnxruntime's CPU provider with --threads intra-op threads

and prints median latencies, their ratio and the file and weight sizes. With --profile, where the
onnxruntime time goes: its own profile, summed by ONNX op type over one run.

    python benchmarks/onnx_export.py                     # both models, 2 threads
    python benchmarks/onnx_export.py --cases upernet_t --reps 3 --profile
"""
import argparse
import collections
import json
import os
import os.path as osp
import sys
import tempfile

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import common  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CASES = {  # name: (config, (H, W))
    'upernet_t': ('configs/seg/upernet_mambavision_t_ade20k.py', (512, 512)),
    'cascade_t_fpn': ('configs/det/cascade_mambavision_t_coco.py', (800, 1344)),
}


def op_type_times(session):
    """{ONNX op type: milliseconds} from an onnxruntime session created with profiling on, after
    its runs (the profile file is deleted)."""
    path = session.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.unlink(path)
    totals = collections.Counter()
    for event in events:
        op = event.get('args', {}).get('op_name')
        if event.get('cat') == 'Node' and op and event['name'].endswith('_kernel_time'):
            totals[op] += event['dur'] / 1000
    return totals


def run_case(name, args, folder, log):
    import onnxruntime as ort

    from mmmv.deploy import (build_exportable, example_input, export_onnx,
                             onnxruntime_session, output_names, pytorch_outputs, set_fast_paths)
    from mmmv.models import MambaVision
    config, shape = CASES[name]
    module, task = build_exportable(osp.join(ROOT, config))
    inputs = example_input(shape)
    names = output_names(task, pytorch_outputs(module, inputs))
    path = osp.join(folder, f'{name}.onnx')
    export_seconds = export_onnx(module, inputs, path, names)
    weights = module.weight_bytes()
    log(f'{name}: exported in {export_seconds:.1f} s')
    set_fast_paths(module, True)
    for m in module.modules():
        if isinstance(m, MambaVision):
            m.fuse_conv_bn()  # the one-time deploy step of mmmv's inference
    session = onnxruntime_session(path, args.threads)
    feed = {session.get_inputs()[0].name: inputs.numpy()}

    def run_torch():
        with torch.inference_mode():
            module(inputs)

    times = common.time_interleaved(dict(torch=run_torch, ort=lambda: session.run(None, feed)),
                                    args.reps, torch.device('cpu'), warmup=args.warmup, log=log)
    row = dict(case=name, shape=shape, export_s=export_seconds, file_mib=osp.getsize(path) / 2**20,
               weights_mib=weights / 2**20, torch_s=common.median(times['torch']),
               ort_s=common.median(times['ort']))
    if args.profile:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.enable_profiling = True
        options.profile_file_prefix = osp.join(folder, name)
        profiled = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        profiled.run(None, feed)
        row['ort_ops_ms'] = op_type_times(profiled).most_common(8)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', nargs='+', choices=list(CASES), default=list(CASES))
    parser.add_argument('--reps', type=int, default=5, help='timed runs of each variant (5)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs first (1)')
    parser.add_argument('--threads', type=int, default=2,
                        help='torch threads and onnxruntime intra-op threads (2)')
    parser.add_argument('--profile', action='store_true',
                        help='also sum onnxruntime time by op type over one run')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f'machine: {common.machine_description(torch.device("cpu"))}; '
          f'load {common.format_load()}')
    import onnxruntime as ort
    print(f'onnxruntime {ort.__version__}, {args.threads} intra-op threads; batch 1; random '
          f'weights; median of {args.reps} interleaved runs after {args.warmup} warm-up')

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.cases:
            rows.append(run_case(name, args, folder, log))
    print(f'\n{"case":<14} {"input":<9} {"export":>8} {"file":>10} {"weights":>10} '
          f'{"torch":>8} {"ort":>8} {"ort/torch":>9}')
    for r in rows:
        print(f'{r["case"]:<14} {r["shape"][0]}x{r["shape"][1]:<5} {r["export_s"]:>7.1f}s '
              f'{r["file_mib"]:>6.1f} MiB {r["weights_mib"]:>6.1f} MiB {r["torch_s"]:>7.3f}s '
              f'{r["ort_s"]:>7.3f}s {r["ort_s"] / r["torch_s"]:>9.2f}')
    for r in rows:
        if 'ort_ops_ms' in r:
            ops = ', '.join(f'{op} {ms:.0f} ms' for op, ms in r['ort_ops_ms'])
            print(f'{r["case"]}: onnxruntime time by op type (one run): {ops}')
    print(f'load at the end: {common.format_load()}')


if __name__ == '__main__':
    main()
