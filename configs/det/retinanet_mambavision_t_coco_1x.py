# RetinaNet + FPN with a MambaVision-T backbone on COCO, 1x schedule: the recipe mmdet reports
# Swin-T with (retinanet_swin-t-p4-w7_fpn_1x_coco.py): stages 1-3 into the FPN (P3-P7, the extra
# levels from P5's output), single-scale 1333x800, mmdet's 1x SGD schedule with lr 0.01,
# 16 images per batch (2 per GPU x 8 GPUs). No published MambaVision result exists for this
# recipe.
#
# Everything not set here comes from mmdet's own RetinaNet, COCO detection, 1x schedule and
# runtime configs.
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    '../_base_/mambavision_t.py',
]

model = dict(
    backbone=dict(
        _delete_=True,
        **dict(_base_.mambavision_backbone, out_indices=(1, 2, 3)),
        # NVIDIA's detection windows: at COCO scale (up to 1333x800) one 112 / 56 window covers
        # the whole stride-16 / stride-32 map (global attention), as in the released detectors.
        window_size=(8, 8, 112, 56)),
    neck=dict(in_channels=[160, 320, 640], start_level=0, num_outs=5))

optim_wrapper = dict(optimizer=dict(lr=0.01))
