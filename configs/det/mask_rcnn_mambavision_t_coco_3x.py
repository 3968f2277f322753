# Mask R-CNN + FPN, MambaVision-T, COCO 3x: the 1x config with DETR-style multi-scale training
# (random-crop branch) and 36 epochs, as mmdet's mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py.
# No published MambaVision result exists for this recipe.
_base_ = ['./mask_rcnn_mambavision_t_coco_1x.py', '../_base_/coco_ms_crop_3x.py']

train_dataloader = dict(dataset=dict(pipeline=_base_.ms_crop_train_pipeline))
train_cfg = dict(max_epochs=_base_.max_epochs_3x)
param_scheduler = _base_.param_scheduler_3x
