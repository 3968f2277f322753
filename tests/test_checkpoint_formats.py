"""The released checkpoint layouts load: into the backbone through init_cfg and the converter,
and NVIDIA's detector / segmentor checkpoints into our configs through tools/test.py.

Each file is written by the test in the layout NVIDIA's code produces (github.com/NVlabs/
MambaVision): the ImageNet ``.pth.tar`` (classifier keys + argparse.Namespace + optimizer state),
Hugging Face safetensors (``model.`` prefix), mmdet / mmseg checkpoints of ``MM_mamba_vision``
(``backbone.`` prefix, mmengine meta). The presets are checked key for key and shape for shape
against the classifier layout written down from NVIDIA's model code.
"""
import argparse
import json
import math
import os
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
    missing, unexpected = MambaVision(arch=ARCH).load_state_dict(state, strict=False)
    assert unexpected == [] and all(k.startswith('outnorm') for k in missing)
    assert state.keys() == _backbone_state(source).keys()
    for key, value in _backbone_state(source).items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_convert_tool_checks_the_arch(tmp_path):
    """--arch names the tensors of another arch's file, and writes nothing."""
    path = _write('imagenet', _source_backbone(), tmp_path)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'convert_checkpoint.py'),
                           str(path), str(tmp_path / 'a.pth'), '--arch', 'tiny'],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and not (tmp_path / 'a.pth').exists()
    assert 'patch_embed.conv_down.0.weight: checkpoint (8, 3, 3, 3), model (32, 3, 3, 3)' in \
        proc.stderr, proc.stderr


# --------------------------------------------------------------- the published architecture
# Parameter counts of NVIDIA's classifiers (MambaVision README, #Params(M)).
PUBLISHED_PARAMS_M = {'tiny': 31.8, 'tiny2': 35.1, 'small': 50.1, 'base': 97.7, 'large': 227.9,
                      'large2': 241.5, 'large3': 739.6}
# The presets' architectures as NVIDIA's model functions (mamba_vision_T ... mamba_vision_L3)
# define them: dim, in_dim, depths, heads, layer scale of the hybrid blocks.
PUBLISHED_ARCHS = {
    'tiny': (80, 32, (1, 3, 8, 4), (2, 4, 8, 16), None),
    'tiny2': (80, 32, (1, 3, 11, 4), (2, 4, 8, 16), None),
    'small': (96, 64, (3, 3, 7, 5), (2, 4, 8, 16), None),
    'base': (128, 64, (3, 3, 10, 5), (2, 4, 8, 16), 1e-5),
    'large': (196, 64, (3, 3, 10, 5), (4, 8, 16, 32), 1e-5),
    'large2': (196, 64, (3, 3, 12, 5), (4, 8, 16, 32), 1e-5),
    'large3': (256, 64, (3, 3, 20, 10), (4, 8, 16, 32), 1e-5),
}


def published_classifier_layout(dim, in_dim, depths, layer_scale, num_classes=1000):
    """{key: shape} of NVIDIA's MambaVision classifier, from its model code: a stem of two
    conv-BN pairs (BN eps aside), conv blocks with biased 3x3 convs and BN, hybrid blocks whose
    later half (``range(d // 2 + 1, d)`` for odd d, ``range(d // 2, d)`` for even) are attention
    (qkv with bias) and the rest Mamba mixers (expand 1, d_state 8, d_conv 3, dt_rank
    ceil(C / 16), unbiased depthwise convs on each half), timm's Mlp (ratio 4), gammas only with a
    layer scale, bias-free stride-2 downsample convs, then BatchNorm and a linear head."""
    layout = {}

    def bn(prefix, c):
        layout.update({f'{prefix}.weight': (c, ), f'{prefix}.bias': (c, ),
                       f'{prefix}.running_mean': (c, ), f'{prefix}.running_var': (c, ),
                       f'{prefix}.num_batches_tracked': ()})

    layout['patch_embed.conv_down.0.weight'] = (in_dim, 3, 3, 3)
    bn('patch_embed.conv_down.1', in_dim)
    layout['patch_embed.conv_down.3.weight'] = (dim, in_dim, 3, 3)
    bn('patch_embed.conv_down.4', dim)
    for i, depth in enumerate(depths):
        c = dim * 2**i
        attention = range(depth // 2 + 1, depth) if depth % 2 else range(depth // 2, depth)
        for j in range(depth):
            p = f'levels.{i}.blocks.{j}.'
            if i < 2:
                for n in (1, 2):
                    layout[f'{p}conv{n}.weight'] = (c, c, 3, 3)
                    layout[f'{p}conv{n}.bias'] = (c, )
                    bn(f'{p}norm{n}', c)
                continue
            for n in (1, 2):
                layout[f'{p}norm{n}.weight'] = layout[f'{p}norm{n}.bias'] = (c, )
            if j in attention:
                layout.update({f'{p}mixer.qkv.weight': (3 * c, c), f'{p}mixer.qkv.bias': (3 * c, ),
                               f'{p}mixer.proj.weight': (c, c), f'{p}mixer.proj.bias': (c, )})
            else:
                half, rank = c // 2, math.ceil(c / 16)
                layout.update({
                    f'{p}mixer.in_proj.weight': (c, c),
                    f'{p}mixer.x_proj.weight': (rank + 16, half),
                    f'{p}mixer.dt_proj.weight': (half, rank), f'{p}mixer.dt_proj.bias': (half, ),
                    f'{p}mixer.A_log': (half, 8), f'{p}mixer.D': (half, ),
                    f'{p}mixer.out_proj.weight': (c, c), f'{p}mixer.conv1d_x.weight': (half, 1, 3),
                    f'{p}mixer.conv1d_z.weight': (half, 1, 3)})
            if layer_scale is not None:
                layout[f'{p}gamma_1'] = layout[f'{p}gamma_2'] = (c, )
            layout.update({f'{p}mlp.fc1.weight': (4 * c, c), f'{p}mlp.fc1.bias': (4 * c, ),
                           f'{p}mlp.fc2.weight': (c, 4 * c), f'{p}mlp.fc2.bias': (c, )})
        if i < 3:
            layout[f'levels.{i}.downsample.reduction.0.weight'] = (2 * c, c, 3, 3)
    bn('norm', dim * 8)
    layout.update({'head.weight': (num_classes, dim * 8), 'head.bias': (num_classes, )})
    return layout


@pytest.mark.parametrize('arch', sorted(PUBLISHED_ARCHS))
def test_preset_matches_the_published_classifier_key_for_key(arch):
    dim, in_dim, depths, heads, layer_scale = PUBLISHED_ARCHS[arch]
    with torch.device('meta'):
        model = MambaVision(arch=arch)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.startswith('outnorm')}  # the dense-prediction output norms
    published = published_classifier_layout(dim, in_dim, depths, layer_scale)
    backbone = {k: v for k, v in published.items() if not k.startswith(('norm.', 'head.'))}
    assert ours == backbone
    assert [lvl.blocks[-1].mixer.num_heads for lvl in model.levels[2:]] == list(heads[2:])
    # timm's count of the classifier: parameters, not BatchNorm's running statistics
    params = sum(math.prod(shape) for key, shape in published.items()
                 if not key.endswith(('running_mean', 'running_var', 'num_batches_tracked')))
    # NVIDIA's table rounds some counts to 0.1M and truncates others (L: 227.96 -> 227.9)
    assert abs(params / 1e6 - PUBLISHED_PARAMS_M[arch]) < 0.1
    own = sum(p.numel() for k, p in model.named_parameters() if not k.startswith('outnorm'))
    assert own + dim * 8 * 2 + dim * 8 * 1000 + 1000 == params  # + the classifier norm, head


# ------------------------------------------------- NVIDIA's detectors and segmentors, tools/test.py
COCO_CLASSES_FILE = 'coco_val.json'


def _write_coco_val(folder):
    """Two 96x96 images with one 'person' box each, annotated with all 80 COCO categories."""
    import cv2
    import numpy as np
    from mmdet.datasets import CocoDataset
    (folder / 'val').mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(2):
        cv2.imwrite(str(folder / 'val' / f'{i}.jpg'), rng.integers(0, 255, (96, 96, 3), np.uint8))
        images.append(dict(id=i, file_name=f'{i}.jpg', height=96, width=96))
        annotations.append(dict(id=i, image_id=i, category_id=1, bbox=[10, 10, 40, 50], area=2000,
                                iscrowd=0, segmentation=[[10, 10, 50, 10, 50, 60, 10, 60]]))
    categories = [dict(id=k + 1, name=name)
                  for k, name in enumerate(CocoDataset.METAINFO['classes'])]
    (folder / COCO_CLASSES_FILE).write_text(json.dumps(dict(
        images=images, annotations=annotations, categories=categories)))


def _write_ade_val(folder):
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    for sub in ('images', 'annotations'):
        (folder / sub / 'validation').mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(folder / 'images' / 'validation' / f'{i}.jpg'),
                    rng.integers(0, 255, (96, 96, 3), np.uint8))
        cv2.imwrite(str(folder / 'annotations' / 'validation' / f'{i}.png'),
                    rng.integers(0, 151, (96, 96), np.uint8))


# The released configs, evaluated on two tiny images: smaller test scale and windows than
# published (neither changes a key or a shape), everything else as in the config.
DERIVED = {
    'det': """
_base_ = ['{config}']
# score threshold 0: a random-weight detector's boxes are all scored (else none is kept)
model = dict(backbone=dict(window_size=(8, 8, 8, 4), init_cfg=None),
             test_cfg=dict(rcnn=dict(score_thr=0.0)))
test_dataloader = dict(dataset=dict(
    data_root='{data}', ann_file='{ann}', data_prefix=dict(img='val/'),
    pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 96), keep_ratio=True),
              dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
              dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                    'img_shape', 'scale_factor'))]))
test_evaluator = dict(ann_file='{data}/{ann}')
""",
    'seg': """
_base_ = ['{config}']
model = dict(backbone=dict(window_size=(8, 8, 8, 4), init_cfg=None))
test_dataloader = dict(dataset=dict(
    data_root='{data}',
    pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 96), keep_ratio=True),
              dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')]))
""",
}


def _nvidia_checkpoint(cfg, path, task):
    """The model of ``cfg`` with random weights saved as NVIDIA's released files are: mmengine's
    layout (``state_dict`` with ``backbone.patch_embed``, ``backbone.levels``,
    ``backbone.outnorm{i}`` as ``MM_mamba_vision`` names them, no classifier ``norm`` / ``head``)
    and the meta an mmengine run writes."""
    from mmengine.registry import init_default_scope
    import numpy as np
    if task == 'det':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.state_dict()
    assert any(k.startswith('backbone.levels.3.blocks.') for k in state)
    assert not any(k.startswith(('backbone.norm.', 'backbone.head.')) for k in state)
    meta = dict(epoch=36, iter=263_376, seed=np.int64(0), mmengine_version='0.10.1',
                experiment_name='cascade_mask_rcnn_mamba_vision_tiny_3x_coco', time='20250607',
                cfg=cfg.pretty_text, dataset_meta=dict(classes=('person', 'bicycle')),
                hook_msgs=dict(last_ckpt='work_dirs/epoch_36.pth'))
    torch.save({'meta': meta, 'state_dict': state}, path)
    return state


@pytest.mark.slow
@pytest.mark.parametrize('task, name', [('det', 'cascade_mambavision_t_coco.py'),
                                        ('seg', 'upernet_mambavision_t_ade20k.py')])
def test_tools_test_evaluates_nvidia_released_layout(tmp_path, task, name):
    from mmengine.config import Config
    data = tmp_path / 'data'
    (_write_coco_val if task == 'det' else _write_ade_val)(data)
    config = tmp_path / f'released_{task}.py'
    config.write_text(DERIVED[task].format(config=osp.join(ROOT, 'configs', task, name),
                                           data=data, ann=COCO_CLASSES_FILE))
    cfg = Config.fromfile(str(config))
    checkpoint = tmp_path / f'nvidia_{task}.pth'
    _nvidia_checkpoint(cfg, checkpoint, task)
    work = tmp_path / 'work'
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(config),
                           str(checkpoint), '--work-dir', str(work)],
                          capture_output=True, text=True, timeout=900, cwd=str(tmp_path),
                          env={**os.environ, 'OMP_NUM_THREADS': '2'})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    metrics = json.loads((work / 'metrics.json').read_text())
    expected = ('coco/bbox_mAP', 'coco/segm_mAP') if task == 'det' else ('mIoU', 'aAcc')
    assert all(key in metrics for key in expected), metrics
    assert 'missing keys' not in proc.stdout + proc.stderr
