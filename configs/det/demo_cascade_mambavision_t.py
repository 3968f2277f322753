# CPU demo: the Cascade Mask R-CNN + MambaVision-T recipe of cascade_mambavision_t_coco.py, trained
# from scratch on the synthetic shapes data of tools/make_demo_data.py (data/demo/coco: 192x192
# images, 3 classes). Only what a short CPU run needs differs from the real config: the data,
# the input size and pipeline, the schedule, no pretrained weights, no mixed precision, narrower
# FPN / heads, fewer proposals / sampled RoIs, 3 classes. (The heads' SyncBN runs as BN on a CPU.)
#
#   python tools/make_demo_data.py
#   python tools/train.py configs/det/demo_cascade_mambavision_t.py
_base_ = ['./cascade_mambavision_t_coco.py']

classes = ('circle', 'square', 'triangle')
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75)])
num_classes = len(classes)
data_root = 'data/demo/coco/'
img_size = (192, 192)

max_iters = 300
warmup_iters = 50

# Narrower FPN and heads (128 channels instead of 256, fc 512 instead of 1024) and fewer sampled
# RoIs (32 per image and stage instead of 512): the full-width 4conv1fc and mask heads on 1000+
# RoIs cost ten times the backbone and would dominate a CPU run. The structure (FPN, three
# 4conv1fc GIoU stages, 4-conv mask head) is unchanged.
width = 128
model = dict(
    backbone=dict(
        # Windows cover each whole stage-2/3 map, as the published (8, 8, 112, 56) windows do on
        # COCO-sized images, but without padding a 12x12 map to 112x112 (87x the tokens).
        fit_window=True,
        drop_path_rate=0.1,
        init_cfg=None),               # from scratch: no ImageNet weights in the demo
    neck=dict(out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        mask_roi_extractor=dict(out_channels=width),
        bbox_head=[
            dict(head, in_channels=width, conv_out_channels=width, fc_out_channels=4 * width,
                 num_classes=num_classes)
            for head in _base_.model.roi_head.bbox_head
        ],
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=[
            dict(stage, sampler=dict(stage.sampler, num=32))
            for stage in _base_.model.train_cfg.rcnn
        ]),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json',
                     metric=['bbox', 'segm'])
# The test also reports every class's AP. mmdet's CocoMetric names those '<class>_precision' for
# box and mask AP alike (the second overwrites the first), so one metric per prefix:
# bbox/bbox_mAP, bbox/circle_precision, ..., segm/segm_mAP, segm/circle_precision, ...
test_evaluator = [
    dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json', metric=metric,
         classwise=True, prefix=metric, format_only=False)
    for metric in ('bbox', 'segm')
]

# Iteration-based schedule: linear warm-up, then x0.1 steps near the end; evaluate once at the end.
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.8), int(max_iters * 0.93)], gamma=0.1),
]

# Plain fp32 OptimWrapper: no mixed precision on the CPU. AdamW with the real config's
# parameter-wise settings; a larger lr than fine-tuning's 1e-4 since everything starts from scratch.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=0.0002))
auto_scale_lr = dict(enable=False, base_batch_size=2)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
