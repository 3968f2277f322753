"""Registration and the CPU / GPU adaptation of configs."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import OPTIM_WRAPPERS

import mmmv
from mmmv.registry import BACKBONES, downstream_model_registries
from mmmv.runtime import (CPUAutocastOptimWrapper, adapt_to_device, enable_amp,
                          enable_result_dump, enable_visualization, task_of)


def _cfg(scope='mmdet', **extra):
    return Config(dict(
        default_scope=scope,
        env_cfg=dict(dist_cfg=dict(backend='nccl')),
        model=dict(type='Toy', backbone=dict(type='MambaVision'),
                   heads=[dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
                          dict(norm_cfg=dict(type='GN', num_groups=2))],
                   decode_head=dict(norm_cfg=dict(type='MMSyncBN'))),
        optim_wrapper=dict(type='AmpOptimWrapper', loss_scale='dynamic',
                           optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(visualization=dict(type='Vis', draw=False)),
        visualizer=dict(type='Visualizer'),
        test_evaluator=dict(type='IoUMetric'),
        **extra))


def test_import_registers_in_mmdet_and_mmseg():
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    registries = downstream_model_registries()
    assert DET_MODELS in registries and SEG_MODELS in registries
    for registry in (DET_MODELS, SEG_MODELS):
        for name, module in BACKBONES.items():
            assert registry.get(name) is module
        assert registry.get('MambaVision') is mmmv.MambaVision
    assert OPTIM_WRAPPERS.get('CPUAutocastOptimWrapper') is CPUAutocastOptimWrapper


def test_nvidia_config_keywords_build_through_registry():
    from mmdet.registry import MODELS
    with MODELS.switch_scope_and_registry('mmdet') as registry:  # whatever scope runs now
        backbone = registry.build(dict(
            type='MM_mamba_vision', dim=32, in_dim=16, depths=[1, 1, 2, 1],
            num_heads=[1, 2, 2, 4], window_size=[8, 8, 4, 2], mlp_ratio=4., drop_path_rate=0.1,
            norm_layer='ln2d', layer_scale=None, out_indices=(1, 3)))
    outs = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 8, 8), (1, 256, 2, 2)]


def test_cpu_adaptation():
    cfg = adapt_to_device(_cfg(), cuda_available=False)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model.heads[0].norm_cfg.type == 'BN'
    assert cfg.model.heads[1].norm_cfg.type == 'GN'
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert cfg.optim_wrapper.type == 'CPUAutocastOptimWrapper'


def test_gpu_config_left_alone():
    cfg = adapt_to_device(_cfg(), cuda_available=True)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert cfg.model.heads[0].norm_cfg.type == 'SyncBN'
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'


def test_enable_amp_then_cpu_autocast_runs_in_bfloat16():
    cfg = _cfg()
    cfg.optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))
    enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    adapt_to_device(cfg, cuda_available=False)
    model = torch.nn.Linear(4, 4)
    wrapper = OPTIM_WRAPPERS.build(dict(
        cfg.optim_wrapper, optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    with wrapper.optim_context(model):
        assert model(torch.randn(2, 4)).dtype == torch.bfloat16


def test_task_of_names_the_allowed_scopes():
    assert task_of(_cfg('mmseg')) == 'mmseg'
    with pytest.raises(ValueError, match="default_scope must be one of \\('mmdet', 'mmseg'\\)"):
        task_of(_cfg('mmpretrain'))


def test_show_dir_goes_where_each_task_expects():
    det = _cfg('mmdet')
    enable_visualization(det, show_dir='pics')
    assert det.default_hooks.visualization.draw and det.default_hooks.visualization.test_out_dir \
        == 'pics'
    seg = _cfg('mmseg')
    enable_visualization(seg, show_dir='pics')
    assert seg.default_hooks.visualization.draw and seg.visualizer.save_dir == 'pics'
    assert seg.default_hooks.visualization.interval == 1


def test_result_dump():
    det = _cfg('mmdet')
    enable_result_dump(det, 'preds.pkl')
    assert det.test_evaluator[-1].type == 'DumpDetResults'
    with pytest.raises(ValueError, match='--out must end with .pkl'):
        enable_result_dump(_cfg('mmdet'), 'preds.json')
    seg = _cfg('mmseg')
    enable_result_dump(seg, 'out_dir')
    assert seg.test_evaluator.output_dir == 'out_dir' and seg.test_evaluator.keep_results


def test_release_distributed_destroys_the_process_group(tmp_path):
    import torch.distributed as dist

    from mmmv.runtime import release_distributed
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                            world_size=1)
    assert dist.is_initialized()
    release_distributed()
    assert not dist.is_initialized()
    release_distributed()  # without a group: nothing to do, no error
