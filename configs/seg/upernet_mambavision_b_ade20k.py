# UperNet with a MambaVision-B backbone on ADE20K, 512x512, 160k iterations (published: mIoU
# 49.1). Same recipe and windows as the tiny config; only the backbone differs.
_base_ = ['./upernet_mambavision_t_ade20k.py']

# NVIDIA's ImageNet-1K MambaVision-B (see configs/_base_/mambavision_t.py)
pretrained = ('https://huggingface.co/nvidia/MambaVision-B-1K/resolve/main/'
              'mambavision_base_1k.pth.tar')

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),  # layer scale 1e-5
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
