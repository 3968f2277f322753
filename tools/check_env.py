"""Print what this machine runs mmmv with, then one warning line per known trap.

    python tools/check_env.py        (or `make env`)

Versions (Python, torch with CUDA / cuDNN, mmengine, mmcv and whether its ops have CUDA kernels,
mmdet, mmseg, timm, numpy, mamba-ssm), the CPU's instruction sets, which selective-scan and
attention backends run on cpu and on cuda, then a `WARNING:` line for each trap found (a GPU
with CPU-only mmcv ops, a GPU without mamba-ssm, no native bfloat16 for --amp, MMMV_UNSAFE_LOAD
left set). Exits 0 either way; see mmmv/env.py.
"""
from mmmv.env import collect, find_traps, format_report


def main():
    info = collect()
    print('\n'.join(format_report(info)))
    traps = find_traps(info)
    for trap in traps:
        print(f'WARNING: {trap}')
    if not traps:
        print('no known trap found')


if __name__ == '__main__':
    main()
