"""Attention timings: our CPU kernel (every instruction-set variant this CPU runs) against PyTorch's
scaled_dot_product_attention (its CPU flash kernel), interleaved in one run (not a test).

Cases are the attention calls of MambaVision inference, batch 1 (stages counted from 1, as in
benchmarks/scan.py): per stage the window's tokens (keys), the queries (all tokens, or the kept
ones in the last block of a padded stage), heads and head width. GFLOP/s counts
4 * lq * lk * heads * d (two products of multiply-adds); 'vs sdpa' > 1 means faster than
PyTorch. 'max err' is the largest deviation from a float64 softmax attention over the first 128
queries.

    python benchmarks/attention.py          # all cases, median of 5
    python benchmarks/attention.py --quick  # the T segmentation cases, median of 3
    python benchmarks/attention.py --dtype bfloat16  # bf16 inputs: sdpa and the AVX512-BF16 path
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from mmmv.ops.backends import load_extension  # noqa: E402

# (name, keys, queries, heads, head width)
QUICK_CASES = (
    ('T seg stage 3 (window 64)', 4096, 4096, 8, 40),
    ('T seg stage 3, last block', 4096, 1024, 8, 40),
    ('T seg stage 4 (window 32)', 1024, 1024, 16, 40),
)
CASES = QUICK_CASES + (
    ('T fit 800x1280 stage 3 (50x80)', 4000, 4000, 8, 40),
    ('S fit 800x1280 stage 3 (50x80)', 4000, 4000, 8, 48),
    ('B seg stage 3 (window 64)', 4096, 4096, 8, 64),
    ('T det stage 4 (window 56)', 3136, 3136, 16, 40),
)
CHECKED_QUERIES = 128


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='T segmentation cases, 3 runs')
    parser.add_argument('--reps', type=int, default=None, help='timed runs per variant (5)')
    parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                        help='dtype of q, k, v (bfloat16: what CPU autocast gives attention)')
    common.add_arguments(parser)
    return parser.parse_args()


def make_qkv(keys, queries, heads, width, dtype=torch.float32):
    """q, k, v as strided views of one (1, keys, 3, heads, width) projection, as in the model."""
    qkv = torch.randn(1, keys, 3, heads, width).to(dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q[:, :, :queries], k, v


def float64_error(out, q, k, v, scale):
    """Largest |out - float64 attention| over the first CHECKED_QUERIES queries."""
    q = q[:, :, :CHECKED_QUERIES].double()
    weights = torch.softmax(scale * q @ k.double().transpose(-1, -2), dim=-1)
    expected = (weights @ v.double()).transpose(1, 2).flatten(2)
    return (out[:, :CHECKED_QUERIES].double() - expected).abs().max().item()


def variants(kernel, q, k, v, scale):
    """{name: callable returning (1, lq, heads * width)}: sdpa and each ISA of the kernel."""
    fns = {'sdpa': lambda: F.scaled_dot_product_attention(q, k, v, scale=scale)
           .transpose(1, 2).flatten(2)}
    isas = kernel.supported_isas() if q.dtype == torch.float32 else kernel.supported_bf16_isas()
    for isa in isas:
        fns[f'cpp {isa}'] = lambda isa=isa: kernel.forward(q, k, v, scale, isa).flatten(2)
    return fns


def main():
    args = parse_args()
    device, matmul, log = common.start(args)
    if device.type != 'cpu':
        raise SystemExit('benchmarks/attention.py times the CPU kernel: use --device cpu')
    kernel, reason = load_extension('_attention_cpu')
    if kernel is None:
        raise SystemExit(reason)
    reps = args.reps or (3 if args.quick else 5)
    rows = []
    torch.manual_seed(0)
    for name, keys, queries, heads, width in QUICK_CASES if args.quick else CASES:
        log(f'{name}')
        q, k, v = make_qkv(keys, queries, heads, width, getattr(torch, args.dtype))
        scale = width ** -0.5
        fns = variants(kernel, q, k, v, scale)
        with torch.inference_mode():
            times = common.time_interleaved(fns, reps, device, warmup=args.warmup, log=log)
            errors = {variant: float64_error(fn(), q, k, v, scale) for variant, fn in fns.items()}
        gflop = 4 * queries * keys * heads * width / 1e9
        sdpa = common.median(times['sdpa'])
        for variant in fns:
            seconds = common.median(times[variant])
            rows.append((name, f'{keys} / {queries} / {heads} x {width}', variant,
                         common.fmt(seconds * 1e3, '.1f'), common.fmt(gflop / seconds, '.0f'),
                         common.fmt(gflop / seconds / matmul * 100, '.0f', suffix='%'),
                         common.fmt(sdpa / seconds, '.2f', suffix='x'),
                         common.fmt(errors[variant], '.1e')))
    print(f'\nmedian of {reps} interleaved runs; float32 matmul at the end: '
          f'{common.matmul_gflops(device):.1f} GFLOP/s; load {common.format_load()}\n')
    print(common.markdown_table(
        ('case', 'keys / queries / heads x width', 'variant', 'ms', 'GFLOP/s', 'of matmul',
         'vs sdpa', 'max err'), rows))


if __name__ == '__main__':
    main()
