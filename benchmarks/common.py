"""Helpers shared by the benchmark scripts: timing, peak memory, FLOPs, the machine, tables.

Timing: wall-clock seconds of whole calls (``time.perf_counter``; on CUDA with a synchronize
before and after), after warm-up calls, reported as the median. Variants that are compared are
timed interleaved (one call of each in turn, round after round), so that a change of machine load
during the run hits all of them alike and their ratios stay fair.

Peak memory (:func:`measure_peak`), one fresh child process per measurement:

- CPU: PyTorch's CPU allocations are plain ``malloc`` calls that neither ``tracemalloc`` nor a
  PyTorch counter sees, so we read the kernel's resident-set high-water mark. The child runs with
  glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``), so that every tensor buffer
  of 64 KiB or more is its own mapping and goes back to the system when freed: the resident set then
  follows the live tensors instead of the allocator's cache. The child builds the model and its
  inputs, runs the step ``warmup`` times (lazy state such as optimizer moments is created then),
  frees what it can (``gc.collect``, ``malloc_trim``), reads its resident set, resets the
  high-water mark (``/proc/self/clear_refs``, Linux >= 4.0), runs the step once more and reads the
  high-water mark (``VmHWM``). Peak = high-water mark - resident set before the step: what one step
  needs on top of the model, its inputs and persistent state, with library workspaces included
  and page granularity. Children are not used for timing (the fixed threshold makes allocation
  slower).
- CUDA: ``torch.cuda.max_memory_allocated`` around the step, less the memory allocated before it
  (tensors only; the caching allocator's reserve is not counted).
"""
import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch

CHILD_FLAG = '--child'
CHILD_ENV = {'MALLOC_MMAP_THRESHOLD_': '65536', 'MALLOC_TRIM_THRESHOLD_': '131072'}
MIB = 1 << 20


# ------------------------------------------------------------------------------------ machine
def load_average():
    """The 1, 5 and 15 minute load averages (Linux / macOS)."""
    try:
        return os.getloadavg()
    except OSError:
        return (float('nan'), ) * 3


def cpu_model():
    """The processor's model name, from /proc/cpuinfo where there is one."""
    try:
        with open('/proc/cpuinfo') as f:
            match = re.search(r'^model name\s*:\s*(.+)$', f.read(), re.M)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device):
    """One line: device, cores and threads, PyTorch version, date."""
    if device.type == 'cuda':
        where = f'{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})'
    else:
        where = (f'{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, '
                 f'{torch.backends.cpu.get_cpu_capability()}')
    return (f'{datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}, {where}, '
            f'torch {torch.__version__}')


def format_load(load=None):
    return '/'.join(f'{x:.2f}' for x in (load or load_average()))


# ------------------------------------------------------------------------------------- timing
def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn, device):
    """Seconds one call of fn takes (device work included)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_interleaved(fns, reps, device, warmup=1, log=None):
    """Time several callables in turns. fns: {name: fn}; reps: {name: timed calls} (or an int for
    all). Each gets ``warmup`` untimed calls first. Returns {name: [seconds, ...]}."""
    if isinstance(reps, int):
        reps = dict.fromkeys(fns, reps)
    times = {name: [] for name in fns}
    rounds = max(reps.values(), default=0) + warmup
    for r in range(rounds):
        for name, fn in fns.items():
            if r >= warmup + reps[name]:
                continue
            seconds = time_call(fn, device)
            if r >= warmup:
                times[name].append(seconds)
            if log:
                log(f'    {name}: {seconds:.3f} s{" (warm-up)" if r < warmup else ""} '
                    f'[load {format_load()}]')
    return times


def median(values):
    return statistics.median(values) if values else float('nan')


def add_arguments(parser):
    """The options every benchmark script takes: --warmup, --timing, --flops, --device,
    --threads."""
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs first (1)')
    parser.add_argument('--timing', action=argparse.BooleanOptionalAction, default=True,
                        help='time the runs (--no-timing: memory and FLOPs only)')
    parser.add_argument('--flops', action=argparse.BooleanOptionalAction, default=True,
                        help='count FLOPs with mmmv.flops for the roofline columns')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')


def start(args, note=''):
    """Set ``args.threads``, print the machine line and the measured matmul rate (``note``
    appended); returns (device, matmul GFLOP/s, log) where ``log`` prints progress to stderr."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f'machine: {machine_description(device)}; load {format_load()}')
    matmul = matmul_gflops(device)
    print(f'float32 matmul: {matmul:.1f} GFLOP/s{note}', flush=True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)
    return device, matmul, log


def matmul_gflops(device, n=None, reps=5):
    """Measured float32 matrix-multiply rate of this device in GFLOP/s (2 n^3 per product; median
    of ``reps`` products of n x n matrices after one warm-up)."""
    n = n or (8192 if device.type == 'cuda' else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    with torch.inference_mode():
        times = time_interleaved({'mm': lambda: a @ b}, reps, device)['mm']
    return 2 * n**3 / median(times) / 1e9


def cuda_syncs_and_launches(step, device):
    """(host synchronisations, CUDA kernel launches) of one call of step on a GPU.

    Synchronisations: the operations torch.cuda's sync debug mode warns about (``.item()``,
    device-to-host copies, ``nonzero`` ...). Launches: kernel-launch calls seen by torch.profiler.
    """
    import warnings

    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode('default')
    torch.cuda.synchronize(device)
    syncs = sum('synchroniz' in str(w.message).lower() for w in caught)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize(device)
    launches = sum(e.count for e in prof.key_averages() if 'LaunchKernel' in e.key)
    return syncs, launches


# -------------------------------------------------------------------------------------- FLOPs
def count_macs(model, inputs):
    """Multiply-accumulates of model(*inputs) by ``mmmv.flops`` (fvcore-style: one MAC = one
    "FLOP"; selective scan and attention included), or None where that module is unavailable."""
    try:
        from mmmv.flops import flop_analyzer
    except ImportError:
        return None
    analyzer = flop_analyzer(model, inputs)
    with torch.no_grad():
        return analyzer.total()


def counted_step_macs(step):
    """Multiply-accumulates one call of ``step()`` actually runs (forward, backward, optimizer),
    counted op by op at run time by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
    convolutions, attention incl. PyTorch's CPU flash kernel and its backward). Data-dependent work
    (a detector's sampled RoIs) is counted as run; ops outside ATen's dispatcher (the C++ scan,
    mmcv's RoIAlign) are not, nor elementwise ops."""
    from torch.utils import flop_counter
    aten = torch.ops.aten

    def cpu_flash(query, key, value, *args, **kwargs):
        return flop_counter.sdpa_flop_count(query, key, value)

    def cpu_flash_backward(grad_out, query, key, value, *args, **kwargs):
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_flash_backward}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        step()
    return counter.get_total_flops() / 2


# ------------------------------------------------------------------------------------- memory
def release_memory():
    """Give freed memory back (garbage cycles, glibc's free lists, CUDA's cache)."""
    gc.collect()
    _malloc_trim()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _proc_status_kib(field):
    with open('/proc/self/status') as f:
        return int(re.search(rf'^{field}:\s+(\d+) kB', f.read(), re.M).group(1))


def _malloc_trim():
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL('libc.so.6').malloc_trim(0)


def cpu_step_peak(step, warmup=1):
    """Run in a child (see the module docstring): bytes above the pre-step resident set."""
    for _ in range(warmup):
        step()
    gc.collect()
    _malloc_trim()
    before = _proc_status_kib('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM to the current resident set
    step()
    return (_proc_status_kib('VmHWM') - before) * 1024


def cuda_step_peak(step, device, warmup=1):
    """Bytes of CUDA tensors one step allocates at its peak, above those allocated before it."""
    for _ in range(warmup):
        step()
    gc.collect()
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def measure_peak(script, spec, timeout=None):
    """Peak memory in MiB of one step described by ``spec`` (a JSON-able dict), measured by
    ``script`` run as a child (``script --child JSON``, which must call :func:`child_main`).
    Returns None (and prints why) when the child fails."""
    env = dict(os.environ, **CHILD_ENV)
    cmd = [sys.executable, script, CHILD_FLAG, json.dumps(spec)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f'  memory child timed out: {spec}', flush=True)
        return None
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith('{')]
    if out.returncode != 0 or not lines:
        print(f'  memory child failed ({out.returncode}): {out.stderr[-2000:]}', flush=True)
        return None
    return json.loads(lines[-1])['peak_bytes'] / MIB


def child_main(build_step):
    """Entry of a memory child: ``build_step(spec)`` returns (step, device, warmup)."""
    spec = json.loads(sys.argv[sys.argv.index(CHILD_FLAG) + 1])
    if spec.get('threads'):
        torch.set_num_threads(spec['threads'])
    step, device, warmup = build_step(spec)
    if device.type == 'cuda':
        peak = cuda_step_peak(step, device, warmup)
    else:
        peak = cpu_step_peak(step, warmup)
    print(json.dumps({'peak_bytes': peak}), flush=True)


# ------------------------------------------------------------------------------------- output
def markdown_table(headers, rows):
    """A GitHub markdown table; numbers right-aligned by the renderer via the '---:' markers."""
    def cell(v):
        return '' if v is None else str(v)
    lines = ['| ' + ' | '.join(headers) + ' |',
             '|' + '|'.join('---' if i == 0 else '---:' for i in range(len(headers))) + '|']
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def fmt(value, spec='.2f', none='-', suffix=''):
    """value formatted with spec and suffix; ``none`` for None and NaN."""
    if value is None or value != value:
        return none
    return format(value, spec) + suffix
