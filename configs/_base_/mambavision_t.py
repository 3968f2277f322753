# What the detection and segmentation MambaVision configs share: the mmmv import, the
# MambaVision-T backbone (ImageNet-1K initialised) and AdamW's parameter-wise settings.
# The T configs of configs/det and configs/seg inherit it next to the mmdet:: / mmseg:: bases and
# add their window sizes; the S / B / L3 configs inherit those and change arch, channels and
# checkpoint.
custom_imports = dict(imports=['mmmv'], allow_failed_imports=False)

# NVIDIA's ImageNet-1K MambaVision-T classifier (the URL of the published `mambavision` package's
# default_cfgs). Downloaded once into torch hub's cache ($TORCH_HOME/hub/checkpoints); offline,
# pass a local copy: --cfg-options model.backbone.init_cfg.checkpoint=PATH (a .pth.tar, the
# Hugging Face model.safetensors or a converted file).
pretrained = ('https://huggingface.co/nvidia/MambaVision-T-1K/resolve/main/'
              'mambavision_tiny_1k.pth.tar')

mambavision_backbone = dict(
    type='MambaVision',
    arch='tiny',                           # channels 80, 160, 320, 640
    out_indices=(0, 1, 2, 3),
    # The released detectors and segmentors were all trained with 0.2: their configs list
    # 0.2 / 0.3 / 0.5 (det) and 0.3 / 0.7 / 0.4 / 0.8 (seg T / S / B / L3), but NVIDIA's
    # wrapper never passed the value on, so the classifier default 0.2 applied. Our backbone
    # honours what it is given; set the listed value to train as the configs were written.
    drop_path_rate=0.2,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained))

# No weight decay on normalisation layers: every norm layer by type (norm_decay_mult) and every
# parameter whose name contains 'norm' (the backbone's norm1 / norm2 / outnorm{i}), as published.
# The selective-scan parameters mixer.A_log and mixer.D are decayed, as in the published runs
# (Mamba's own recipe exempts them: add 'mixer.A_log' and 'mixer.D' keys with decay_mult=0.).
mambavision_paramwise_cfg = dict(norm_decay_mult=0., custom_keys={'norm': dict(decay_mult=0.)})
