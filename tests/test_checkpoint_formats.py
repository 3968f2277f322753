"""The three released checkpoint layouts load into the backbone through init_cfg and the converter.

Each file is written by the test with the real key layout (SPEC section 6): NVIDIA's ImageNet
``.pth.tar`` (classifier keys + argparse.Namespace + optimizer state), Hugging Face safetensors
(``model.`` prefix) and an mmengine detector checkpoint (``backbone.`` prefix).
"""
import argparse
import os.path as osp
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from mmmv.models import MambaVision

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
ARCH = dict(dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))


def _source_backbone():
    torch.manual_seed(1)
    model = MambaVision(arch=ARCH, window_size=(8, 8, 4, 2))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # far from any fresh initialisation
    return model


def _classifier_keys(model):
    channels = model.num_features[-1]
    return {'norm.weight': torch.ones(channels), 'norm.bias': torch.zeros(channels),
            'norm.running_mean': torch.zeros(channels), 'norm.running_var': torch.ones(channels),
            'head.weight': torch.zeros(1000, channels), 'head.bias': torch.zeros(1000)}


def _backbone_state(model):
    """Backbone keys without the dense-prediction outnorms, as in a classifier checkpoint."""
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith('outnorm')}


def _write(kind, model, folder):
    state = _backbone_state(model)
    if kind == 'imagenet':
        path = folder / 'mambavision_tiny_1k.pth.tar'
        torch.save({'state_dict': {**state, **_classifier_keys(model)}, 'epoch': 310,
                    'args': argparse.Namespace(model='mamba_vision_T', lr=0.0008),
                    'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-5}]}}, path)
    elif kind == 'huggingface':
        path = folder / 'model.safetensors'
        save_file({'model.' + k: v.contiguous()
                   for k, v in {**state, **_classifier_keys(model)}.items()}, str(path))
    else:
        path = folder / 'cascade_mask_rcnn_mambavision_tiny.pth'
        full = {'backbone.' + k: v for k, v in model.state_dict().items()}
        full['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 16, 1, 1)
        torch.save({'state_dict': full, 'meta': {'epoch': 36, 'mmengine_version': '0.10.7'}},
                   path)
    return path


@pytest.mark.parametrize('kind', ['imagenet', 'huggingface', 'mmengine'])
def test_init_cfg_pretrained_loads_every_layout(kind, tmp_path):
    source = _source_backbone()
    path = _write(kind, source, tmp_path)
    model = MambaVision(arch=ARCH, window_size=(8, 8, 4, 2),
                        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    expected = source.state_dict() if kind == 'mmengine' else _backbone_state(source)
    own = model.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0, msg=key)
    model.eval()
    source.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(x), source(x)
    if kind == 'mmengine':  # the outnorms come with a detector checkpoint
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('kind', ['imagenet', 'huggingface'])
def test_converted_classifier_loads_strictly(kind, tmp_path):
    """convert_checkpoint.py keeps the backbone tensors, drops norm.* and head.*, says so."""
    source = _source_backbone()
    path = _write(kind, source, tmp_path)
    out = tmp_path / 'backbone.pth'
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'convert_checkpoint.py'),
                           str(path), str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dropped = sorted(_classifier_keys(source))
    assert f'dropped {len(dropped)}: {", ".join(dropped)}' in proc.stdout
    state = torch.load(out, weights_only=True)['state_dict']
    target = MambaVision(arch=ARCH, window_size=(8, 8, 4, 2), out_indices=())
    target.load_state_dict(state, strict=True)
    for key, value in _backbone_state(source).items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
