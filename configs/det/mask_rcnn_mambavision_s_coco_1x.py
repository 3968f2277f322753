# Mask R-CNN + FPN, MambaVision-S, COCO 1x: the recipe and windows of the T config; only the
# backbone differs. No published MambaVision result exists for this recipe.
_base_ = ['./mask_rcnn_mambavision_t_coco_1x.py']

# NVIDIA's ImageNet-1K MambaVision-S (see configs/_base_/mambavision_t.py)
pretrained = ('https://huggingface.co/nvidia/MambaVision-S-1K/resolve/main/'
              'mambavision_small_1k.pth.tar')

model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),  # 96, 192, 384, 768
    neck=dict(in_channels=[96, 192, 384, 768]))
