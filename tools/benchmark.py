"""Time a whole detector or segmentor in inference, the way the test loop runs it.

    python tools/benchmark.py CONFIG [CHECKPOINT] [--shape H W] [--batch N] [--repeat K]
        [--warmup W] [--amp [--amp-force]] [--compare-amp] [--device cpu|cuda] [--threads T]

Each iteration is one ``model.test_step`` (data preprocessor, then ``mode='predict'`` with its
post-processing) on N random images of H x W pixels with their data samples, under
``torch.no_grad()``: what mmengine's test loop calls per batch, less data loading. Without
CHECKPOINT the weights are random and nothing is downloaded (every ``init_cfg`` is removed);
a random detector scores no box above the config's threshold, so its RCNN ``score_thr`` is set
to 0 and the mask head runs on ``max_per_img`` boxes, as for a trained model on a busy image.

After W untimed warm-up iterations, K timed ones (on CUDA with ``torch.cuda.synchronize()``
before and after each) give ``latency ms: median / min / max`` and ``FPS`` (images per second
at the median). ``--compare-amp`` times float32 and bfloat16 autocast interleaved, one iteration
of each in turn, and prints their ratio. Then, per precision, one more iteration measures the
peak memory (CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before; CPU:
the resident-set high-water mark above the resident set before, with large buffers mapped
separately so that freed memory leaves the resident set) and records which selective-scan and
attention backends ran, at their dispatch (:func:`mmmv.ops.backends.record_backends`).
"""
import argparse
import copy
import ctypes
import functools
import os
import re
import statistics
import time
from contextlib import nullcontext

import torch

from mmmv.cli import add_amp_argument, add_shape_argument, check_shape
from mmmv.engine import (cast_autocast_weights, inference_autocast, load_config,
                         prepare_for_inference, task_of)
from mmmv.env import amp_allowed, require_mmcv_cuda_ops
from mmmv.errors import UserError, cli_main
from mmmv.ops.backends import record_backends

DEFAULT_SHAPES = {'mmdet': (800, 1344), 'mmseg': (512, 512)}  # COCO 1333x800 padded; ADE crop
MIB = 1 << 20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Time a detector or segmentor in inference')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (default: random weights)')
    add_shape_argument(parser, default='800 1344 for detection, 512 512 for segmentation')
    parser.add_argument('--batch', type=int, default=1, help='images per iteration (1)')
    parser.add_argument('--repeat', type=int, default=5, help='timed iterations (5)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed iterations first (1)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default: cpu)")
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--compare-amp', action='store_true',
                        help='time float32 and bfloat16 autocast interleaved, print the ratio')
    add_amp_argument(parser, 'inference')
    args = parser.parse_args(argv)
    check_arguments(args)
    return args


def check_arguments(args):
    """Raise UserError naming a bad value and the allowed ones."""
    for name, minimum in (('batch', 1), ('repeat', 1), ('warmup', 0), ('threads', 1)):
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise UserError(f'--{name}', value, f'must be an integer >= {minimum}')
    if args.shape is not None:
        args.shape = check_shape(args.shape)
    if args.device not in ('cpu', 'cuda') and not args.device.startswith('cuda:'):
        raise UserError('--device', args.device, "expected 'cpu', 'cuda' or 'cuda:N'")
    if args.device != 'cpu' and not torch.cuda.is_available():
        raise UserError('--device', args.device, 'no CUDA device is visible',
                        'Use --device cpu')


def without_init_cfg(node):
    """A copy of a config node without any ``init_cfg`` / ``pretrained`` entry (no download)."""
    if isinstance(node, dict):
        return type(node)({k: without_init_cfg(v) for k, v in node.items()
                           if k not in ('init_cfg', 'pretrained')})
    if isinstance(node, (list, tuple)):
        return type(node)(without_init_cfg(v) for v in node)
    return node


def build_model(cfg, checkpoint, device):
    """The config's model on ``device``, prepared for inference as ``tools/test.py`` runs it
    (:func:`mmmv.engine.prepare_for_inference`): random weights, or ``checkpoint``'s."""
    from mmengine.registry import MODELS, init_default_scope
    task = task_of(cfg)
    init_default_scope(task)
    model_cfg = without_init_cfg(cfg.model)
    rcnn = (model_cfg.get('test_cfg') or {}).get('rcnn')
    if checkpoint is None and rcnn is not None and 'score_thr' in rcnn:
        rcnn['score_thr'] = 0.0
    model = MODELS.build(model_cfg)  # PyTorch's default initialisation: random weights
    if checkpoint is not None:
        from mmmv.checkpoint import load_checkpoint_exact
        load_checkpoint_exact(model, checkpoint, map_location='cpu')
    return prepare_for_inference(model.to(device))


def random_batch(task, shape, batch, seed=0):
    """What the test dataloader yields for ``batch`` images of ``shape`` (H, W): uint8 (3, H, W)
    images and data samples whose metainfo says they were not resized."""
    if task == 'mmdet':
        from mmdet.structures import DetDataSample as Sample
    else:
        from mmseg.structures import SegDataSample as Sample
    generator = torch.Generator().manual_seed(seed)
    h, w = shape
    inputs, samples = [], []
    for i in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator))
        samples.append(Sample(metainfo=dict(img_id=i, img_path=f'random_{i}.png', ori_shape=(h, w),
                                            img_shape=(h, w), scale_factor=(1.0, 1.0))))
    return dict(inputs=inputs, data_samples=samples)


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_interleaved(steps, repeat, warmup, device):
    """{name: [seconds, ...]}: ``warmup`` untimed calls of each step, then ``repeat`` rounds of
    one timed call of each step in turn."""
    times = {name: [] for name in steps}
    for i in range(warmup + repeat):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def _proc_status_kib(field):
    with open('/proc/self/status') as f:
        return int(re.search(rf'^{field}:\s+(\d+) kB', f.read(), re.M).group(1))


def release_cpu_memory():
    """Map large buffers separately from now on and give freed memory back, so that the
    resident set follows the live tensors (glibc; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return
    libc.mallopt(-3, 64 << 10)  # M_MMAP_THRESHOLD: buffers of 64 KiB and more get own mappings
    libc.mallopt(-1, 128 << 10)  # M_TRIM_THRESHOLD
    libc.malloc_trim(0)


def peak_memory_mib(step, device):
    """Peak memory of one call of ``step`` above what was in use before it, in MiB, or None
    where it cannot be read (a CPU without /proc)."""
    import gc
    gc.collect()
    if device.type == 'cuda':
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / MIB
    try:
        release_cpu_memory()
        before = _proc_status_kib('VmRSS')
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # the high-water mark restarts from the current resident set
        step()
        return (_proc_status_kib('VmHWM') - before) / 1024
    except (OSError, AttributeError):
        return None


def format_backends(counter):
    """'selective_scan cpp float32 x 8, attention cpp bfloat16 x 4' (calls of one iteration)."""
    return ', '.join(f'{op} {backend} {dtype} x {calls}'
                     for (op, backend, dtype), calls in sorted(counter.items())) or 'none called'


def precision_steps(model, data, args, device):
    """{'float32' / 'bfloat16': step} for the precisions asked for. bfloat16 runs the model with
    its autocast weights stored in bfloat16 (:func:`mmmv.engine.cast_autocast_weights`, as
    ``tools/test.py --amp`` runs it): a copy when float32 runs too."""
    use_amp = args.compare_amp or args.amp
    amp = use_amp and amp_allowed(device, args.amp_force)
    steps = {}
    if args.compare_amp or not amp:
        steps['float32'] = functools.partial(run_step, model, data, nullcontext())
    if amp:
        bf16_model = copy.deepcopy(model) if 'float32' in steps else model
        cast_autocast_weights(bf16_model, torch.bfloat16)
        steps['bfloat16'] = functools.partial(run_step, bf16_model, data,
                                              inference_autocast(device, force=True))
    return steps


def run_step(model, data, autocast):
    """One test-loop iteration: ``model.test_step(data)`` without autograd, in ``autocast``."""
    with torch.no_grad(), autocast:
        model.test_step(data)


def report(name, seconds, batch, peak, backends):
    ms = [s * 1e3 for s in seconds]
    median = statistics.median(ms)
    peak_text = f'{peak:.0f} MiB' if peak is not None else 'not available'
    return [f'[{name}]',
            f'latency ms: median {median:.1f} / min {min(ms):.1f} / max {max(ms):.1f} '
            f'({len(ms)} timed iterations)',
            f'FPS: {batch / median * 1e3:.2f}',
            f'peak memory: {peak_text}',
            f'backends: {format_backends(backends)}']


def speedup_line(float32, bfloat16):
    """'bfloat16 vs float32: 1.84x (median latencies); per interleaved round: median 1.85x, min
    1.71x, max 1.93x'. The ratios within a round, whose two runs are adjacent in time, do not
    carry the machine's slower drifts."""
    ratio = statistics.median(float32) / statistics.median(bfloat16)
    rounds = [a / b for a, b in zip(float32, bfloat16)]
    return (f'bfloat16 vs float32: {ratio:.2f}x (median latencies); per interleaved round: median '
            f'{statistics.median(rounds):.2f}x, min {min(rounds):.2f}x, max {max(rounds):.2f}x')


def load_text():
    try:
        return '/'.join(f'{x:.2f}' for x in os.getloadavg())
    except OSError:
        return 'unknown'


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load_config(args.config)
    task = task_of(cfg)
    require_mmcv_cuda_ops(device, task)
    shape = tuple(args.shape) if args.shape else DEFAULT_SHAPES[task]
    model = build_model(cfg, args.checkpoint, device)
    data = random_batch(task, shape, args.batch)
    steps = precision_steps(model, data, args, device)
    where = (torch.cuda.get_device_name(device) if device.type == 'cuda' else
             f'cpu, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}')
    print(f'{type(model).__name__} ({task}) from {args.config}, '
          f'{args.checkpoint or "random weights"}; input {args.batch} x 3 x {shape[0]} x '
          f'{shape[1]}; {where}; torch {torch.__version__}; load {load_text()}', flush=True)
    times = time_interleaved(steps, args.repeat, args.warmup, device)
    lines = []
    for name, step in steps.items():
        with record_backends() as backends:
            peak = peak_memory_mib(step, device)
        lines += report(name, times[name], args.batch, peak, backends)
    if len(steps) == 2:
        lines.append(speedup_line(times['float32'], times['bfloat16']))
    lines.append(f'load after: {load_text()}')
    print('\n'.join(lines))


if __name__ == '__main__':
    cli_main(main)
