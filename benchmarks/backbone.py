"""Backbone speed: MambaVision-T/S/B against a sequential-loop scan and against Swin (not a test).

For each arch (T, S, B), input size and mode the script times, interleaved in one process:

    mv       MambaVision as shipped, fast paths on; for inference deployed once with
             ``fuse_conv_bn()`` (scan backend: MMMV_SCAN_BACKEND, default 'auto': the C++ kernel on
             a CPU, mamba-ssm or the PyTorch scan on CUDA)
    ref      the same weights and scan built with ``fast_paths=False`` and not fused: the
             published computation op for op
    refloop  ref with the plain sequential-loop scan (``selective_scan_ref``, one step per token):
             what the published code amounts to without its CUDA kernel -- THE BASELINE
    loop     mv with the sequential-loop scan (isolates the scan: same model code as mv)
    noscan   mv with the scan replaced by a no-op (returns its input): the time without the
             scan, to bound the scan's share of the backbone
    fit      mv with ``fit_window=True`` (windows shrunk to the feature map; the documented
             option with other numerics)
    swin     mmdet's SwinTransformer of the matching size (T: 96, depths 2-2-6-2, heads 3-6-12-24;
             S: depths 2-2-18-2; B: 128, heads 4-8-16-32; window 7 everywhere)

Sizes: '512' = 512x512 with the published segmentation windows (T (8, 8, 64, 32),
S (8, 8, 160, 56), B (8, 8, 64, 32)); '800x1280' = 800x1280 with the detection windows
(8, 8, 112, 56). Modes: 'infer' = forward of batch 1 under ``torch.inference_mode``; 'train' =
forward + backward of batch 2 in train mode (loss: sum of the outputs' means; gradients reset to
None before each step, as optimizers do).

Reported per row: median wall time, speed-ups against refloop and against swin (>1 = faster than
it), peak memory of one step (fresh child process each; see ``benchmarks/common.py`` for the
method), the forward's multiply-accumulates counted by ``mmmv.flops`` (the published computation,
padded windows included; training: 3 x batch x forward, the usual estimate) and the achieved rate
2 * MACs / time as a fraction of the measured float32 matmul rate. For 'infer' also the scan's
share of the mv forward, from torch.profiler (time inside ``selective_scan`` / forward time) and
from the noscan timing (1 - noscan / mv).

    python benchmarks/backbone.py --quick                       # T only, few repeats, no memory
    python benchmarks/backbone.py --archs T --sizes 512 --modes infer
    python benchmarks/backbone.py                               # everything (hours on 2 cores)
    python benchmarks/backbone.py --device cuda                 # the same on a GPU
"""
import argparse
import contextlib
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ARCHS = {  # name: (MambaVision arch, mmdet SwinTransformer keywords)
    'T': ('tiny', dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))),
    'S': ('small', dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))),
    'B': ('base', dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))),
}
SIZES = {  # name: ((H, W), published windows per arch)
    '512': ((512, 512), {'T': (8, 8, 64, 32), 'S': (8, 8, 160, 56), 'B': (8, 8, 64, 32)}),
    '800x1280': ((800, 1280), dict.fromkeys('TSB', (8, 8, 112, 56))),
}
MODES = {'infer': 1, 'train': 2}  # mode: batch size
VARIANTS = ('mv', 'ref', 'refloop', 'loop', 'noscan', 'fit', 'swin')
SLOW_VARIANTS = ('refloop', 'loop')  # timed with --baseline-reps
PLAIN_VARIANTS = ('ref', 'refloop')  # built with fast_paths=False, never fused
BASELINE = 'refloop'



# ------------------------------------------------------------------------------------ models
@contextlib.contextmanager
def patched_scan(fn):
    """Make the Mamba mixers call ``fn`` instead of ``mmmv.ops.selective_scan``."""
    from mmmv.models import mixers
    original = mixers.selective_scan
    mixers.selective_scan = fn
    try:
        yield
    finally:
        mixers.selective_scan = original


def no_scan(u, *args, **kwargs):
    return u


def scan_for(variant):
    """The scan function a variant runs with, or None for the shipped one."""
    if variant in ('refloop', 'loop'):
        from mmmv.ops import selective_scan_ref
        return selective_scan_ref
    return no_scan if variant == 'noscan' else None


def build_model(arch, size, variant, device):
    """The backbone of a variant, initialised from seed 0 (MambaVision variants share weights)."""
    torch.manual_seed(0)
    if variant == 'swin':
        from mmdet.models.backbones import SwinTransformer
        model = SwinTransformer(window_size=7, drop_path_rate=0.2, out_indices=(0, 1, 2, 3),
                                **ARCHS[arch][1])
    else:
        from mmmv.models import MambaVision
        model = MambaVision(ARCHS[arch][0], window_size=SIZES[size][1][arch],
                            fit_window=variant == 'fit', drop_path_rate=0.2,
                            fast_paths=variant not in PLAIN_VARIANTS)
    model.init_weights()
    return model.to(device)


def make_step(model, variant, mode, x):
    """A callable running one inference forward or one training forward + backward."""
    scan = scan_for(variant)

    def patch():
        return patched_scan(scan) if scan else contextlib.nullcontext()
    if mode == 'infer':
        model.eval()
        if variant not in PLAIN_VARIANTS + ('swin', ):
            model.fuse_conv_bn()  # the one-time deploy step

        def step():
            with patch(), torch.inference_mode():
                model(x)
    else:
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]

        def step():
            for p in params:
                p.grad = None
            with patch():
                outs = model(x)
                sum(o.float().mean() for o in outs).backward()
    return step


def make_input(size, mode, device):
    torch.manual_seed(1)
    return torch.randn(MODES[mode], 3, *SIZES[size][0], device=device)


# ------------------------------------------------------------------------ memory child entry
def build_child_step(spec):
    device = torch.device(spec['device'])
    model = build_model(spec['arch'], spec['size'], spec['variant'], device)
    x = make_input(spec['size'], spec['mode'], device)
    return make_step(model, spec['variant'], spec['mode'], x), device, spec['warmup']


# ----------------------------------------------------------------------------- measurements
def profile_scan_share(model, x):
    """Share of one inference forward's wall time spent inside ``selective_scan`` (CPU only:
    torch.profiler's CPU time of a range is the host's wall time, kernels included)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from mmmv.models import mixers
    scan = mixers.selective_scan

    def recorded_scan(*args, **kwargs):
        with record_function('mmmv_selective_scan'):
            return scan(*args, **kwargs)

    model.eval()
    with patched_scan(recorded_scan), torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            model(x)
            total = time.perf_counter() - start
    inside = sum(e.cpu_time_total for e in prof.key_averages() if e.key == 'mmmv_selective_scan')
    return inside / 1e6 / total


FLOPS_CACHE = {}


def flops_key(arch, size, variant):
    """Variants with the same forward arithmetic share a FLOP count (all but fit and swin count
    as ref: the count is that of the model's published computation)."""
    return arch, size, variant if variant in ('fit', 'swin') else 'ref'


def run_case(arch, size, mode, variants, args, device, log):
    """Rows of one (arch, size, mode): timings, ratios, memory, FLOPs."""
    x = make_input(size, mode, device)
    models = {v: build_model(arch, size, v, device) for v in variants}
    steps = {v: make_step(models[v], v, mode, x) for v in variants}
    reps = {v: args.baseline_reps if v in SLOW_VARIANTS else args.reps for v in variants}
    load_before = load_after = common.load_average()
    times = {v: [] for v in variants}
    if args.timing:
        log(f'  timing {arch} {size} {mode}: {", ".join(variants)} (reps {reps})')
        times = common.time_interleaved(steps, reps, device, warmup=args.warmup, log=log)
        load_after = common.load_average()
    medians = {v: common.median(times[v]) for v in variants}

    launches = {}
    if device.type == 'cuda':  # no host syncs and no per-token launches, checked
        for v in ('mv', 'fit'):  # (the loops: one launch or more per token by design)
            if v in variants:
                launches[v] = common.cuda_syncs_and_launches(steps[v], device)
                log(f'  {v}: host syncs, kernel launches per step: {launches[v]}')
    peaks = {}
    if args.memory and device.type == 'cuda':  # exact allocator statistics: no child needed
        for v in variants:
            if v in args.memory_variants:
                peaks[v] = common.cuda_step_peak(steps[v], device, warmup=0) / common.MIB
    macs = {}
    if args.flops:
        for v in variants:
            key = flops_key(arch, size, v)
            if key not in FLOPS_CACHE:  # on an unfused model with fast paths off
                model = models[v] if v == 'swin' else build_model(arch, size, key[2], device)
                if v == 'fit':
                    model.set_fast_paths(False)
                model.eval()  # (mmdet's Swin.train() returns None: no chaining)
                FLOPS_CACHE[key] = common.count_macs(model, (make_input(size, 'infer', device), ))
            macs[v] = FLOPS_CACHE[key]
    scan_share = None
    if (mode == 'infer' and 'mv' in variants and args.profile_scan and args.timing
            and device.type == 'cpu'):
        scan_share = profile_scan_share(models['mv'], x)
    del models, steps
    common.release_memory()

    rows = []
    for v in variants:
        fwd_macs = macs.get(v)
        factor = 1 if mode == 'infer' else 3 * MODES[mode]
        step_macs = None if fwd_macs is None else fwd_macs * factor
        peak = peaks.get(v)
        if args.memory and v in args.memory_variants and device.type != 'cuda':
            spec = dict(arch=arch, size=size, mode=mode, variant=v, device=str(device),
                        threads=torch.get_num_threads(), warmup=1)
            log(f'  memory {arch} {size} {mode} {v}')
            peak = common.measure_peak(os.path.abspath(__file__), spec)
        rows.append(dict(
            arch=arch, size=size, mode=mode, variant=v, times=times[v], median=medians[v],
            vs_base=medians[BASELINE] / medians[v] if BASELINE in medians else None,
            vs_swin=medians['swin'] / medians[v] if 'swin' in medians else None,
            peak_mib=peak, macs=step_macs,
            gflops=None if step_macs is None else 2 * step_macs / medians[v] / 1e9,
            syncs_launches=launches.get(v),
            load_before=load_before, load_after=load_after))
    noscan = medians.get('noscan')
    shares = dict(profiler=scan_share, noscan=None if noscan is None or 'mv' not in medians
                  else 1 - noscan / medians['mv'])
    return rows, shares


def print_table(rows, shares, matmul, title):
    headers = ['arch', 'variant', 'median s', 'runs', f'speed-up vs {BASELINE}', 'vs swin',
               'peak MiB', 'GMAC', 'GFLOP/s', 'of matmul']
    table = [[r['arch'], r['variant'], common.fmt(r['median'], '.3f'), len(r['times']),
              common.fmt(r['vs_base'], '.2f', suffix='x'),
              common.fmt(r['vs_swin'], '.2f', suffix='x'),
              common.fmt(r['peak_mib'], '.0f'),
              common.fmt(None if r['macs'] is None else r['macs'] / 1e9, '.1f'),
              common.fmt(r['gflops'], '.1f'),
              common.fmt(None if r['gflops'] is None else 100 * r['gflops'] / matmul, '.0f',
                         suffix='%')] for r in rows]
    if any(r['syncs_launches'] for r in rows):
        headers.append('host syncs / kernel launches')
        for line, r in zip(table, rows):
            line.append('{} / {}'.format(*r['syncs_launches']) if r['syncs_launches'] else '-')
    r0 = rows[0]
    print(f'\n#### {title}  (load {common.format_load(r0["load_before"])} before, '
          f'{common.format_load(r0["load_after"])} after)\n')
    print(common.markdown_table(headers, table))
    for arch, share in shares.items():
        if share['profiler'] is not None or share['noscan'] is not None:
            percent = {k: common.fmt(None if v is None else 100 * v, '.1f', suffix='%')
                       for k, v in share.items()}
            print(f'\n{arch}: scan share of the mv forward: profiler {percent["profiler"]}, '
                  f'1 - noscan/mv {percent["noscan"]}')
    sys.stdout.flush()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='T only, 2 timed runs (1 of the loops), no memory children')
    parser.add_argument('--archs', default='T,S,B', help='comma list of T, S, B')
    parser.add_argument('--sizes', default='512,800x1280', help='comma list of 512, 800x1280')
    parser.add_argument('--modes', default='infer,train', help='comma list of infer, train')
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        help=f'comma list of {", ".join(VARIANTS)}')
    parser.add_argument('--reps', type=int, default=None, help='timed runs per variant (5)')
    parser.add_argument('--baseline-reps', type=int, default=None,
                        help='timed runs of the sequential-loop variants (3)')
    parser.add_argument('--memory', action=argparse.BooleanOptionalAction, default=None,
                        help='measure peak memory in child processes (default: on, off with '
                        '--quick)')
    parser.add_argument('--memory-variants', default=','.join(VARIANTS),
                        help='variants whose memory is measured')
    parser.add_argument('--profile-scan', action=argparse.BooleanOptionalAction, default=True,
                        help='profile the scan share of the mv forward (CPU)')
    parser.add_argument('--json', default=None, help='also write all results to this file')
    common.add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.archs = 'T'
    args.reps = args.reps or (2 if args.quick else 5)
    args.baseline_reps = args.baseline_reps or (1 if args.quick else 3)
    args.memory = (not args.quick) if args.memory is None else args.memory
    for name, allowed in (('archs', ARCHS), ('sizes', SIZES), ('modes', MODES),
                          ('variants', VARIANTS), ('memory_variants', VARIANTS)):
        values = [v for v in getattr(args, name).split(',') if v]
        bad = [v for v in values if v not in allowed]
        if bad:
            parser.error(f'--{name.replace("_", "-")}: unknown {bad}; choose from {list(allowed)}')
        setattr(args, name, values)
    return args


def main():
    args = parse_args()
    import mmmv  # noqa: F401  (registers the backbone)
    from mmmv.ops import scan_backend
    device, matmul, log = common.start(args)
    print(f'scan backend of mv: {scan_backend(torch.empty(0, device=device))}')

    results = []
    for size in args.sizes:
        for mode in args.modes:
            rows, shares = [], {}
            for arch in args.archs:
                r, s = run_case(arch, size, mode, args.variants, args, device, log)
                rows += r
                shares[arch] = s
                results += [dict(row, scan_share=s) for row in r]
                if args.json:
                    with open(args.json, 'w') as f:
                        json.dump(dict(machine=common.machine_description(device),
                                       matmul_gflops=matmul, results=results), f, indent=1)
            h, w = SIZES[size][0]
            print_table(rows, shares, matmul, f'{h}x{w}, {mode} (batch {MODES[mode]})')
    matmul_end = common.matmul_gflops(device)
    print(f'\nfloat32 matmul at the end: {matmul_end:.1f} GFLOP/s; load {common.format_load()}')


if __name__ == '__main__':
    if common.CHILD_FLAG in sys.argv:
        common.child_main(build_child_step)
    else:
        main()
