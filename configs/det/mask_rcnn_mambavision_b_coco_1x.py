# Mask R-CNN + FPN, MambaVision-B, COCO 1x: the recipe and windows of the T config; only the
# backbone differs. No published MambaVision result exists for this recipe.
_base_ = ['./mask_rcnn_mambavision_t_coco_1x.py']

# NVIDIA's ImageNet-1K MambaVision-B (see configs/_base_/mambavision_t.py)
pretrained = ('https://huggingface.co/nvidia/MambaVision-B-1K/resolve/main/'
              'mambavision_base_1k.pth.tar')

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),  # 128, 256, 512, 1024
    neck=dict(in_channels=[128, 256, 512, 1024]))
