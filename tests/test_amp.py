"""bfloat16 inference on the CPU: the attention kernel's bf16 path, the float32 scan under
autocast, and what ``--amp`` does where the CPU has no native bf16.

The attention reference is softmax attention in float64 from the same (bf16-valued) inputs; the
kernel rounds the probabilities and the output to bf16 (8 significant bits), so it must agree to
a few bf16 steps of the output's size: BF16_TOL. Any wrong pairing of channels or keys, or a
wrong softmax, is off by O(1).
"""
import argparse
import importlib

import pytest
import torch

from mmmv.models import MambaVision
from mmmv.ops import attention, attention_backend
from mmmv.ops.attention import cpu_kernel_isas
from mmmv.ops.backends import load_extension, record_backends

KERNEL = load_extension('_attention_cpu')[0]
HAS_BF16 = bool(cpu_kernel_isas(torch.bfloat16))
scan_module = importlib.import_module('mmmv.ops.selective_scan')
BF16_TOL = dict(rtol=2e-2, atol=4e-3)

pytestmark = pytest.mark.usefixtures('one_thread')
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason='no AVX512-BF16 kernel on this CPU')


def reference(q, k, v, scale):
    q, k, v = q.double(), k.double(), v.double()
    weights = torch.softmax(scale * q @ k.transpose(-1, -2), dim=-1)
    return (weights @ v).transpose(1, 2).flatten(2)


def qkv_bf16(batch, heads, lq, lk, d, seed=0):
    torch.manual_seed(seed)
    qkv = torch.randn(batch, max(lq, lk), 3, heads, d).bfloat16()
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q[:, :, :lq], k[:, :, :lk], v[:, :, :lk]


@needs_bf16
@pytest.mark.parametrize('batch,heads,lq,lk,d', [
    (1, 1, 1, 1, 2),       # one query, one key (an odd number of keys: a padded pair)
    (2, 3, 70, 301, 40),   # partial query tiles, two key blocks + an odd partial one
    (1, 2, 64, 256, 48),   # exact tile and key block
    (1, 1, 5, 600, 4),     # channels fewer than a register block
    (1, 2, 130, 513, 64),  # MambaVision-B's width; the last key block holds one key
])
def test_bf16_kernel_matches_float64(batch, heads, lq, lk, d):
    q, k, v = qkv_bf16(batch, heads, lq, lk, d)
    out = KERNEL.forward(q, k, v, d ** -0.5, 'auto')
    assert out.dtype == torch.bfloat16 and out.shape == (batch, lq, heads, d)
    torch.testing.assert_close(out.flatten(2).double(), reference(q, k, v, d ** -0.5),
                               **BF16_TOL)


@needs_bf16
def test_bf16_kernel_online_softmax_and_strided_values():
    """Scores growing from key block to key block force every rescaling step; values given
    with tokens along the unit stride exercise the strided repacking of value pairs."""
    torch.manual_seed(1)
    q = torch.randn(1, 2, 33, 8).bfloat16()
    ramp = torch.linspace(-20, 20, 701).view(1, 1, 701, 1)
    k = (torch.randn(1, 2, 701, 8) * 0.1 + ramp * q[:, :, :1].float().sign()).bfloat16()
    v = torch.randn(1, 2, 701, 8).bfloat16().transpose(2, 3).contiguous().transpose(2, 3)
    out = KERNEL.forward(q, k, v, 1.0, 'auto')
    torch.testing.assert_close(out.flatten(2).double(), reference(q, k, v, 1.0), **BF16_TOL)


@needs_bf16
def test_bf16_kernel_rejects_what_it_cannot_run():
    q = torch.randn(1, 1, 4, 8).bfloat16()
    with pytest.raises(RuntimeError, match='even head_dim'):
        KERNEL.forward(q[..., :7], q[..., :7], q[..., :7], 1.0, 'auto')
    with pytest.raises(RuntimeError, match='all bfloat16'):
        KERNEL.forward(q, q.float(), q, 1.0, 'auto')
    with pytest.raises(RuntimeError, match="isa 'avx512' is not run by this CPU for bfloat16"):
        KERNEL.forward(q, q, q, 1.0, 'avx512')


@needs_bf16
def test_auto_takes_the_bf16_kernel_and_records_it(monkeypatch):
    monkeypatch.delenv('MMMV_ATTENTION_BACKEND', raising=False)
    q, k, v = qkv_bf16(1, 2, 20, 50, 40)
    odd = torch.randn(1, 1, 4, 7).bfloat16()
    with torch.no_grad(), record_backends() as calls:
        assert attention_backend(q, k, v) == 'cpp'
        assert attention_backend(odd, odd, odd) == 'sdpa'  # odd widths go to PyTorch
        out = attention(q, k, v, 40 ** -0.5)
    assert calls == {('attention', 'cpp', 'bfloat16'): 1}
    torch.testing.assert_close(out.double(), reference(q, k, v, 40 ** -0.5), **BF16_TOL)


def tiny_backbone():
    torch.manual_seed(0)
    model = MambaVision(dict(dim=32, in_dim=8, depths=(1, 1, 2, 2), num_heads=(1, 2, 4, 8)),
                        window_size=(8, 8, 14, 7))
    model.init_weights()
    return model.eval()


def test_scan_stays_float32_under_bf16_autocast(monkeypatch):
    """Every scan call of a backbone under CPU bf16 autocast gets float32 tensors with autocast
    off, and returns to the caller's dtype; recorded at the dispatch as float32 too."""
    seen = []
    original = scan_module._run_own_backend

    def spy(name, *args):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        seen.append(({t.dtype for t in tensors}, torch.is_autocast_enabled('cpu')))
        return original(name, *args)

    monkeypatch.setattr(scan_module, '_run_own_backend', spy)
    model = tiny_backbone()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16), \
            record_backends() as calls:
        outs = model(x)
    assert len(seen) == 2  # the Mamba block of stage 3 and that of stage 4
    assert all(dtypes == {torch.float32} and not autocast for dtypes, autocast in seen)
    scans = {key: n for key, n in calls.items() if key[0] == 'selective_scan'}
    assert set(k[2] for k in scans) == {'float32'} and sum(scans.values()) == 2
    with torch.no_grad():
        plain = model(x)
    for a, b in zip(outs, plain):  # bf16 end to end, but the same network
        assert (a.float() - b).norm() / b.norm() < 0.05


def test_amp_keeps_float32_without_native_bf16(monkeypatch):
    from mmengine.config import Config

    from mmmv import env
    from mmmv.engine import enable_test_amp, inference_autocast
    monkeypatch.setattr(env, 'cpu_flags', lambda *a: {'avx2'})
    with pytest.warns(RuntimeWarning, match='keeping float32'):
        with inference_autocast('cpu'):
            assert not torch.is_autocast_enabled('cpu')
    with inference_autocast('cpu', force=True):
        assert torch.is_autocast_enabled('cpu')
    cfg = Config(dict(test_cfg=dict(type='TestLoop')))
    with pytest.warns(RuntimeWarning):
        assert 'fp16' not in enable_test_amp(cfg).test_cfg
    assert enable_test_amp(cfg, force=True).test_cfg == dict(type='TestLoop', fp16=True)
    monkeypatch.setattr(env, 'cpu_flags', lambda *a: {'avx512_bf16'})
    with inference_autocast('cpu'):
        assert torch.get_autocast_dtype('cpu') == torch.bfloat16
        assert torch.is_autocast_enabled('cpu')


def test_inference_tools_take_amp_force():
    from mmmv.cli import add_amp_argument
    parser = add_amp_argument(argparse.ArgumentParser(), 'inference')
    args = parser.parse_args(['--amp', '--amp-force'])
    assert args.amp and args.amp_force
    training = add_amp_argument(argparse.ArgumentParser(), 'training')
    with pytest.raises(SystemExit):
        training.parse_args(['--amp-force'])


def test_amp_testing_hands_metrics_float32_predictions():
    """Under bf16 autocast a detector's boxes and scores are bfloat16, which numpy (mmdet's
    CocoMetric) cannot read: --amp testing wraps the metrics in Float32Evaluator."""
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.structures import InstanceData

    from mmmv.engine import Float32Evaluator, enable_test_amp
    cfg = Config(dict(test_cfg=dict(type='TestLoop'), test_evaluator=dict(type='CocoMetric')))
    cfg = enable_test_amp(cfg, force=True)
    assert cfg.test_evaluator == dict(type='Float32Evaluator', metrics=dict(type='CocoMetric'))

    seen = []

    class Record:
        dataset_meta = None

        def process(self, data_batch, data_samples):
            seen.extend(data_samples)

    sample = DetDataSample(metainfo=dict(img_id=3))
    boxes = torch.tensor([[1.5, 2.25, 10.0, 12.75]])
    sample.pred_instances = InstanceData(bboxes=boxes.bfloat16(), scores=torch.tensor([0.5]).half(),
                                         labels=torch.tensor([2]))
    Float32Evaluator(Record()).process([sample])
    pred = seen[0]['pred_instances']
    assert pred['bboxes'].dtype == torch.float32 and torch.equal(pred['bboxes'], boxes)
    assert pred['scores'].dtype == torch.float32 and pred['labels'].dtype == torch.int64
    assert pred['bboxes'].numpy().shape == (1, 4)
