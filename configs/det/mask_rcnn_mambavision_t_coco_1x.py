# Mask R-CNN + FPN with a MambaVision-T backbone on COCO, 1x schedule (12 epochs): the recipe
# mmdet reports Swin-T with (mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py), so MambaVision can sit in
# the same table as Swin, ConvNeXt and VMamba: single-scale 1333x800 training, AdamW lr 1e-4,
# weight decay 0.05, lr x0.1 after epochs 8 and 11, 16 images per batch (2 per GPU x 8 GPUs).
# No published MambaVision result exists for this recipe.
#
# Everything not set here comes from mmdet's own Mask R-CNN, COCO instance, 1x schedule and
# runtime configs. S / B and the 3x variants inherit this file.
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/mambavision_t.py',
]

model = dict(
    backbone=dict(
        _delete_=True,
        **_base_.mambavision_backbone,
        # NVIDIA's detection windows: at COCO scale (up to 1333x800) one 112 / 56 window covers
        # the whole stride-16 / stride-32 map (global attention), as in the released detectors.
        window_size=(8, 8, 112, 56)),
    neck=dict(in_channels=[80, 160, 320, 640]))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
# linear warm-up over 1000 iterations (mmdet's Swin recipe; its R-50 base warms up over 500)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]

# AdamW in float32 (mmdet's Swin recipe has no mixed precision); no decay on norms
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        _delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=_base_.mambavision_paramwise_cfg)

# The lr above is for 16 images per batch; `tools/train.py --auto-scale-lr` scales it.
auto_scale_lr = dict(enable=False, base_batch_size=16)
