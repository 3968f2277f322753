"""mmmv's CPU RoIAlign kernel (mmmv.ops.roi_align) against a float64 loop written from the
definition (Mask R-CNN's RoIAlign, Detectron2's half-pixel alignment), against mmcv's own CPU
kernel, in bfloat16, and inside mmcv's RoIAlign module (where it runs and where it must not)."""
import importlib
import math

import pytest
import torch

from mmmv.ops.backends import load_extension, record_backends
from mmmv.ops.roi_align import cpu_roi_align_unavailable_reason, roi_align_cpu

pytestmark = pytest.mark.skipif(load_extension('_roi_align_cpu')[0] is None,
                                reason='_roi_align_cpu not built')


def bilinear64(plane, y, x):
    """Bilinear sample of a (H, W) float64 map; zero more than one pixel outside, clamped to the
    border within one pixel."""
    h, w = plane.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = min(int(y), h - 1), min(int(x), w - 1)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    ly, lx = (y - y0 if y0 < h - 1 else 0.0), (x - x0 if x0 < w - 1 else 0.0)
    return ((1 - ly) * (1 - lx) * plane[y0, x0] + (1 - ly) * lx * plane[y0, x1]
            + ly * (1 - lx) * plane[y1, x0] + ly * lx * plane[y1, x1])


def roi_align_loop(features, rois, out_h, out_w, scale, sampling_ratio, aligned):
    """(K, C, out_h, out_w) float64, one sample at a time."""
    feats = features.double()
    out = torch.zeros(len(rois), feats.shape[1], out_h, out_w, dtype=torch.float64)
    shift = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.double().tolist()):
        sx, sy = x1 * scale - shift, y1 * scale - shift
        bw, bh = x2 * scale - shift - sx, y2 * scale - shift - sy
        if not aligned:
            bw, bh = max(bw, 1.0), max(bh, 1.0)
        gh = sampling_ratio or math.ceil(bh / out_h)
        gw = sampling_ratio or math.ceil(bw / out_w)
        for c in range(feats.shape[1]):
            plane = feats[int(b), c]
            for ph in range(out_h):
                for pw in range(out_w):
                    total = sum(bilinear64(plane, sy + (ph + (iy + 0.5) / gh) * bh / out_h,
                                           sx + (pw + (ix + 0.5) / gw) * bw / out_w)
                                for iy in range(gh) for ix in range(gw))
                    out[k, c, ph, pw] = total / max(gh * gw, 1)
    return out


def random_rois(n, batch, width, height, seed=0):
    """Boxes (batch index, x1, y1, x2, y2) in input pixels, some reaching outside the image."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width * 1.2, height * 1.2]) - 0.1 * width
    wh = torch.rand(n, 2, generator=g) * torch.tensor([width / 2, height / 2])
    index = torch.randint(0, batch, (n, 1), generator=g).float()
    return torch.cat([index, xy, xy + wh], 1)


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
def test_matches_a_float64_loop(aligned, sampling_ratio):
    torch.manual_seed(0)
    features = torch.randn(2, 3, 9, 11)
    rois = random_rois(8, 2, width=44, height=36)  # stride 4
    rois[0] = torch.tensor([1, 10.0, 10.0, 10.0, 10.0])  # an empty box
    rois[1] = torch.tensor([0, -30.0, -30.0, -8.0, -8.0])  # entirely outside
    got = roi_align_cpu(features, rois, (3, 2), 0.25, sampling_ratio, aligned)
    want = roi_align_loop(features, rois, 3, 2, 0.25, sampling_ratio, aligned)
    assert got.dtype == torch.float32 and got.shape == (8, 3, 3, 2)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_matches_mmcvs_kernel_on_detector_shapes():
    """The boxes and stride of a Cascade R-CNN stage on the finest FPN level, 7 x 7 bins."""
    roi_align = importlib.import_module('mmcv.ops.roi_align').roi_align
    torch.manual_seed(1)
    features = torch.randn(1, 64, 50, 84)
    rois = random_rois(100, 1, width=336, height=200, seed=1)
    got = roi_align_cpu(features, rois, (7, 7), 0.25, 0, True)
    want = roi_align(features, rois, (7, 7), 0.25, 0, 'avg', True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_map_is_read_as_is_and_output_rounded_once():
    torch.manual_seed(2)
    features = torch.randn(1, 32, 20, 24).bfloat16()
    rois = random_rois(20, 1, width=96, height=80, seed=2)
    got = roi_align_cpu(features, rois, (7, 7), 0.25, 0, True)
    want = roi_align_cpu(features.float(), rois, (7, 7), 0.25, 0, True)
    assert got.dtype == torch.bfloat16
    # float32 arithmetic on the bf16 values, one rounding of the result: within 2^-8 relative
    torch.testing.assert_close(got.float(), want, rtol=2 ** -8, atol=1e-6)


def test_bad_boxes_are_named():
    features = torch.randn(2, 3, 8, 8)
    with pytest.raises(RuntimeError, match=r'box 0 has batch index 2, expected 0..1'):
        roi_align_cpu(features, torch.tensor([[2.0, 0, 0, 4, 4]]), (2, 2), 1.0)
    with pytest.raises(RuntimeError, match='negative size'):
        roi_align_cpu(features, torch.tensor([[0.0, 4, 4, 1, 1]]), (2, 2), 1.0, aligned=True)
    with pytest.raises(RuntimeError, match=r'rois must be \(K, 5\)'):
        roi_align_cpu(features, torch.zeros(3, 4), (2, 2), 1.0)


def test_mmcv_module_runs_it_in_inference_and_its_own_kernel_for_training():
    import mmmv  # noqa: F401  (import mmmv wraps mmcv's RoIAlign module)
    RoIAlign = importlib.import_module('mmcv.ops.roi_align').RoIAlign
    layer = RoIAlign((7, 7), spatial_scale=0.25, sampling_ratio=0)
    torch.manual_seed(3)
    features = torch.randn(1, 8, 16, 16, requires_grad=True)
    rois = random_rois(5, 1, width=64, height=64, seed=3)
    with record_backends() as calls, torch.no_grad():
        inference = layer(features, rois)
    assert calls == {('roi_align', 'cpp', 'float32'): 1}
    with record_backends() as calls:
        training = layer(features, rois)
        training.sum().backward()
    assert not calls and features.grad.abs().sum() > 0  # mmcv's kernel, with its backward
    torch.testing.assert_close(inference, training.detach(), rtol=1e-5, atol=1e-5)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert layer(features.bfloat16(), rois).dtype == torch.bfloat16
    assert 'pool_mode' in cpu_roi_align_unavailable_reason(features, rois, 'max')
