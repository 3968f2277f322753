# Cascade Mask R-CNN + FPN with a MambaVision-B backbone on COCO (published: box AP 52.8,
# mask AP 45.7). Same recipe and windows as the tiny config; only the backbone differs.
_base_ = ['./cascade_mambavision_t_coco.py']

# NVIDIA's ImageNet-1K MambaVision-B (see configs/_base_/mambavision_t.py)
pretrained = ('https://huggingface.co/nvidia/MambaVision-B-1K/resolve/main/'
              'mambavision_base_1k.pth.tar')

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),  # 128, 256, 512, 1024
    neck=dict(in_channels=[128, 256, 512, 1024]))
