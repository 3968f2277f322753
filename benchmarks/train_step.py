"""Whole-model training step, with and without ``with_cp``: time and peak memory (not a test).

Models, built from the configs as the training tools build them (``mmmv.engine.load_config``,
which turns SyncBN into BN on a machine without CUDA; the backbone with ``init_cfg=None``, i.e.
random weights, no checkpoint file needed):

    det  Cascade Mask R-CNN, MambaVision-T  (configs/det/cascade_mambavision_t_coco.py), 800x1280
    seg  UperNet, MambaVision-T            (configs/seg/upernet_mambavision_t_ade20k.py), 512x512

One step = ``model.train_step(batch, optim_wrapper)`` on a fake batch of 2 images: the data
preprocessor (normalise, pad, stack), forward with losses, backward and the optimizer step of the
config (AdamW with its paramwise settings). The batch is random pixels with plausible targets:
detection 8 boxes per image (32..400 pixels a side), their labels and rectangle masks; segmentation
a label map of 150 classes in 32x32 blocks with a few ignored (255) blocks. The step runs in
float32 (a plain OptimWrapper) unless --amp keeps the config's mixed-precision wrapper (on a CPU:
bfloat16 autocast, see mmmv.engine.amp).

Each model is timed with ``with_cp`` False and True, interleaved (median of --reps after a warm-up
step that also creates the optimizer state), then the peak memory of one step is measured in a
fresh child process per setting (method in ``benchmarks/common.py``: above the model, its
optimizer state and the batch). The roofline line divides the multiply-accumulates of one
with_cp=False step, counted op by op while it runs (``common.counted_step_macs``: forward,
backward, optimizer; a detector's sampled RoIs as sampled), by the step time, against the
measured float32 matmul rate; with_cp's recomputation is not counted as useful work. For
reference the table also gives get_flops' forward count of one image (``mmmv.flops``: mmdet's
tensor mode, which runs a detector's box and mask heads on all 1,000 test proposals of each cascade
stage, so 3 x 2 x that is no estimate of a detector's training step).

    python benchmarks/train_step.py                 # both models
    python benchmarks/train_step.py --models seg --reps 3
"""
import argparse
import copy
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {  # name: (config, (H, W))
    'det': ('configs/det/cascade_mambavision_t_coco.py', (800, 1280)),
    'seg': ('configs/seg/upernet_mambavision_t_ade20k.py', (512, 512)),
}
BATCH = 2
BOXES_PER_IMAGE = 8
NUM_SEG_CLASSES = 150


def quiet_logs():
    """mmengine logs every parameter's optimizer settings at INFO: keep warnings only."""
    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)


def load_cfg(name, with_cp, amp):
    from mmmv.engine import load_config
    cfg = load_config(os.path.join(ROOT, MODELS[name][0]))
    backbone = cfg.model.backbone
    backbone.init_cfg = None
    backbone.pop('pretrained', None)
    backbone.with_cp = with_cp
    if not amp:
        cfg.optim_wrapper.type = 'OptimWrapper'
        for key in ('loss_scale', 'dtype'):
            cfg.optim_wrapper.pop(key, None)
    return cfg


def build(name, with_cp, amp, device):
    """(model, optim_wrapper) of a config, seed 0."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import mmmv  # noqa: F401
    from mmmv.engine import task_of
    quiet_logs()
    cfg = load_cfg(name, with_cp, amp)
    scope = task_of(cfg)
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import MODELS as registry
    else:
        from mmseg.registry import MODELS as registry
    torch.manual_seed(0)
    model = registry.build(copy.deepcopy(cfg.model))
    model.init_weights()
    if device.type != 'cuda':
        model = revert_sync_batchnorm(model)
    model = model.to(device).train()
    return model, build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))


def fake_batch(shape, device, annotate):
    """BATCH random uint8 images of ``shape`` and their samples: ``annotate(gen, h, w)`` returns
    one image's data sample (seeded generator ``gen``)."""
    h, w = shape
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(BATCH):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8).to(device))
        samples.append(annotate(gen, h, w).to(device))
    return dict(inputs=inputs, data_samples=samples)


def _meta(h, w):
    return dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1.0, 1.0),
                flip=False, flip_direction=None)


def det_sample(gen, h, w):
    """BOXES_PER_IMAGE random boxes (32..400 pixels a side) with box-shaped masks, 80 classes."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    size = torch.randint(32, 401, (BOXES_PER_IMAGE, 2), generator=gen)
    x1 = (torch.rand(BOXES_PER_IMAGE, generator=gen) * (w - size[:, 0])).long()
    y1 = (torch.rand(BOXES_PER_IMAGE, generator=gen) * (h - size[:, 1])).long()
    boxes = torch.stack([x1, y1, x1 + size[:, 0], y1 + size[:, 1]], 1).float()
    masks = np.zeros((BOXES_PER_IMAGE, h, w), dtype=np.uint8)
    for i, (a, b, c, d) in enumerate(boxes.long().tolist()):
        masks[i, b:d, a:c] = 1
    sample = DetDataSample(metainfo=_meta(h, w))
    sample.gt_instances = InstanceData(
        bboxes=HorizontalBoxes(boxes), masks=BitmapMasks(masks, h, w),
        labels=torch.randint(0, 80, (BOXES_PER_IMAGE, ), generator=gen))
    return sample


def seg_sample(gen, h, w):
    """A label map of random 32x32 blocks over NUM_SEG_CLASSES classes, 5% ignored (255)."""
    import torch.nn.functional as F
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    blocks = torch.randint(0, NUM_SEG_CLASSES, (1, 1, h // 32, w // 32), generator=gen)
    blocks[torch.rand(blocks.shape, generator=gen) < 0.05] = 255
    sample = SegDataSample(metainfo=_meta(h, w))
    sample.gt_sem_seg = PixelData(
        data=F.interpolate(blocks.float(), size=(h, w), mode='nearest').long()[0])
    return sample


def make_step(name, with_cp, amp, device):
    model, optim_wrapper = build(name, with_cp, amp, device)
    shape = MODELS[name][1]
    batch = fake_batch(shape, device, det_sample if name == 'det' else seg_sample)

    def step():
        model.train_step(batch, optim_wrapper)
    return step


def build_child_step(spec):
    device = torch.device(spec['device'])
    return make_step(spec['model'], spec['with_cp'], spec['amp'], device), device, spec['warmup']


def forward_macs(name):
    """Forward MACs of one image of the model's input size, from mmmv.flops (None if absent)."""
    try:
        from mmmv.flops import model_complexity
    except ImportError:
        return None
    cfg = load_cfg(name, False, False)
    return model_complexity(cfg, MODELS[name][1])['flops']


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', default='det,seg', help='comma list of det, seg')
    parser.add_argument('--reps', type=int, default=3, help='timed steps per setting (3)')
    parser.add_argument('--amp', action='store_true',
                        help="keep the config's mixed-precision optim wrapper")
    parser.add_argument('--memory', action=argparse.BooleanOptionalAction, default=True,
                        help='measure peak memory in child processes')
    common.add_arguments(parser)
    args = parser.parse_args()
    args.models = [m for m in args.models.split(',') if m]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        parser.error(f'--models: unknown {bad}; choose from {list(MODELS)}')
    return args


def main():
    args = parse_args()
    device, matmul, log = common.start(
        args, f'; step precision: {"config (mixed)" if args.amp else "float32"}')

    rows = []
    for name in args.models:
        load_before = load_after = common.load_average()
        times = {f'with_cp={cp}': [] for cp in (False, True)}
        if args.timing:
            steps = {f'with_cp={cp}': make_step(name, cp, args.amp, device)
                     for cp in (False, True)}
            log(f'timing {name}')
            times = common.time_interleaved(steps, args.reps, device, warmup=args.warmup, log=log)
            load_after = common.load_average()
            del steps
            common.release_memory()
        macs = step_macs = None
        if args.flops:
            macs = forward_macs(name)
            log(f'counting the multiply-accumulates of one {name} step')
            step_macs = common.counted_step_macs(make_step(name, False, args.amp, device))
        peaks = {}
        for cp in (False, True):
            if args.memory:
                log(f'memory {name} with_cp={cp}')
                spec = dict(model=name, with_cp=cp, amp=args.amp, device=str(device),
                            threads=torch.get_num_threads(), warmup=1)
                peaks[cp] = common.measure_peak(os.path.abspath(__file__), spec)
        for cp in (False, True):
            t = common.median(times[f'with_cp={cp}'])
            gflops = None if step_macs is None else 2 * step_macs / t / 1e9
            rows.append([
                name, MODELS[name][0], f'{MODELS[name][1][0]}x{MODELS[name][1][1]}', cp,
                common.fmt(t, '.2f'), len(times[f'with_cp={cp}']),
                common.fmt(peaks.get(cp), '.0f'),
                common.fmt(None if not cp or not peaks.get(cp) or not peaks.get(False)
                           else 100 * (1 - peaks[cp] / peaks[False]), '.0f', suffix='%'),
                common.fmt(None if macs is None else macs / 1e9, '.0f'),
                common.fmt(None if step_macs is None else step_macs / 1e9, '.0f'),
                common.fmt(gflops, '.1f'),
                common.fmt(None if gflops is None else 100 * gflops / matmul, '.0f', suffix='%'),
                f'{common.format_load(load_before)} / {common.format_load(load_after)}'])
    headers = ['model', 'config', 'input', 'with_cp', 'median s', 'runs', 'peak MiB',
               'memory saved', 'get_flops GMAC (1 image, fwd)', 'GMAC per step (counted)',
               'GFLOP/s', 'of matmul', 'load before / after']
    print(f'\n#### Training step, batch {BATCH}\n')
    print(common.markdown_table(headers, rows))
    print(f'\nfloat32 matmul at the end: {common.matmul_gflops(device):.1f} GFLOP/s; '
          f'load {common.format_load()}')


if __name__ == '__main__':
    if common.CHILD_FLAG in sys.argv:
        common.child_main(build_child_step)
    else:
        main()
