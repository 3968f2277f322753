# UperNet with a MambaVision-S backbone on ADE20K, 512x512, 160k iterations (published: mIoU
# 48.2). Same recipe as the tiny config except the backbone, its windows and lr 6e-5.
_base_ = ['./upernet_mambavision_t_ade20k.py']

# NVIDIA's ImageNet-1K MambaVision-S (see configs/_base_/mambavision_t.py)
pretrained = ('https://huggingface.co/nvidia/MambaVision-S-1K/resolve/main/'
              'mambavision_small_1k.pth.tar')

model = dict(
    # published small windows: the 32x32 / 16x16 maps of a 512 crop pad to 160 / 56
    backbone=dict(arch='small', window_size=(8, 8, 160, 56), init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

optim_wrapper = dict(optimizer=dict(lr=0.00006))
