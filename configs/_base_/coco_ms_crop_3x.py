# The 3x COCO recipe of Swin and MambaVision detectors: DETR-style multi-scale training with a
# random-crop branch and 36 epochs, as in mmdet's mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py
# and NVIDIA's Cascade Mask R-CNN configs. Inherit it next to an mmdet:: detector base and use
# the names below (prefixed, so they do not clash with mmdet's bases):
#   train_dataloader = dict(dataset=dict(pipeline=_base_.ms_crop_train_pipeline))
#   train_cfg = dict(max_epochs=_base_.max_epochs_3x)
#   param_scheduler = _base_.param_scheduler_3x

# Either resize the shorter side to 480..800 (step 32, longer side <= 1333), or resize to
# 400/500/600, crop 384..600 and then resize to 480..800.
ms_scales = [(s, 1333) for s in range(480, 801, 32)]
ms_crop_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize',
                     scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop',
                     crop_type='absolute_range',
                     crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]

# 36 epochs, lr x0.1 after epochs 27 and 33, linear warm-up over 1000 iterations
max_epochs_3x = 36
param_scheduler_3x = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs_3x, by_epoch=True, milestones=[27, 33],
         gamma=0.1),
]
