"""``MM_mamba_vision``: the backbone under the name and keywords of NVIDIA's released detection
and segmentation configs (the MambaVision GitHub repository's ``object_detection`` and
``semantic_segmentation`` code), so a copy of such a config builds unchanged.

NVIDIA's keywords describe the architecture directly (dim, in_dim, depths, num_heads,
mlp_ratio, layer_scale, layer_scale_conv), name the output norm (norm_layer; only 'ln2d'
exists) and the checkpoint (pretrained); they become :class:`MambaVision`'s ``arch`` dict and
``init_cfg``. Every other keyword is one of MambaVision's own options.
"""
from mmmv.errors import ConfigError

from .mambavision import MambaVision


def nvidia_options(dim, in_dim, depths, num_heads, mlp_ratio=4., layer_scale=None,
                   layer_scale_conv=None, norm_layer='ln2d', pretrained=None, **options):
    """MambaVision's keyword arguments for NVIDIA's ``MM_mamba_vision`` keywords.

    ``pretrained`` (a checkpoint path) becomes ``init_cfg=dict(type='Pretrained',
    checkpoint=pretrained)``; ``options`` (out_indices, window_size, drop_path_rate, ...) pass
    through unchanged.
    """
    if norm_layer != 'ln2d':
        raise ConfigError('norm_layer', norm_layer, "MambaVision's output norm is 'ln2d' "
                          '(LayerNorm over channels)', "leave norm_layer out or set 'ln2d'")
    if 'arch' in options:
        raise ConfigError('arch', options['arch'], 'MM_mamba_vision takes dim, in_dim, depths and '
                          'num_heads instead', "use type='MambaVision' for an arch")
    if pretrained is not None:
        if options.get('init_cfg') is not None:
            raise ConfigError('pretrained', pretrained, 'given together with init_cfg',
                              'give one of them')
        if not isinstance(pretrained, str):
            raise ConfigError('pretrained', pretrained, 'must be a checkpoint path')
        options['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
    arch = dict(dim=dim, in_dim=in_dim, depths=depths, num_heads=num_heads, mlp_ratio=mlp_ratio,
                layer_scale=layer_scale, layer_scale_conv=layer_scale_conv)
    return dict(options, arch=arch)


def MM_mamba_vision(**kwargs):  # noqa: N802 (the name in NVIDIA's configs)
    """A :class:`MambaVision` from NVIDIA's ``MM_mamba_vision`` keywords (:func:`nvidia_options`).
    """
    return MambaVision(**nvidia_options(**kwargs))
