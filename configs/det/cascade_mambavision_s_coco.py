# Cascade Mask R-CNN + FPN with a MambaVision-S backbone on COCO (published: box AP 52.3,
# mask AP 45.2). Same recipe and windows as the tiny config; only the backbone differs.
_base_ = ['./cascade_mambavision_t_coco.py']

# NVIDIA's ImageNet-1K MambaVision-S (see configs/_base_/mambavision_t.py)
pretrained = ('https://huggingface.co/nvidia/MambaVision-S-1K/resolve/main/'
              'mambavision_small_1k.pth.tar')

model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),  # 96, 192, 384, 768
    neck=dict(in_channels=[96, 192, 384, 768]))
