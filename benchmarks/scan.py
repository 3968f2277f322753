"""Selective-scan timings: every runnable backend against the sequential loop (not a test).

Shapes are MambaVision-T's scans (state 8; the scan runs on half of a stage's channels) in stages
3 and 4 of the detection config (windows 112 and 56 -> 12,544 and 3,136 tokens) and of the
segmentation config (windows 64 and 32 -> 4,096 and 1,024 tokens). The batch is the number of
windows: at the configs' input sizes (1333x800 detection, 512x512 segmentation crops) each of these
feature maps fits in one window per image, so batch = images (--batch). The headline case is
batch 1, 160 channels, state 8, 4,096 tokens (segmentation stage 3).

    python benchmarks/scan.py          # all cases; backends: median of 5; loop: 3 fwd, 1 fwd+bwd
    python benchmarks/scan.py --quick  # headline case; backends: median of 3; loop: 1 fwd only
"""
import argparse
import statistics
import time

import torch

from mmmv.ops import BACKENDS, scan_backend, selective_scan, selective_scan_ref

HEADLINE = ('seg stage 3 (window 64), the headline case', 160, 4096)
CASES = (
    HEADLINE,
    ('seg stage 4 (window 32)', 320, 1024),
    ('det stage 3 (window 112)', 160, 12544),
    ('det stage 4 (window 56)', 320, 3136),
)
STATE = 8


def make_inputs(batch, channels, length, device):
    """Mixer-like inputs: u, delta (b, d, l), A (d, n) = -[1..n], B, C (b, n, l), D, bias (d,)."""
    return dict(
        u=torch.randn(batch, channels, length, device=device),
        delta=torch.randn(batch, channels, length, device=device) * 0.5 - 2.0,
        A=-torch.arange(1, STATE + 1, device=device, dtype=torch.float32).repeat(channels, 1),
        B=torch.randn(batch, STATE, length, device=device),
        C=torch.randn(batch, STATE, length, device=device),
        D=torch.ones(channels, device=device),
        delta_bias=torch.rand(channels, device=device) * 0.1)


def median_seconds(fn, repeats, device):
    """Median wall time of `repeats` calls of fn (after one warm-up call when repeats > 1)."""
    if repeats > 1:
        fn()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_fn(scan, inputs, **kwargs):
    """Closure running the scan without autograd."""
    def run():
        with torch.no_grad():
            scan(**inputs, delta_softplus=True, **kwargs)
    return run


def forward_backward_fn(scan, inputs, **kwargs):
    """Closure running the scan and the backward of its sum, gradients for every input."""
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}

    def run():
        scan(**leaves, delta_softplus=True, **kwargs).sum().backward()
    return run


def runnable_backends(device):
    """Concrete backends that can run tensors on `device`."""
    probe = torch.empty(0, device=device)
    names = []
    for name in (b for b in BACKENDS if b != 'auto'):
        try:
            names.append(scan_backend(probe, name))
        except RuntimeError:
            continue
    return names


def time_case(inputs, device, repeats, loop_repeats, loop_backward):
    """Rows (backend, forward s, forward+backward s or None) for one input set; loop first."""
    loop_fb = (median_seconds(forward_backward_fn(selective_scan_ref, inputs), 1, device)
               if loop_backward else None)
    rows = [('loop', median_seconds(forward_fn(selective_scan_ref, inputs), loop_repeats, device),
             loop_fb)]
    for name in runnable_backends(device):
        fwd = forward_fn(selective_scan, inputs, backend=name)
        fwd_bwd = forward_backward_fn(selective_scan, inputs, backend=name)
        rows.append((name, median_seconds(fwd, repeats, device),
                     median_seconds(fwd_bwd, repeats, device)))
    return rows


def speedup(base, value):
    """'12.3x' or '-' when a time is missing."""
    return f'{base / value:.1f}x' if base and value else '-'


def print_case(title, shape, rows):
    """Table of one case: times in ms and speed-ups against the loop."""
    print(f'\n{title}: (batch, channels, state, length) = {shape}')
    print(f"{'backend':<10}{'fwd ms':>10}{'fwd+bwd ms':>13}{'fwd vs loop':>13}"
          f"{'fwd+bwd vs loop':>17}")
    loop_f, loop_fb = rows[0][1], rows[0][2]
    for name, fwd, fwd_bwd in rows:
        fb_ms = f'{fwd_bwd * 1e3:.1f}' if fwd_bwd else '-'
        print(f'{name:<10}{fwd * 1e3:>10.1f}{fb_ms:>13}{speedup(loop_f, fwd):>13}'
              f'{speedup(loop_fb, fwd_bwd):>17}')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='headline case only, fewer repeats')
    parser.add_argument('--batch', type=int, default=1, help='windows x images (default 1)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--repeats', type=int, default=None, help='repeats per backend timing')
    return parser.parse_args()


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (3 if args.quick else 5)
    print(f'device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}, '
          f'backends {runnable_backends(device)}; median wall times')
    torch.manual_seed(0)
    for title, channels, length in (HEADLINE,) if args.quick else CASES:
        inputs = make_inputs(args.batch, channels, length, device)
        rows = time_case(inputs, device, repeats, loop_repeats=1 if args.quick else 3,
                         loop_backward=not args.quick)
        print_case(title, (args.batch, channels, STATE, length), rows)


if __name__ == '__main__':
    main()
