"""Every shipped config loads, builds and trains a step; user configs can inherit ours."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import mmmv  # noqa: F401
from mmmv.models import ARCH_SETTINGS
from mmmv.engine import adapt_to_device, task_of

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'det', '*.py')) +
                 glob.glob(osp.join(ROOT, 'configs', 'seg', '*.py')))
RELEASED = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS
            if not osp.basename(p).startswith('demo_')]
NECK_CHANNELS = {'tiny': [80, 160, 320, 640], 'small': [96, 192, 384, 768],
                 'base': [128, 256, 512, 1024], 'large3': [256, 512, 1024, 2048]}
HF = 'https://huggingface.co/nvidia/'
# the ImageNet checkpoints of the published `mambavision` package's default_cfgs
PRETRAINED = {
    'tiny': HF + 'MambaVision-T-1K/resolve/main/mambavision_tiny_1k.pth.tar',
    'small': HF + 'MambaVision-S-1K/resolve/main/mambavision_small_1k.pth.tar',
    'base': HF + 'MambaVision-B-1K/resolve/main/mambavision_base_1k.pth.tar',
    'large3': HF + 'MambaVision-L3-512-21K/resolve/main/mambavision_L3_21k_740m_512.pth.tar',
}


def _registry(cfg):
    if task_of(cfg) == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return MODELS


def _build(cfg, device=None):
    cfg.model.backbone.init_cfg = None
    adapt_to_device(cfg, cuda_available=False)
    if device is None:
        return _registry(cfg).build(cfg.model)
    with torch.device(device):
        return _registry(cfg).build(cfg.model)


def _neck_in(cfg):
    return cfg.model.neck.in_channels if 'neck' in cfg.model else \
        cfg.model.decode_head.in_channels


def test_all_configs_found():
    names = {osp.basename(p) for p in CONFIGS}
    for size in 'tsb':
        assert f'cascade_mambavision_{size}_coco.py' in names
        assert f'upernet_mambavision_{size}_ade20k.py' in names
        for schedule in ('1x', '3x'):
            assert f'mask_rcnn_mambavision_{size}_coco_{schedule}.py' in names
    assert {'retinanet_mambavision_t_coco_1x.py', 'upernet_mambavision_l3_ade20k_640.py'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds_its_model(path):
    """Full size, on the meta device (no memory, no time): channels fit the arch."""
    cfg = Config.fromfile(path)
    assert 'mmmv' in cfg.custom_imports.imports
    model = _build(cfg, 'meta')
    arch = cfg.model.backbone.arch
    assert list(model.backbone.num_features) == NECK_CHANNELS[arch]
    assert list(_neck_in(cfg)) == [NECK_CHANNELS[arch][i] for i in model.backbone.out_indices]


def _fake_det_batch(model, size):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    samples = []
    for _ in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             pad_shape=(size, size), scale_factor=(1., 1.),
                                             batch_input_shape=(size, size)))
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        masks[0, 10:60, 10:60] = 1
        masks[1, 40:110, 30:90] = 1
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10., 10., 60., 60.], [30., 40., 90., 110.]]),
            labels=torch.tensor([0, 1]), masks=BitmapMasks(masks.numpy(), size, size))
        samples.append(sample)
    return torch.rand(2, 3, size, size) * 255, samples


def _fake_seg_batch(size):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             pad_shape=(size, size)))
        seg = torch.zeros(1, size, size, dtype=torch.long)
        seg[:, 20:80, 30:100] = 1
        sample.gt_sem_seg = PixelData(data=seg)
        samples.append(sample)
    return torch.rand(2, 3, size, size) * 255, samples


def _reduced(cfg):
    """The config's model at its channel widths with one or two blocks per stage and small
    windows: same heads, necks and losses, a fraction of the compute."""
    backbone = cfg.model.backbone
    backbone.window_size = (8, 8, 8, 4)
    if backbone.arch != 'tiny':
        backbone.arch = dict(ARCH_SETTINGS[backbone.arch], depths=(1, 1, 2, 2))
    return cfg


# S and B differ from their T config only in the backbone's arch and channels: their steps are
# marked slow (minutes on a busy 2-core machine).
STEP_CONFIGS = [pytest.param(name, marks=pytest.mark.slow)
                if any(f'_{size}_' in name for size in 'sb') else name for name in RELEASED]


@pytest.mark.parametrize('name', STEP_CONFIGS)
def test_forward_and_loss_step(name):
    """One training step of each recipe on a 128x128 batch (T full size, S / B / L3 reduced)."""
    torch.manual_seed(0)
    cfg = _reduced(Config.fromfile(osp.join(ROOT, 'configs', name)))
    model = _build(cfg)
    model.train()
    if task_of(cfg) == 'mmdet':
        inputs, samples = _fake_det_batch(model, 128)
    else:
        inputs, samples = _fake_seg_batch(128)
        model.data_preprocessor.size = (128, 128)
    data = model.data_preprocessor(dict(inputs=list(inputs), data_samples=samples), True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    grad = model.backbone.levels[2].blocks[0].mixer.A_log.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_user_config_with_own_dataset_and_classes(tmp_path):
    base = osp.join(ROOT, 'configs', 'det', 'cascade_mambavision_t_coco.py')
    path = _write(tmp_path / 'my_det.py', f"""
_base_ = ['{base}']
classes = ('cat', 'dog')
model = dict(roi_head=dict(
    bbox_head=[dict(head, num_classes=2) for head in _base_.model.roi_head.bbox_head],
    mask_head=dict(num_classes=2)))
data_root = '/datasets/pets/'
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                                     ann_file='train.json', data_prefix=dict(img='train/')))
""")
    cfg = Config.fromfile(path)
    assert cfg.train_dataloader.dataset.data_root == '/datasets/pets/'
    assert cfg.train_dataloader.dataset.metainfo.classes == ('cat', 'dog')
    assert cfg.model.backbone.type == 'MambaVision'
    model = _build(cfg)
    assert all(head.num_classes == 2 for head in model.roi_head.bbox_head)
    assert model.roi_head.mask_head[0].num_classes == 2


def test_user_config_swaps_arch(tmp_path):
    base = osp.join(ROOT, 'configs', 'det', 'cascade_mambavision_t_coco.py')
    path = _write(tmp_path / 'my_small.py', f"""
_base_ = ['{base}']
model = dict(backbone=dict(arch='small'), neck=dict(in_channels=[96, 192, 384, 768]))
""")
    cfg = Config.fromfile(path)
    model = _build(cfg)
    assert list(model.backbone.num_features) == NECK_CHANNELS['small']
    assert len(model.backbone.levels[0].blocks) == 3  # small: depths (3, 3, 7, 5)


# What each config must say and a refactor of the bases could silently lose: arch, windows,
# optimizer and lr / weight decay, schedule. Sources: NVIDIA's released configs
# (object_detection/configs/mamba_vision, semantic_segmentation/configs/mamba_vision) for the
# Cascade Mask R-CNN / UperNet rows; mmdet's mask-rcnn_swin-t-p4-w7_fpn_{1x,ms-crop-3x}_coco.py and
# retinanet_swin-t-p4-w7_fpn_1x_coco.py for the comparison recipes.
DET, SEG_T, SEG_S = (8, 8, 112, 56), (8, 8, 64, 32), (8, 8, 160, 56)  # published windows
AMP, FP32 = 'AmpOptimWrapper', 'OptimWrapper'
# config: (arch, windows, optimizer wrapper, lr, weight decay, epochs or iterations)
RECIPES = {
    'det/cascade_mambavision_t_coco.py': ('tiny', DET, AMP, 1e-4, 0.05, 36),
    'det/cascade_mambavision_s_coco.py': ('small', DET, AMP, 1e-4, 0.05, 36),
    'det/cascade_mambavision_b_coco.py': ('base', DET, AMP, 1e-4, 0.05, 36),
    'det/mask_rcnn_mambavision_t_coco_1x.py': ('tiny', DET, FP32, 1e-4, 0.05, 12),
    'det/mask_rcnn_mambavision_b_coco_3x.py': ('base', DET, FP32, 1e-4, 0.05, 36),
    'det/retinanet_mambavision_t_coco_1x.py': ('tiny', DET, FP32, 0.01, 1e-4, 12),
    'seg/upernet_mambavision_t_ade20k.py': ('tiny', SEG_T, AMP, 5e-5, 0.01, 160000),
    'seg/upernet_mambavision_s_ade20k.py': ('small', SEG_S, AMP, 6e-5, 0.01, 160000),
    'seg/upernet_mambavision_b_ade20k.py': ('base', SEG_T, AMP, 5e-5, 0.01, 160000),
    # NVIDIA turned mixed precision off for L3 (unstable)
    'seg/upernet_mambavision_l3_ade20k_640.py': ('large3', SEG_T, FP32, 8e-5, 0.05, 160000),
}


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_config_states_the_published_recipe(name):
    arch, windows, wrapper, lr, decay, length = RECIPES[name]
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    backbone = cfg.model.backbone
    assert (backbone.arch, tuple(backbone.window_size)) == (arch, windows)
    assert backbone.drop_path_rate == 0.2  # what the released models were trained with
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=PRETRAINED[arch])
    assert cfg.optim_wrapper.type == wrapper
    assert (cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay) == (lr, decay)
    assert cfg.train_cfg.get('max_epochs', cfg.train_cfg.get('max_iters')) == length
    assert cfg.param_scheduler[-1].end == length
    assert cfg.auto_scale_lr.base_batch_size == 16
    batch = cfg.train_dataloader.batch_size
    assert batch == (1 if arch == 'large3' else 2)  # x 16 / x 8 GPUs = 16 images per batch


@pytest.mark.parametrize('name', ['det/cascade_mambavision_t_coco.py',
                                  'det/mask_rcnn_mambavision_s_coco_3x.py'])
def test_3x_recipes_train_multi_scale_with_crops(name):
    pipeline = Config.fromfile(osp.join(ROOT, 'configs', name)).train_dataloader.dataset.pipeline
    choice = next(t for t in pipeline if t.type == 'RandomChoice')
    assert [t.type for t in choice.transforms[1]] == ['RandomChoiceResize', 'RandomCrop',
                                                      'RandomChoiceResize']


def test_l3_uses_mmseg_640_pipeline():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'seg', 'upernet_mambavision_l3_ade20k_640.py'))
    crop = next(t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomCrop')
    assert tuple(crop.crop_size) == (640, 640) and tuple(cfg.model.data_preprocessor.size) == (
        640, 640)


def test_optimizer_decays_scan_parameters_but_not_norms():
    """As published: no weight decay on norm layers and on names with 'norm'; A_log, D decayed."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'seg', 'upernet_mambavision_t_ade20k.py'))
    cfg.model.backbone.arch = dict(dim=16, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2))
    cfg.model.decode_head.in_channels = [16, 32, 64, 128]
    cfg.model.decode_head.channels = 16
    cfg.model.auxiliary_head.in_channels = 64
    model = _build(cfg)
    cfg.optim_wrapper.type = 'OptimWrapper'  # AmpOptimWrapper needs CUDA
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    decay_of = {id(p): group['weight_decay'] for group in optimizer.param_groups
                for p in group['params']}
    names = dict(model.named_parameters())
    for name in ('backbone.levels.2.blocks.0.mixer.A_log', 'backbone.levels.2.blocks.0.mixer.D',
                 'backbone.levels.2.blocks.1.mixer.qkv.weight', 'decode_head.conv_seg.weight'):
        assert decay_of[id(names[name])] == 0.01, name
    for name in ('backbone.levels.2.blocks.0.norm1.weight', 'backbone.outnorm0.bias',
                 'decode_head.bottleneck.bn.weight'):
        assert decay_of[id(names[name])] == 0., name
