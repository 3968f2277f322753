"""FLOP and parameter counting (mmmv/flops.py, tools/get_flops.py) against hand counts.

Every expected number here is written from the architecture (NVIDIA's released model code) in
MACs, not by calling the counter's handles: convs and linears Cout * Cin/groups * k^2 * outputs,
eval BatchNorm 2 and LayerNorm 5 per element (mmengine's conventions), the selective scan
4n + 2 per (batch, channel, token), attention 2 * tokens * L * C per window.
"""
import importlib.util
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmmv.flops import flop_analyzer, model_complexity, uncounted_ops
from mmmv.models import MambaVision
from mmmv.ops import scan_backend, selective_scan, selective_scan_ref
from mmmv.engine import load_config

ROOT = Path(__file__).resolve().parents[1]
DET_DEMO = ROOT / 'configs/det/demo_cascade_mambavision_t.py'
SEG_DEMO = ROOT / 'configs/seg/demo_upernet_mambavision_t.py'
TINY_ARCH = dict(dim=8, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2))


pytestmark = pytest.mark.usefixtures('one_thread')


def hand_count(batch, height, width, dim, in_dim, depths, num_heads, window_size, d_state=8,
               mlp_ratio=4):
    """(total, scan, attention) MACs of MambaVision(arch) on (batch, 3, height, width).

    window_size: per stage an int ws (ws x ws windows) or a (wh, ww) pair.
    """

    def conv(cin, cout, k, h_out, w_out):
        return batch * cout * cin * k * k * h_out * w_out

    h, w = math.ceil(height / 2), math.ceil(width / 2)
    total = conv(3, in_dim, 3, h, w) + 2 * batch * in_dim * h * w  # stem conv + BN
    h, w = math.ceil(h / 2), math.ceil(w / 2)
    total += conv(in_dim, dim, 3, h, w) + 2 * batch * dim * h * w
    scan = attention = 0
    for i in range(4):
        c = dim * 2**i
        if i < 2:  # ConvBlocks: two 3x3 convs, two BNs
            total += depths[i] * 2 * (conv(c, c, 3, h, w) + 2 * batch * c * h * w)
        else:  # windows of wh x ww tokens over the zero-padded map
            wh, ww = window_size[i] if isinstance(window_size[i], tuple) else (window_size[i], ) * 2
            length = wh * ww
            tokens = batch * math.ceil(h / wh) * wh * math.ceil(w / ww) * ww
            inner, dt_rank = c // 2, math.ceil(c / 16)
            for j in range(depths[i]):
                total += 2 * 5 * tokens * c  # norm1, norm2
                total += 2 * tokens * c * int(mlp_ratio * c)  # mlp fc1, fc2
                if j < math.ceil(depths[i] / 2):  # Mamba mixer
                    s = tokens * inner * (4 * d_state + 2)  # scan and D * u
                    scan += s
                    total += tokens * c * c * 2  # in_proj, out_proj
                    total += 2 * tokens * inner * 3  # depthwise conv1d_x, conv1d_z
                    total += tokens * inner * (dt_rank + 2 * d_state)  # x_proj
                    total += tokens * dt_rank * inner  # dt_proj
                    total += s
                else:  # attention: qkv, proj, q @ k^T and attn @ v in every window
                    a = 2 * tokens * length * c
                    attention += a
                    total += tokens * c * 3 * c + tokens * c * c + a
        total += 5 * batch * c * h * w  # outnorm{i}
        if i < 3:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
            total += conv(c, 2 * c, 3, h, w)  # downsample
    return total, scan, attention


@pytest.mark.parametrize('backend', ['cpp', 'torch'])
def test_backbone_flops_equal_hand_count(backend, monkeypatch):
    # 64x96 with windows (4, 2): stage 2 (4x6) pads to two 4x4 windows, stage 3 (2x3) to two
    # 2x2 windows, per image; batch 2 gives 4 windows per stage (the windows are the batch of
    # x_proj's matmul, which mmengine's own matmul handle forgets).
    if backend == 'cpp' and scan_backend(backend='auto') != 'cpp':
        pytest.skip('C++ scan extension not built')
    monkeypatch.setenv('MMMV_SCAN_BACKEND', backend)
    windows = (8, 8, 4, 2)
    model = MambaVision(TINY_ARCH, window_size=windows, fast_paths=False).eval()
    analyzer = flop_analyzer(model, torch.randn(2, 3, 64, 96))
    total, scan, attention = hand_count(2, 64, 96, **TINY_ARCH, window_size=windows)
    by_op = analyzer.by_operator()
    assert by_op['selective_scan'] == scan
    assert by_op['scaled_dot_product_attention'] == attention
    assert analyzer.total() == total
    # nothing with multiply-accumulates is left uncounted
    assert not uncounted_ops(analyzer)[1]


def test_flop_analyzer_refuses_fast_paths():
    """The fast paths skip padded tokens and run ops the counter does not know: counting them
    would silently give another number than the published computation's."""
    model = torch.nn.Sequential(MambaVision(TINY_ARCH))
    with pytest.raises(ValueError, match='0: FLOPs count the published computation'):
        flop_analyzer(model, torch.randn(1, 3, 64, 64))
    model[0].set_fast_paths(False)
    assert flop_analyzer(model, torch.randn(1, 3, 64, 64)).total() > 0


def test_backbone_flops_padded_windows():
    # Default classification windows (14, 7) on 64x64: stage 2 pads 4x4 to 14x14, stage 3 2x2 to
    # 7x7; the padded tokens are computed, so they are counted.
    model = MambaVision(TINY_ARCH, fast_paths=False).eval()
    total, _, attention = hand_count(1, 64, 64, **TINY_ARCH, window_size=(8, 8, 14, 7))
    analyzer = flop_analyzer(model, torch.randn(1, 3, 64, 64))
    assert analyzer.by_operator()['scaled_dot_product_attention'] == attention
    assert analyzer.total() == total


def test_counts_without_extra_handles_skip_scan_and_attention():
    # mmengine's defaults alone: no scan, no attention, and x_proj / dt_proj (weight @ x over
    # 4 windows, batch 2 x 2 windows per stage) counted for one window only
    windows = (8, 8, 4, 2)
    model = MambaVision(TINY_ARCH, window_size=windows, fast_paths=False).eval()
    x = torch.randn(2, 3, 64, 96)
    full = flop_analyzer(model, x).by_operator()
    plain = flop_analyzer(model, x, extra_handles=False)
    _, scan, attention = hand_count(2, 64, 96, **TINY_ARCH, window_size=windows)
    proj = 0  # x_proj + dt_proj MACs of all windows: tokens * inner * (2 * dt_rank + 2 * 8)
    for c, depth, ws in ((32, 2, 4), (64, 1, 2)):
        proj += math.ceil(depth / 2) * 2 * 2 * ws * ws * (c // 2) * (2 * math.ceil(c / 16) + 16)
    assert full['selective_scan'] == scan
    assert full['scaled_dot_product_attention'] == attention
    assert full['matmul'] == proj
    assert plain.by_operator() == full - Counter(
        selective_scan=scan,
        scaled_dot_product_attention=attention, matmul=proj * 3 // 4)
    assert plain.unsupported_ops()['prim::PythonOp.' + (
        'CppScan' if scan_backend() == 'cpp' else 'TorchScan')] == 2


class ScanModule(nn.Module):

    def __init__(self, backend, with_D):
        super().__init__()
        self.backend, self.with_D = backend, with_D

    def forward(self, u, delta, A, B, C, D):
        return selective_scan(u, delta, A, B, C, D if self.with_D else None, delta_bias=D,
                              delta_softplus=True, backend=self.backend)


def scan_inputs(b=2, d=6, l=5, n=3):
    return (torch.randn(b, d, l), torch.randn(b, d, l), -torch.rand(d, n), torch.randn(b, n, l),
            torch.randn(b, n, l), torch.randn(d))


@pytest.mark.parametrize('backend', ['cpp', 'torch'])
@pytest.mark.parametrize('with_D', [True, False])
def test_scan_handle(backend, with_D):
    if backend == 'cpp' and scan_backend(backend='auto') != 'cpp':
        pytest.skip('C++ scan extension not built')
    b, d, l, n = 2, 6, 5, 3
    analyzer = flop_analyzer(ScanModule(backend, with_D), scan_inputs(b, d, l, n))
    # per (b, d, l): n x (delta*A, (delta*u)*B, h update, y += C*h) + delta*u, and D*u
    expected = b * d * l * (4 * n + 1)
    skip = b * d * l if with_D else 0
    # the D * u addcmul belongs to the scan; no other addcmul is counted
    assert analyzer.by_operator() == Counter(selective_scan=expected + skip)


def test_addcmul_outside_the_scan_is_not_counted():

    class Module(nn.Module):

        def forward(self, a, b, c):
            return torch.addcmul(a, b, c)

    assert flop_analyzer(Module(), (torch.randn(3, 4), ) * 3).total() == 0


class SelectiveScanFn(torch.autograd.Function):
    """Stand-in with mamba-ssm's name and signature (its CUDA kernel is not needed to trace)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                return_last_state=False):
        y = selective_scan_ref(u, delta, A, B, C, D, delta_bias, delta_softplus)
        return y if z is None else y * F.silu(z)


@pytest.mark.parametrize('with_D, with_z', [(True, False), (False, False), (True, True)])
def test_mamba_ssm_scan_handle(with_D, with_z):
    b, d, l, n = 1, 4, 7, 2
    u, delta, A, B, C, D = scan_inputs(b, d, l, n)

    class Module(nn.Module):

        def forward(self, u, delta, A, B, C, D):
            return SelectiveScanFn.apply(u, delta, A, B, C, D if with_D else None,
                                         u if with_z else None, D, True)

    analyzer = flop_analyzer(Module(), (u, delta, A, B, C, D))
    assert analyzer.total() == b * d * l * (4 * n + 1 + with_D + with_z)


class AttentionModule(nn.Module):

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_attention_handle():
    # q (2, 3 heads, 5 queries, 4), k (.., 7 keys, 4), v (.., 7, 6): q@k^T 2*3*5*7*4, attn@v *6
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 6)
    analyzer = flop_analyzer(AttentionModule(), (q, k, v))
    assert analyzer.total() == 2 * 3 * 5 * 7 * 4 + 2 * 3 * 5 * 7 * 6
    # self-attention as in the mixer: 2 * B * heads * L * L * head_dim
    x = torch.randn(4, 2, 9, 8)
    assert flop_analyzer(AttentionModule(), (x, x, x)).total() == 2 * 4 * 2 * 9 * 9 * 8


def test_matmul_handle_broadcasts():

    class Module(nn.Module):

        def forward(self, w, x):
            return torch.matmul(w, x)

    analyzer = flop_analyzer(Module(), (torch.randn(5, 3), torch.randn(4, 3, 7)))
    assert analyzer.total() == 4 * 5 * 3 * 7


def test_segmentor_params_and_flops(tmp_path):
    cfg = load_config(str(SEG_DEMO), work_dir=str(tmp_path))
    result = model_complexity(cfg, (64, 96))
    model = result['model']
    assert result['params'] == sum(p.numel() for p in model.parameters())
    aux = sum(p.numel() for p in model.auxiliary_head.parameters())
    assert result['params_inference'] == result['params'] - aux > 0
    assert result['input_shape'] == (3, 64, 96)
    assert model.backbone.levels[2].fit_window
    analyzer = result['analyzer']
    tiny = dict(dim=80, in_dim=32, depths=(1, 3, 8, 4), num_heads=(2, 4, 8, 16))
    by_module = analyzer.by_module()
    # fit_window: the stage-2 (4x6) and stage-3 (2x3) maps are single unpadded windows
    expected, _, _ = hand_count(1, 64, 96, **tiny, window_size=(8, 8, (4, 6), (2, 3)))
    assert by_module['backbone'] == expected
    assert not uncounted_ops(analyzer)[1]


def test_detector_params_and_proposals(tmp_path):
    # 5 proposals keep the three box and mask heads cheap
    cfg = load_config(str(DET_DEMO), dict(model=dict(test_cfg=dict(rpn=dict(max_per_img=5)))),
                      work_dir=str(tmp_path))
    result = model_complexity(cfg, (64, 64))
    model = result['model']
    assert result['params'] == sum(p.numel() for p in model.parameters())
    assert result['params_inference'] == result['params']
    rois = result['num_proposals']
    assert 0 < rois <= 5
    # every one of the 3 cascade stages runs its box head (4 3x3 convs + norm on 7x7, fc, cls,
    # class-specific reg) and its mask head (4 3x3 convs + norm on 14x14, 2x2 deconv, 1x1 logits)
    # on all RoIs (mmdet 3 tensor mode); widths and norm from the demo config. mmengine counts an
    # affine norm per element: eval-mode BN 2 (scale, shift), GN 5 (statistics too), none 0.
    bbox, mask = model.roi_head.bbox_head[0], model.roi_head.mask_head[0]
    c, fc, k = bbox.conv_out_channels, bbox.fc_out_channels, bbox.num_classes
    assert bbox.in_channels == c and mask.in_channels == mask.conv_out_channels
    per_element = {None: 0, 'BN': 2, 'GN': 5}
    box_norm = per_element[(bbox.norm_cfg or {}).get('type')]
    mask_norm = per_element[(mask.norm_cfg or {}).get('type')]
    box = 4 * (c * c * 9 * 49 + box_norm * c * 49) + c * 49 * fc + fc * (k + 1) + fc * 4 * k
    m = mask.conv_out_channels
    mask = (4 * (m * m * 9 + mask_norm * m) * 14 * 14 + 14 * 14 * m * m * 4
            + 28 * 28 * m * k)
    analyzer = result['analyzer']
    assert analyzer.total('roi_head') == 3 * rois * (box + mask)
    assert result['flops'] == sum(analyzer.total(m) for m in ('backbone', 'neck', 'rpn_head',
                                                               'roi_head'))
    assert not uncounted_ops(analyzer)[1]


def test_cli_prints_flops_and_params(capsys, tmp_path, monkeypatch):
    # the tool's main() in this process (a subprocess would spend ~15 s re-importing mmdet/mmseg)
    spec = importlib.util.spec_from_file_location('get_flops', ROOT / 'tools/get_flops.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.chdir(tmp_path)
    tool.main([str(SEG_DEMO), '--shape', '64', '--cfg-options', 'model.decode_head.channels=16'])
    lines = capsys.readouterr().out.splitlines()
    assert 'Input shape: (3, 64, 64)' in lines
    assert len([line for line in lines if re.fullmatch(r'Flops: \d+\.\d{3}G', line)]) == 1
    assert len([line for line in lines if re.fullmatch(r'Params: \d+\.\d{3}M', line)]) == 1
    assert any(line.startswith('Params without auxiliary_head: ') for line in lines)
    assert not any(line.startswith('WARNING') for line in lines)
