# UperNet with a MambaVision-B backbone on ADE20K, 512x512, 160k iterations (published: mIoU
# 49.1). Same recipe and windows as the tiny config; only the backbone differs.
_base_ = ['./upernet_mambavision_t_ade20k.py']

pretrained = 'checkpoints/mambavision_base_1k.pth.tar'

model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=pretrained)),  # layer scale 1e-5
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
