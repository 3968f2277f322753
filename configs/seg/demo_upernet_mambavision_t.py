# CPU demo: the UperNet + MambaVision-T recipe of upernet_mambavision_t_ade20k.py, trained from
# scratch on the synthetic shapes data of tools/make_demo_data.py (data/demo/ade, ADE20K's folder
# layout: 192x192 images, label maps 0 = background, 1..3 = shapes). Only what a short CPU run
# needs differs from the real config: the data, the input size and pipeline, the schedule, no
# pretrained weights, no mixed precision, BN instead of SyncBN, narrower heads, 4 classes.
#
#   python tools/make_demo_data.py
#   python tools/train.py configs/seg/demo_upernet_mambavision_t.py
_base_ = ['./upernet_mambavision_t_ade20k.py']

# Background is a class, trained and scored like the shapes (VOC's convention, not ADE20K's,
# which ignores label 0): it is most of every image, so a model must get it right to score.
classes = ('background', 'circle', 'square', 'triangle')
metainfo = dict(classes=classes,
                palette=[[0, 0, 0], [220, 20, 60], [0, 128, 255], [60, 180, 75]])
num_classes = len(classes)
data_root = 'data/demo/ade'
img_size = (192, 192)

max_iters = 200
warmup_iters = 20

head_norm_cfg = dict(type='BN', requires_grad=True)

data_preprocessor = dict(size=img_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        # Windows cover each whole stage-2/3 map (12x12 and 6x6 here) instead of padding them to
        # the published 64 / 32.
        fit_window=True,
        drop_path_rate=0.1,
        init_cfg=None),               # from scratch: no ImageNet weights in the demo
    # Narrower heads than the real 512 / 256 channels: the full-width UperNet alone would cost
    # several seconds per iteration on a small CPU.
    decode_head=dict(channels=128, num_classes=num_classes, norm_cfg=head_norm_cfg),
    auxiliary_head=dict(channels=64, num_classes=num_classes, norm_cfg=head_norm_cfg))

# Label k of a map is class k: the datasets' reduce_zero_label=False keeps 0 (background) as a
# class (LoadAnnotations takes the dataset's setting).
# BaseSegDataset (not ADE20KDataset, whose 150 fixed class names would reject ours) takes the
# class names.
dataset_type = 'BaseSegDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),   # reduce_zero_label: the dataset's
    dict(type='Resize', scale=img_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_size, keep_ratio=True),
    dict(type='LoadAnnotations'),   # reduce_zero_label: the dataset's
    dict(type='PackSegInputs'),
]
# One-process loading (the images are tiny): the same for training and validation.
demo_loader = dict(num_workers=0, persistent_workers=False)
demo_dataset = dict(type=dataset_type, data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
                    seg_map_suffix='.png', reduce_zero_label=False)
train_dataloader = dict(
    batch_size=2,
    **demo_loader,
    dataset=dict(
        **demo_dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    **demo_loader,
    dataset=dict(
        **demo_dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# Iteration-based schedule: linear warm-up then poly decay; evaluate once at the end.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=warmup_iters, end=max_iters,
         by_epoch=False),
]

# Plain fp32 OptimWrapper: no mixed precision on the CPU. AdamW with the real config's
# parameter-wise settings; a larger lr than fine-tuning's 5e-5 since everything starts from scratch.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=0.0005))
auto_scale_lr = dict(enable=False, base_batch_size=2)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
