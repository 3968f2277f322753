"""tools/benchmark.py: the whole model in inference, on the demo configs, on the CPU."""
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
from mmengine.config import ConfigDict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(ROOT, 'tools', 'benchmark.py')
DET = osp.join(ROOT, 'configs', 'det', 'demo_cascade_mambavision_t.py')
SEG = osp.join(ROOT, 'configs', 'seg', 'demo_upernet_mambavision_t.py')


def load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


@pytest.mark.slow
def test_segmentor_prints_latency_fps_memory_and_backends(tmp_path):
    out = run(SEG, '--shape', '64', '96', '--repeat', '2', '--warmup', '1', '--threads', '1',
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert 'input 1 x 3 x 64 x 96' in text and 'random weights' in text
    latency = re.search(r'latency ms: median ([\d.]+) / min ([\d.]+) / max ([\d.]+)', text)
    assert latency and float(latency[2]) <= float(latency[1]) <= float(latency[3])
    fps = float(re.search(r'FPS: ([\d.]+)', text)[1])
    assert fps == pytest.approx(1e3 / float(latency[1]), rel=0.01)
    assert re.search(r'peak memory: \d+ MiB', text)
    assert re.search(r'backends: .*selective_scan \w+ float32 x \d+', text)
    assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.slow
def test_detector_compares_float32_with_bf16(tmp_path):
    out = run(DET, '--shape', '96', '128', '--repeat', '1', '--warmup', '0', '--compare-amp',
              '--amp-force', '--threads', '1', cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert text.count('latency ms: ') == 2 and '[float32]' in text and '[bfloat16]' in text
    assert re.search(r'bfloat16 vs float32: [\d.]+x \(median latencies\); per interleaved round: '
                     r'median [\d.]+x, min [\d.]+x, max [\d.]+x', text)
    bf16 = text[text.index('[bfloat16]'):]
    # the scan stays float32 under autocast; attention and mmmv's RoIAlign read bf16
    assert re.search(r'selective_scan \w+ float32', bf16)
    assert re.search(r'attention \w+ bfloat16', bf16)
    assert re.search(r'roi_align cpp bfloat16', bf16)


def test_speedup_line_reports_the_ratio_of_medians_and_of_each_round():
    line = load_tool().speedup_line([4.0, 3.0, 6.0], [1.5, 2.5, 2.0])
    assert line == ('bfloat16 vs float32: 2.00x (median latencies); per interleaved round: '
                    'median 2.67x, min 1.20x, max 3.00x')


@pytest.mark.parametrize('args, message', [
    (['--batch', '0'], "--batch '0': must be an integer >= 1"),
    (['--shape', '16', '64'], "--shape '16 64': MambaVision needs at least 32"),
    (['--device', 'tpu'], "--device 'tpu': expected 'cpu', 'cuda' or 'cuda:N'"),
])
def test_bad_arguments_are_named(tmp_path, args, message):
    out = run(SEG, *args, cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr


def test_init_cfg_is_removed_everywhere():
    tool = load_tool()
    model = ConfigDict(backbone=dict(type='MambaVision', init_cfg=dict(type='Pretrained',
                                                                       checkpoint='x.pth')),
                       roi_head=dict(bbox_head=[dict(init_cfg=dict(type='Normal')), dict(a=1)]),
                       pretrained='y.pth')
    cleaned = tool.without_init_cfg(model)
    assert cleaned == dict(backbone=dict(type='MambaVision'),
                           roi_head=dict(bbox_head=[dict(), dict(a=1)]))
    assert 'init_cfg' in model.backbone  # the config itself is left alone


@pytest.mark.parametrize('config', [DET, SEG])
def test_weights_stored_in_bf16_give_autocasts_outputs(config):
    """--amp inference (benchmark.py, test.py) stores the weights autocast casts in bfloat16 once:
    under bf16 autocast the model's outputs stay bit for bit those of the float32-weight model."""
    import copy

    import torch

    from mmmv.engine import cast_autocast_weights, inference_autocast, load_config, task_of
    tool = load_tool()
    cfg = load_config(config)
    torch.manual_seed(0)
    model = tool.build_model(cfg, None, torch.device('cpu'))
    cast = cast_autocast_weights(copy.deepcopy(model), torch.bfloat16)
    layers = [m for m in cast.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(m.weight.dtype == torch.bfloat16 for m in layers)
    assert all(m.bias is None or m.bias.dtype == torch.float32 for m in layers)
    data = tool.random_batch(task_of(cfg), (64, 96), 1)
    with torch.no_grad(), inference_autocast('cpu', force=True):
        want, got = model.test_step(data)[0], cast.test_step(data)[0]
    if task_of(cfg) == 'mmseg':
        assert torch.equal(got.seg_logits.data, want.seg_logits.data)
    else:
        assert len(want.pred_instances) > 0
        for key in ('bboxes', 'scores', 'labels', 'masks'):
            assert torch.equal(got.pred_instances[key], want.pred_instances[key]), key


def test_prepare_inference_hook_stores_bf16_weights_only_for_cpu_amp_testing():
    from types import SimpleNamespace

    import torch

    from mmmv.engine import PrepareInferenceHook
    for fp16, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2))
        runner = SimpleNamespace(model=model, test_loop=SimpleNamespace(fp16=fp16))
        PrepareInferenceHook().before_test_epoch(runner)
        assert [m.weight.dtype for m in model] == [dtype, dtype]
        assert not model.training
