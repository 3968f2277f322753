# Cascade Mask R-CNN + FPN with a MambaVision-T backbone on COCO: the published recipe
# (box AP 51.1 / mask AP 44.3): 3x schedule (36 epochs), DETR-style multi-scale training with the
# random-crop branch, 4conv-1fc bbox heads with SyncBN and GIoU loss on decoded boxes, AdamW,
# mixed precision, 16 images per batch (2 per GPU x 8 GPUs).
#
# Everything not set here comes from mmdet's own Cascade Mask R-CNN, COCO instance, schedule and
# runtime configs. small / base (cascade_mambavision_{s,b}_coco.py) inherit this file.
# NVIDIA's released model: see README, Model zoo (tools/test.py this config with its URL).
_base_ = [
    'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/mambavision_t.py',
    '../_base_/coco_ms_crop_3x.py',
]

head_norm_cfg = dict(type='SyncBN', requires_grad=True)
num_classes = 80

model = dict(
    backbone=dict(
        _delete_=True,
        **_base_.mambavision_backbone,
        # Stages 2 and 3 split their (zero-padded) maps into windows of this side; at COCO scale
        # (up to 1333x800) one 112 / 56 window covers the whole stride-16 / stride-32 map.
        window_size=(8, 8, 112, 56)),
    neck=dict(in_channels=[80, 160, 320, 640]),
    roi_head=dict(
        bbox_head=[
            dict(
                type='Shared4Conv1FCBBoxHead',
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=num_classes,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0., 0., 0., 0.],
                    target_stds=stds),
                # class-specific regression, as in the Swin / MambaVision 4conv1fc GIoU recipe
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                norm_cfg=head_norm_cfg,
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
            for stds in ([0.1, 0.1, 0.2, 0.2],
                         [0.05, 0.05, 0.1, 0.1],
                         [0.033, 0.033, 0.067, 0.067])
        ],
        mask_head=dict(num_classes=num_classes)))

# DETR-style multi-scale training with the random-crop branch, 3x schedule (36 epochs):
# configs/_base_/coco_ms_crop_3x.py. 2 images per GPU x 8 GPUs = 16 per batch.
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=_base_.ms_crop_train_pipeline))
train_cfg = dict(max_epochs=_base_.max_epochs_3x)
param_scheduler = _base_.param_scheduler_3x

# AdamW, mixed precision (AmpOptimWrapper needs CUDA; mmmv's tools turn it into bf16 CPU autocast
# on a machine without CUDA, and the demo configs use a plain OptimWrapper); no decay on norms.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(
        _delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=_base_.mambavision_paramwise_cfg)

# The lr above is for 16 images per batch; `tools/train.py --auto-scale-lr` (enable=True) scales
# it linearly to other batch sizes.
auto_scale_lr = dict(enable=False, base_batch_size=16)
