"""ONNX export (tools/export_onnx.py, mmmv.deploy): onnxruntime against PyTorch.

The references are computed by mmseg's / mmdet's own model code on the PyTorch model with its
default backends (C++ kernels where built, fast paths on), independently of the export wrappers.
"""
import importlib.util
import os
import os.path as osp
from pathlib import Path

import pytest
import torch

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

from mmmv.deploy import (build_exportable, differences, example_input, export_onnx,  # noqa: E402
                         onnxruntime_outputs, onnxruntime_session)
from mmmv.errors import UserError  # noqa: E402
from mmmv.ops import selective_scan, selective_scan_ref  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEG_DEMO = ROOT / 'configs/seg/demo_upernet_mambavision_t.py'
DET_DEMO = ROOT / 'configs/det/demo_cascade_mambavision_t.py'
SEG_T = ROOT / 'configs/seg/upernet_mambavision_t_ade20k.py'
DET_T = ROOT / 'configs/det/cascade_mambavision_t_coco.py'
TOLERANCE = 1e-4  # relative: max |onnx - torch| / max |torch|, per output


def load_tool():
    """tools/export_onnx.py as a module (its main() runs in this process: a subprocess would
    spend ~15 s importing mmdet / mmseg again)."""
    spec = importlib.util.spec_from_file_location('export_onnx', ROOT / 'tools/export_onnx.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def random_checkpoint(config, path):
    """Save a checkpoint of ``config``'s model whose every parameter and BatchNorm statistic is
    random (not the initialisation: BN running means / variances away from 0 / 1)."""
    module, _ = build_exportable(str(config))
    model = next(iter(module.children()))
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            state[key] = value
        elif key.endswith('running_var'):
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)
        else:
            state[key] = 0.1 * torch.randn(value.shape, generator=generator)
    torch.save(dict(state_dict=state, meta=dict()), path)
    return state


def run_onnx(path, inputs):
    return onnxruntime_outputs(onnxruntime_session(str(path), threads=1), inputs)


def worst(reference, outputs):
    rows = differences(reference, outputs, [str(i) for i in range(len(reference))])
    return max(row['rel'] for row in rows)


def build_reference_model(config, state):
    """The detector / segmentor of ``config`` built by mmengine's registry, with ``state``."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    from mmmv.engine import load_config
    cfg = load_config(str(config), work_dir='.')
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
    model.load_state_dict(state)
    return model


def test_segmentor_matches_pytorch(tmp_path, capsys):
    checkpoint = tmp_path / 'seg.pth'
    state = random_checkpoint(SEG_DEMO, checkpoint)
    out = tmp_path / 'seg.onnx'
    assert load_tool().main([str(SEG_DEMO), str(checkpoint), '--shape', '64', '96',
                             '--out', str(out), '--threads', '1']) == 0
    assert 'OK: every relative difference' in capsys.readouterr().out
    # against the logits of mmseg's predict() (resized to the image, before the argmax)
    from mmseg.structures import SegDataSample
    model = build_reference_model(SEG_DEMO, state)
    inputs = example_input((64, 96), seed=5)
    meta = dict(img_shape=(64, 96), ori_shape=(64, 96), pad_shape=(64, 96))
    with torch.no_grad():
        (sample, ) = model.predict(inputs, [SegDataSample(metainfo=meta)])
    assert worst([sample.seg_logits.data[None]], run_onnx(out, inputs)) < TOLERANCE


def test_detector_features_match_pytorch(tmp_path):
    checkpoint = tmp_path / 'det.pth'
    state = random_checkpoint(DET_DEMO, checkpoint)
    model = build_reference_model(DET_DEMO, state)
    inputs = example_input((96, 64), seed=3)
    with torch.no_grad():
        reference = list(model.neck(model.backbone(inputs)))
    assert len(reference) == 5  # FPN: 4 levels and the extra max-pooled one
    module, _ = build_exportable(str(DET_DEMO), str(checkpoint))
    out = tmp_path / 'det.onnx'
    export_onnx(module, example_input((96, 64), seed=0), str(out),
                [f'feat{i}' for i in range(5)])
    assert worst(reference, run_onnx(out, inputs)) < TOLERANCE


def test_tool_fails_above_tolerance(tmp_path, capsys):
    out = tmp_path / 'seg.onnx'
    code = load_tool().main([str(SEG_DEMO), '--shape', '64', '--out', str(out),
                             '--tolerance', '0', '--cfg-options',
                             'model.decode_head.channels=16'])
    assert code == 1
    assert 'FAILED: relative difference' in capsys.readouterr().err


class ScanModule(torch.nn.Module):
    """selective_scan on the pure-PyTorch backend, as a module to export."""

    def __init__(self, A, D, delta_bias):
        super().__init__()
        self.A, self.D, self.delta_bias = A, D, delta_bias

    def forward(self, u, delta, B, C):
        return selective_scan(u, delta, self.A, B, C, self.D, delta_bias=self.delta_bias,
                              delta_softplus=True, backend='torch')


@pytest.mark.parametrize('length', [1, 7, 50])
def test_exported_scan_matches_float64_loop(length):
    import onnxruntime as ort
    generator = torch.Generator().manual_seed(length)
    b, d, n = 2, 6, 3
    u, delta = (torch.randn(b, d, length, generator=generator) for _ in range(2))
    B, C = (torch.randn(b, n, length, generator=generator) for _ in range(2))
    A = -torch.rand(d, n, generator=generator) * 4
    D, delta_bias = torch.randn(d, generator=generator), torch.randn(d, generator=generator)
    program = torch.onnx.export(ScanModule(A, D, delta_bias).eval(), (u, delta, B, C), dynamo=True,
                                opset_version=18, verbose=False)
    ops = {node.op_type for node in program.model_proto.graph.node}
    session = ort.InferenceSession(program.model_proto.SerializeToString(),
                                   providers=['CPUExecutionProvider'])
    names = [i.name for i in session.get_inputs()]
    (y, ) = session.run(None, dict(zip(names, (t.numpy() for t in (u, delta, B, C)))))
    expected = selective_scan_ref(*(t.double() for t in (u, delta, A, B, C, D)),
                                  delta_bias=delta_bias.double(), delta_softplus=True)
    assert torch.allclose(torch.from_numpy(y).double(), expected, rtol=1e-5, atol=1e-5)
    if length > 1:
        assert 'Scan' in ops  # the recurrences are loops, not unrolled per step


@pytest.mark.parametrize('argv, what', [
    ([str(SEG_DEMO), '--shape', '16', '64'], "--shape '16 64': MambaVision needs at least 32"),
    (['no/such/config.py', '--shape', '64'], "config file 'no/such/config.py': does not exist"),
    ([str(SEG_DEMO), 'no/such.pth', '--shape', '64'], "checkpoint 'no/such.pth': does not exist"),
])
def test_clear_errors(tmp_path, argv, what):
    with pytest.raises(UserError, match='^' + what.replace('.', r'\.').replace('/', '/')):
        load_tool().main(argv + ['--out', str(tmp_path / 'x.onnx')])
    assert os.listdir(tmp_path) == []


def test_unwritable_output_is_refused_before_the_export(tmp_path):
    (tmp_path / 'file').write_text('')
    with pytest.raises(UserError, match="^--out '.*file/x.onnx': cannot be written"):
        load_tool().main([str(SEG_DEMO), '--shape', '64', '--out', str(tmp_path / 'file/x.onnx')])


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise torch.onnx.OnnxExporterError('simulated')

    monkeypatch.setattr(torch.onnx, 'export', fail)
    module, _ = build_exportable(str(SEG_DEMO))
    with pytest.raises(RuntimeError, match='ONNX export failed: simulated'):
        export_onnx(module, example_input((64, 64)), str(tmp_path / 'x.onnx'), ['logits'])
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize('config', [SEG_T, DET_T], ids=['upernet_t', 'cascade_t_fpn'])
def test_published_t_configs_at_512(tmp_path, config, capsys):
    out = tmp_path / 'model.onnx'
    assert load_tool().main([str(config), '--shape', '512', '512', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'OK: every relative difference <= 0.0001' in printed
    module, _ = build_exportable(str(config))
    assert osp.getsize(out) < 1.2 * module.weight_bytes()  # every weight stored once
