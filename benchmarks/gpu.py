"""Scan backends against each other and MambaVision-T throughput, for a device check (not a test).

The one script to run when a GPU is at hand (issue 6); it runs on a CPU too, with the CPU's
backends, which is how it is checked on machines without one.

1. Scan: every backend that can run on the device (``mmmv.ops.BACKENDS``: on CUDA mamba-ssm, if it
   imports, and the PyTorch scan; on a CPU the C++ kernel and the PyTorch scan) against the
   sequential loop in float64 on the same inputs: largest relative error of the output and of the
   gradients of all seven inputs (u, delta, A, B, C, D, delta_bias; softplus on), with a pass / fail
   against ``--tol`` (default 1e-4, float32 rounding over thousands of steps).
2. Backbone: MambaVision-T (random weights, seed 0, train mode without drop path) on one batch at
   224x224 with each backend: outputs and all parameter gradients (as one vector) against the
   first backend's, relative to the largest reference value.

Both checks run with TF32 off (``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32``; cuDNN's convolutions use TF32 by default on Ampere and
newer GPUs): its 10-bit mantissa would amplify scan-level differences through the backbone beyond
the float32 tolerance and report a false failure. The throughput runs with the default settings.
3. Throughput: MambaVision-T classifier-style forward (the backbone's four stages; no head, which
   is negligible) at 224x224, batch ``--batch`` (128 as in the paper, whose T reaches 6,298 img/s on
   an A100), per backend, float32 and bfloat16 autocast, in images per second (median of
   ``--reps`` after a warm-up).

    python benchmarks/gpu.py --device cuda             # the device check
    python benchmarks/gpu.py --device cpu --batch 2    # the same, small, on a CPU

The dense-prediction sizes (512x512 and 800x1280 with the published windows, and Swin next to
them) come from ``python benchmarks/backbone.py --device cuda``, which also counts host syncs and
kernel launches per step.
"""
import argparse
import contextlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import scan  # noqa: E402

# batch, channels, state, tokens: T's stage-3 window at 512x512
SCAN_SHAPE = (2, 160, scan.STATE, 4096)


def usable_backends(device):
    """The concrete scan backends that can run tensors of ``device``, in preference order."""
    from mmmv.ops import BACKENDS, scan_backend
    usable = []
    for name in BACKENDS[1:]:
        try:
            scan_backend(torch.empty(0, device=device), name)
        except RuntimeError:
            continue
        usable.append(name)
    return usable


@contextlib.contextmanager
def scan_backend_env(name):
    """Make every ``selective_scan`` call without a backend argument use ``name``."""
    from mmmv.ops.selective_scan import ENV_VAR
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = name
    try:
        yield
    finally:
        if previous is None:
            del os.environ[ENV_VAR]
        else:
            os.environ[ENV_VAR] = previous


@contextlib.contextmanager
def tf32_disabled():
    """Matmuls and cuDNN convolutions in full float32 (no TF32) inside; the settings before are
    restored on exit."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def run_checks(device, backends, tol, check_batch):
    """The scan and backbone comparisons, with TF32 off; True when all pass."""
    with tf32_disabled():
        print('\nTF32 is off for the comparisons (torch.backends.cuda.matmul.allow_tf32 = '
              'torch.backends.cudnn.allow_tf32 = False)')
        ok = check_scan(device, backends, tol)
        ok &= check_backbone(device, backends, tol, check_batch)
    return ok


def relative_error(x, ref):
    """max |x - ref| / max |ref| (0 when both are 0)."""
    scale = ref.abs().max().item()
    err = (x.double() - ref).abs().max().item()
    return err / scale if scale else err


def scan_inputs(device, dtype):
    """``scan.py``'s mixer-like inputs of SCAN_SHAPE (seed 0) in ``dtype``, requiring grad."""
    b, d, _, length = SCAN_SHAPE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tensors = scan.make_inputs(b, d, length, torch.device('cpu'))
    return {k: v.to(device, dtype).requires_grad_() for k, v in tensors.items()}


def scan_outputs(fn, inputs, grad_out):
    """(y, gradients of the inputs) of ``fn(**inputs, delta_softplus=True)``."""
    y = fn(**inputs, delta_softplus=True)
    grads = torch.autograd.grad(y, list(inputs.values()), grad_out)
    return y, grads


def check_scan(device, backends, tol):
    from mmmv.ops import selective_scan, selective_scan_ref
    ref_inputs = scan_inputs(device, torch.float64)
    grad_out = torch.randn(ref_inputs['u'].shape, generator=torch.Generator().manual_seed(1),
                           dtype=torch.float64).to(device)
    y_ref, g_ref = scan_outputs(selective_scan_ref, ref_inputs, grad_out)
    rows, ok = [], True
    for name in backends:
        inputs = scan_inputs(device, torch.float32)
        y, grads = scan_outputs(lambda **kw: selective_scan(**kw, backend=name), inputs,
                                grad_out.float())
        errors = [relative_error(y, y_ref)] + [relative_error(g, r) for g, r in zip(grads, g_ref)]
        passed = max(errors) <= tol
        ok &= passed
        rows.append([name] + [f'{e:.1e}' for e in errors] + ['pass' if passed else 'FAIL'])
    print(f'\n#### Scan against the float64 loop, shape (b, d, n, l) = {SCAN_SHAPE}, '
          f'relative error, tolerance {tol:g}\n')
    print(common.markdown_table(['backend', 'y'] + [f'd{k}' for k in ref_inputs] + ['result'],
                                rows))
    return ok


def build_tiny(device):
    from mmmv.models import MambaVision
    torch.manual_seed(0)
    model = MambaVision('tiny', drop_path_rate=0.0)
    model.init_weights()
    return model.to(device)


def backbone_outputs(model, x, backend):
    """Outputs and parameter gradients of one train-mode forward + backward with ``backend``."""
    model.train()
    model.zero_grad(set_to_none=True)
    with scan_backend_env(backend):
        outs = model(x)
        sum((o * torch.linspace(-1, 1, o.numel(), device=o.device).view_as(o)).sum()
            for o in outs).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return [o.detach().double() for o in outs], grads


def check_backbone(device, backends, tol, batch):
    if len(backends) < 2:
        print('\nbackbone check: only one backend can run here, nothing to compare')
        return True
    model = build_tiny(device)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(2)).to(device)
    ref_outs, ref_grads = backbone_outputs(model, x, backends[0])
    rows, ok = [], True
    for name in backends[1:]:
        outs, grads = backbone_outputs(model, x, name)
        out_err = max(relative_error(o, r) for o, r in zip(outs, ref_outs))
        # All gradients as one vector: a conv bias before train-mode BatchNorm has a gradient of
        # rounding noise only, which no per-parameter relative error can judge.
        names = sorted(ref_grads)
        grad_err = relative_error(torch.cat([grads[n].flatten() for n in names]),
                                  torch.cat([ref_grads[n].double().flatten() for n in names]))
        worst = max(names, key=lambda n: (grads[n] - ref_grads[n]).abs().max().item())
        passed = max(out_err, grad_err) <= tol and grads.keys() == ref_grads.keys()
        ok &= passed
        rows.append([name, backends[0], f'{out_err:.1e}', f'{grad_err:.1e}', worst,
                     'pass' if passed else 'FAIL'])
    print(f'\n#### MambaVision-T, batch {batch} at 224x224: backends against each other, relative '
          f'error, tolerance {tol:g}\n')
    print(common.markdown_table(['backend', 'against', 'outputs', 'parameter gradients',
                                 'largest difference in', 'result'], rows))
    return ok


def throughput(device, backends, batch, reps, warmup):
    model = build_tiny(device).eval()
    x = torch.randn(batch, 3, 224, 224, device=device)
    steps = {}
    for name in backends:
        for precision in ('float32', 'bfloat16'):
            def step(name=name, precision=precision):
                autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                          enabled=precision == 'bfloat16')
                with scan_backend_env(name), autocast, torch.inference_mode():
                    model(x)
            steps[f'{name} {precision}'] = step
    times = common.time_interleaved(steps, reps, device, warmup=warmup)
    rows = [[key, f'{common.median(t) * 1e3:.1f}', f'{batch / common.median(t):.1f}']
            for key, t in times.items()]
    print(f'\n#### MambaVision-T forward at 224x224, batch {batch} (the paper: 6,298 img/s for T '
          'on an A100)\n')
    print(common.markdown_table(['scan backend, precision', 'median ms', 'img/s'], rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=128, help='throughput batch (128)')
    parser.add_argument('--check-batch', type=int, default=2, help='backbone check batch (2)')
    parser.add_argument('--reps', type=int, default=10, help='timed throughput runs (10)')
    parser.add_argument('--tol', type=float, default=1e-4, help='largest relative error (1e-4)')
    common.add_arguments(parser)
    args = parser.parse_args()
    device, _, _ = common.start(args)
    backends = usable_backends(device)
    print(f'scan backends that run on {device.type}: {", ".join(backends)}')
    ok = run_checks(device, backends, args.tol, args.check_batch)
    if args.timing:
        throughput(device, backends, args.batch, args.reps, args.warmup)
    print(f'\nchecks: {"all passed" if ok else "FAILED"}')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
