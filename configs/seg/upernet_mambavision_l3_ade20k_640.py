# UperNet with a MambaVision-L3 backbone (ImageNet-21K pre-trained at 512x512) on ADE20K, 640x640
# crops, 160k iterations: NVIDIA's released recipe (mIoU 53.2): mmseg's own 640 ADE20K pipeline
# (scale 2560x640, ratio 0.5-2.0), UperNet (channels 512) + FCN auxiliary head on stage 2, AdamW
# lr 8e-5, weight decay 0.05, 1500 warm-up iterations then poly decay, no mixed precision (NVIDIA
# turned it off for L3: unstable), 16 images per batch (1 per GPU x 16 GPUs).
#
# Everything not set here comes from mmseg's own UperNet, ADE20K 640, 160k schedule and runtime
# configs.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k_640x640.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    '../_base_/mambavision_t.py',
]

# NVIDIA's MambaVision-L3-512-21K classifier (the published `mambavision` package's URL)
pretrained = ('https://huggingface.co/nvidia/MambaVision-L3-512-21K/resolve/main/'
              'mambavision_L3_21k_740m_512.pth.tar')

crop_size = (640, 640)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        **dict(_base_.mambavision_backbone, arch='large3',   # channels 256, 512, 1024, 2048
               init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
        # Stage 2 / 3 window sides as published: on a 640x640 crop the 40x40 / 20x20 maps are
        # zero-padded to one 64x64 / 32x32 window.
        window_size=(8, 8, 64, 32)),
    decode_head=dict(in_channels=[256, 512, 1024, 2048], channels=512, num_classes=150),
    auxiliary_head=dict(in_channels=1024, in_index=2, num_classes=150))

# AdamW in float32 (no AmpOptimWrapper); no decay on norms
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00008, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=_base_.mambavision_paramwise_cfg)

# 1500 linear warm-up iterations, then poly decay (power 1) to 0 at 160k
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# 1 image per GPU x 16 GPUs = 16 per batch
train_dataloader = dict(batch_size=1)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

# The lr above is for 16 images per batch; `tools/train.py --auto-scale-lr` scales it.
auto_scale_lr = dict(enable=False, base_batch_size=16)
