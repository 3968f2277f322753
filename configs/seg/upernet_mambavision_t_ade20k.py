# UperNet with a MambaVision-T backbone on ADE20K, 512x512 crops, 160k iterations: the published
# recipe (mIoU 46.0): UperNet (channels 512) + FCN auxiliary head on stage 2, AdamW lr 5e-5,
# weight decay 0.01, 1500 warm-up iterations then poly decay, mixed precision, 16 images per batch
# (2 per GPU x 8 GPUs).
#
# Everything not set here comes from mmseg's own UperNet, ADE20K, 160k schedule and runtime
# configs. small / base (upernet_mambavision_{s,b}_ade20k.py) inherit this file.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    '../_base_/mambavision_t.py',
]

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        **_base_.mambavision_backbone,
        # Stage 2 / 3 window sides as published: on a 512x512 crop the 32x32 / 16x16 maps are
        # zero-padded to one 64x64 / 32x32 window.
        window_size=(8, 8, 64, 32)),
    decode_head=dict(in_channels=[80, 160, 320, 640], channels=512, num_classes=150),
    auxiliary_head=dict(in_channels=320, in_index=2, num_classes=150))

# AdamW, mixed precision (AmpOptimWrapper needs CUDA; mmmv's tools turn it into bf16 CPU autocast
# on a machine without CUDA, and the demo config uses a plain OptimWrapper); no decay on norms.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00005, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=_base_.mambavision_paramwise_cfg)

# 1500 linear warm-up iterations, then poly decay (power 1) to 0 at 160k
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# 2 images per GPU x 8 GPUs = 16 per batch
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

# The lr above is for 16 images per batch; `tools/train.py --auto-scale-lr` (enable=True) scales
# it linearly to other batch sizes.
auto_scale_lr = dict(enable=False, base_batch_size=16)
