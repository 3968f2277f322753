"""Parameters and FLOPs of MambaVision detectors and segmentors (``tools/get_flops.py``).

Counting is mmengine's :class:`mmengine.analysis.FlopAnalyzer` (fvcore's jit-trace counter): the
model is traced once on a fake input and every traced operator with a *handle* is counted from its
input/output shapes. Conventions:

- One multiply-accumulate (MAC) counts as one FLOP, as in fvcore, mmengine and the FLOPs columns
  of OpenMMLab's model zoos ("G" below means 1e9 MACs).
- mmengine's default handles are kept: convolutions and linear layers / matmuls (MACs, bias not
  counted), eval-mode BatchNorm (2 per element), LayerNorm and GroupNorm (5 per element),
  bilinear upsampling (4 per output element), nearest upsampling and adaptive average pooling.
- Other elementwise operators (add, mul, activations, softmax, exp, softplus, ...) and operators
  without arithmetic (reshapes, NMS, sorting) are not counted. ``--detail`` lists them.

mmengine's counter silently skips what MambaVision spends much of its time in, so this module
adds handles (:data:`EXTRA_FLOP_HANDLES`):

- **Selective scan.** ``mmmv.ops.selective_scan`` runs its core as an autograd Function, which
  the trace records as one opaque ``prim::PythonOp.CppScan`` (C++ CPU kernel, the default on a CPU)
  or ``prim::PythonOp.TorchScan`` (pure-PyTorch backend); on CUDA with mamba-ssm it is
  ``prim::PythonOp.SelectiveScanFn``. For u, delta of shape (b, d, l) and n states the scan costs
  (:func:`selective_scan_macs`), per (batch b, channel d, token l)::

      4 * n + 1   MACs for the core:  per state:  delta * A               1
                                                  (delta * u) * B         1
                                                  h = exp(.) * h + (.)    1
                                                  y += C * h              1
                                      per token and channel:  delta * u   1
      + 1         MAC for the skip term y += D * u (when D is given)

  i.e. 4n + 2 = 34 MACs per (b, d, l) for MambaVision's n = 8. exp, softplus and the bias add
  are elementwise and not counted. With the C++ / PyTorch backends the D * u term is traced as an
  ``aten::addcmul`` on the scan's output; that addcmul is counted as part of the scan, so the total
  does not depend on the backend (other addcmuls are elementwise and not counted). This is the
  count an fvcore-style tally of Mamba's reference scan gives (VMamba's
  ``flops_selective_scan_ref``: 4 b*d*l*n + b*d*l, plus b*d*l for D); VMamba's
  ``flops_selective_scan_fn`` uses 9 b*l*d*n instead. Either way the scan is well under 0.1 % of
  a MambaVision detector's or segmentor's count.
- **Attention.** ``aten::scaled_dot_product_attention`` with q (..., L, E), k (..., S, E) and v
  (..., S, Ev) costs prod(...) * L * S * (E + Ev) MACs: q @ k^T and attn @ v
  (:func:`attention_macs`; 2 * B * heads * L * L * head_dim for self-attention). Softmax and the
  scale are elementwise and not counted.
- **aten::matmul / aten::mm** are re-counted with broadcasting: mmengine's handle multiplies the
  first operand's shape by the second's last dimension, which forgets the batch of
  ``weight (m, k) @ x (N, k, l)`` (MambaVision's x_proj / dt_proj on N windows).

Left uncounted on purpose besides the elementwise ops: NMS (comparisons) and mmcv's RoIAlign,
whose bilinear sampling count depends on the RoI sizes (sampling_ratio=0); for a Cascade Mask
R-CNN on 1000 RoIs it is of the order of 1 GMAC, under 0.1 % of the total.

Hybrid stages run on zero-padded windows, so their token counts (and FLOPs) are those of the padded
maps: at 800x1280 a (8, 8, 112, 56) detector pads the 50x80 stride-16 map to one 112x112 window.

What is counted is the published computation op for op: MambaVision backbones must run without
their fast paths (``MambaVision(..., fast_paths=False)`` or ``set_fast_paths(False)``, which
:func:`model_complexity` does; :func:`flop_analyzer` refuses a model that has them on), since the
fast paths skip padded tokens' work in the last block of a stage and run ops the counter does not
know (the CPU attention kernel, shifted multiply-adds instead of depthwise convs).

The model code does not depend on this module.
"""
import functools
import math
from collections import Counter

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape
from mmengine.analysis.print_helper import complexity_stats_table

from mmmv.models import MambaVision

DEFAULT_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 2048)}  # (H, W), the OpenMMLab habit

# Traced names of the selective-scan autograd Functions (see the module docstring).
OWN_SCAN_OPS = ('prim::PythonOp.CppScan', 'prim::PythonOp.TorchScan')
MAMBA_SCAN_OP = 'prim::PythonOp.SelectiveScanFn'

# Uncounted operators known to carry no MACs, only elementwise work, or (NMS, RoIAlign) a
# data-dependent and negligible amount: reported by --detail, not warned about.
NOT_COUNTED_OPS = frozenset({
    'prim::PythonOp.NMSop', 'prim::PythonOp.RoIAlignFunction',
    'aten::abs', 'aten::add', 'aten::add_', 'aten::addcdiv', 'aten::addcmul_', 'aten::all',
    'aten::any', 'aten::argmax', 'aten::bitwise_and', 'aten::bitwise_or', 'aten::clamp_min',
    'aten::clone', 'aten::cos', 'aten::cumsum', 'aten::div', 'aten::div_', 'aten::erf',
    'aten::exp', 'aten::expand_as', 'aten::feature_dropout', 'aten::fill_', 'aten::gelu',
    'aten::gelu_',
    'aten::hardtanh', 'aten::index_select', 'aten::le', 'aten::leaky_relu', 'aten::linspace',
    'aten::log', 'aten::log2', 'aten::log_softmax', 'aten::lt', 'aten::masked_select',
    'aten::max_pool2d', 'aten::maximum', 'aten::mean', 'aten::min', 'aten::minimum', 'aten::mul',
    'aten::mul_', 'aten::ne', 'aten::neg', 'aten::new_ones', 'aten::new_tensor', 'aten::pad',
    'aten::pow', 'aten::repeat', 'aten::resize_', 'aten::rsqrt', 'aten::rsub',
    'aten::scalar_tensor', 'aten::scatter', 'aten::sigmoid', 'aten::sigmoid_', 'aten::silu',
    'aten::sin', 'aten::softmax', 'aten::softplus', 'aten::sort', 'aten::sqrt', 'aten::sub',
    'aten::sum', 'aten::tanh', 'aten::topk', 'aten::unflatten', 'aten::where', 'aten::zero_',
})


# ----------------------------------------------------------------------------------- formulas
def selective_scan_macs(b, d, l, n, with_D=True, with_z=False):
    """MACs of a selective scan of u (b, d, l) with n states (module docstring).

    with_D adds the skip term D * u, with_z mamba-ssm's output gate y * silu(z) (one multiply).
    """
    return b * d * l * (4 * n + 1 + int(with_D) + int(with_z))


def attention_macs(batch, q_len, kv_len, head_dim, v_head_dim=None):
    """MACs of softmax(q k^T) v: q @ k^T and attn @ v for ``batch`` (batch x heads) pairs."""
    v_head_dim = head_dim if v_head_dim is None else v_head_dim
    return batch * q_len * kv_len * (head_dim + v_head_dim)


# ------------------------------------------------------------------------------------ handles
def _python_op_args(outputs):
    """Positional arguments of a traced ``prim::PythonOp``: jit Values for tensors, else the
    Python scalars (None included), in call order."""
    node = outputs[0].node()
    tensors, scalars = iter(node.inputs()), iter(node.scalar_args())
    return [next(tensors) if kind == 'd' else next(scalars) for kind in node.cconv()]


def own_scan_flop_jit(inputs, outputs):
    """``CppScan`` / ``TorchScan`` (u, delta, A, B, C): the scan core, without D * u."""
    b, d, l = get_shape(inputs[0])
    n = get_shape(inputs[2])[1]
    return Counter({'selective_scan': selective_scan_macs(b, d, l, n, with_D=False)})


def mamba_scan_flop_jit(inputs, outputs):
    """mamba-ssm's ``SelectiveScanFn`` (u, delta, A, B, C, D=None, z=None, ...): scan core plus
    D * u and the z gate when given."""
    args = _python_op_args(outputs)
    args += [None] * (7 - len(args))
    b, d, l = get_shape(args[0])
    n = get_shape(args[2])[1]
    with_D, with_z = (isinstance(a, torch._C.Value) for a in args[5:7])
    return Counter({'selective_scan': selective_scan_macs(b, d, l, n, with_D, with_z)})


def sdpa_flop_jit(inputs, outputs):
    """``aten::scaled_dot_product_attention`` (q, k, v, ...): q @ k^T and attn @ v."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    return Counter({
        'scaled_dot_product_attention':
        attention_macs(math.prod(q[:-2]), q[-2], k[-2], q[-1], v[-1])
    })


def addcmul_flop_jit(inputs, outputs):
    """``aten::addcmul``: the scan's D * u term (one MAC per element) where it adds to the output
    of a scan core (``selective_scan`` with the C++ / PyTorch backends); elsewhere elementwise,
    not counted."""
    producer = inputs[0].node()
    if producer.kind() == 'prim::PythonOp' and \
            f'prim::PythonOp.{producer.pyname()}' in OWN_SCAN_OPS:
        return Counter({'selective_scan': math.prod(get_shape(outputs[0]))})
    return Counter()


def matmul_flop_jit(inputs, outputs):
    """``aten::matmul`` / ``aten::mm`` with numpy broadcasting of the batch dimensions."""
    a, b = (list(get_shape(t)) for t in inputs[:2])
    a = [1] + a if len(a) == 1 else a
    b = b + [1] if len(b) == 1 else b
    if a[-1] != b[-2]:
        raise ValueError(f'matmul of incompatible shapes {a} and {b}')
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


EXTRA_FLOP_HANDLES = {
    **{name: own_scan_flop_jit for name in OWN_SCAN_OPS},
    MAMBA_SCAN_OP: mamba_scan_flop_jit,
    'aten::scaled_dot_product_attention': sdpa_flop_jit,
    'aten::addcmul': addcmul_flop_jit,
    'aten::matmul': matmul_flop_jit,
    'aten::mm': matmul_flop_jit,
}


def flop_analyzer(model, inputs, extra_handles=True):
    """mmengine FlopAnalyzer for ``model(*inputs)`` with :data:`EXTRA_FLOP_HANDLES` (unless
    ``extra_handles`` is False: mmengine's defaults only, what common counters report).

    The trace runs lazily on the first query. Unsupported-op and uncalled-module warnings are off;
    see :func:`uncounted_ops`. Raises ValueError for a model with a MambaVision backbone whose
    fast paths are on (module docstring).
    """
    fast = [name or 'the model' for name, m in model.named_modules()
            if isinstance(m, MambaVision) and m.fast_paths]
    if fast:
        raise ValueError(f'{", ".join(fast)}: FLOPs count the published computation; build '
                         'MambaVision with fast_paths=False or call set_fast_paths(False)')
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs, )
    analyzer = FlopAnalyzer(model, tuple(inputs))
    if extra_handles:
        analyzer.set_op_handle(**EXTRA_FLOP_HANDLES)
    return (analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            .tracer_warnings('none'))


def uncounted_ops(analyzer):
    """(ops in :data:`NOT_COUNTED_OPS`, other ops) the analyzer met but did not count, as
    Counters of op name -> occurrences."""
    skipped = analyzer.unsupported_ops()
    known = Counter({k: v for k, v in skipped.items() if k in NOT_COUNTED_OPS})
    return known, skipped - known


# -------------------------------------------------------------------------- whole models
def build_model(cfg):
    """The detector / segmentor of a loaded config, on the CPU, in eval mode, with random
    weights (no pretrained checkpoint is loaded: init_weights is never called) and MambaVision's
    fast paths off.

    ``cfg`` should come from ``mmmv.engine.load_config`` (SyncBN already turned into BN on a
    machine without CUDA). Weights are drawn from a fixed seed, so data-dependent parts (the number
    of RPN proposals) are reproducible.
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    from mmmv.engine import task_of
    task = task_of(cfg)
    init_default_scope(task)
    model_cfg = cfg.model.copy()
    if model_cfg.get('pretrained') is not None:
        model_cfg.pretrained = None
    if 'backbone' in model_cfg:
        model_cfg.backbone = dict(model_cfg.backbone, init_cfg=None)
        model_cfg.backbone.pop('pretrained', None)
    registry = _registry(task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = registry.build(model_cfg)
    for m in model.modules():
        if isinstance(m, MambaVision):
            m.set_fast_paths(False)  # count the published computation
    return revert_sync_batchnorm(model).cpu().eval()


def _registry(task):
    if task == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return MODELS


def fake_batch(model, task, shape):
    """``(inputs, data_samples)`` for one random H x W image (shape = (H, W)) after the model's
    data_preprocessor, as mmdet's / mmseg's get_flops tools build them."""
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1.0, 1.0),
                flip=False, flip_direction=None)
    if task == 'mmdet':
        from mmdet.structures import DetDataSample as DataSample
    else:
        from mmseg.structures import SegDataSample as DataSample
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8)
    data = model.data_preprocessor(
        dict(inputs=[image], data_samples=[DataSample(metainfo=meta)]), False)
    return data['inputs'], data['data_samples']


class _RoICounter:
    """Forward pre-hook on RoI feature extractors recording how many RoIs each call gets."""

    def __init__(self):
        self.counts = []

    def __call__(self, module, args):
        if len(args) > 1 and isinstance(args[1], torch.Tensor):
            self.counts.append(int(args[1].shape[0]))


def model_complexity(cfg, shape=None, extra_handles=True):
    """Count the parameters and FLOPs of a config's model on one H x W image.

    Args:
        cfg (Config): From ``mmmv.engine.load_config`` (default_scope 'mmdet' or 'mmseg').
        shape (tuple[int, int], optional): (H, W); defaults to :data:`DEFAULT_SHAPES`.
        extra_handles (bool): Count the selective scan and attention (module docstring).

    Returns:
        dict: task, input_shape (3, H, W), batch_input_shape (after padding), flops, params,
        params_inference (without a segmentor's auxiliary head, which inference does not run),
        num_proposals (detectors with an RoI head, else None), analyzer (the FlopAnalyzer) and
        model.
    """
    from mmmv.engine import task_of
    task = task_of(cfg)
    shape = tuple(DEFAULT_SHAPES[task] if shape is None else shape)
    model = build_model(cfg)
    with torch.no_grad():
        inputs, data_samples = fake_batch(model, task, shape)
    rois = _RoICounter()
    hooks = []
    if isinstance(getattr(model, 'roi_head', None), nn.Module):
        hooks += [m.register_forward_pre_hook(rois)
                  for name, m in model.roi_head.named_modules() if 'roi_extractor' in name]
    # As mmdet's get_flops: trace model(inputs) with the data samples and mode bound to forward.
    model.forward = functools.partial(model.forward, data_samples=data_samples, mode='tensor')
    analyzer = flop_analyzer(model, (inputs, ), extra_handles)
    try:
        with torch.no_grad():
            flops = analyzer.total()  # traces now; later queries reuse the statistics
    finally:
        del model.forward
        for hook in hooks:
            hook.remove()
    params = parameter_count(model)['']
    aux = getattr(model, 'auxiliary_head', None)
    params_aux = sum(p.numel() for p in aux.parameters()) if isinstance(aux, nn.Module) else 0
    return dict(
        task=task,
        input_shape=(3, *shape),
        batch_input_shape=tuple(inputs.shape[-3:]),
        flops=flops,
        params=params,
        params_inference=params - params_aux,
        num_proposals=max(rois.counts) if rois.counts else None,
        analyzer=analyzer,
        model=model)


# ------------------------------------------------------------------------------------ report
def format_flops(x):
    """FLOPs (MACs) in G with three decimals, as mmdet's get_flops prints them: ``740.123G``."""
    return f'{x / 1e9:.3f}G'


def format_params(x):
    """Parameters in M with three decimals: ``86.123M``."""
    return f'{x / 1e6:.3f}M'


def format_result(result, detail=False, max_depth=4):
    """Lines printed by ``tools/get_flops.py`` for a :func:`model_complexity` result."""
    split_line = '=' * 30
    lines = [split_line]
    if result['batch_input_shape'] != result['input_shape']:
        lines.append(f"Use size divisor set input shape from {result['input_shape']} to "
                     f"{result['batch_input_shape']}")
    lines += [
        f"Input shape: {result['input_shape']}",
        f"Flops: {format_flops(result['flops'])}",
        f"Params: {format_params(result['params'])}",
    ]
    if result['params_inference'] != result['params']:
        lines.append(f"Params without auxiliary_head: {format_params(result['params_inference'])}")
    if result['num_proposals'] is not None:
        lines.append(f"RoI heads counted on {result['num_proposals']} proposals (RPN output of "
                     'this random-weight model; in tensor mode every box and mask head runs on '
                     'all of them)')
    lines.append(split_line)
    analyzer = result['analyzer']
    elementwise, other = uncounted_ops(analyzer)
    if detail:
        by_op = analyzer.by_operator()
        lines.append('FLOPs by operator (MACs):')
        lines += [f'  {op}: {format_flops(v)}' for op, v in by_op.most_common()]
        lines.append('Not counted (elementwise, no MACs, or negligible), occurrences:')
        lines.append('  ' + ', '.join(f'{k} x{v}' for k, v in sorted(elementwise.items())))
        lines.append(complexity_stats_table(flops=analyzer, max_depth=max_depth,
                                            show_param_shapes=False))
    if other:
        lines.append('WARNING: not counted, no FLOP handle: ' +
                     ', '.join(f'{k} x{v}' for k, v in sorted(other.items())))
    lines.append('FLOPs count one multiply-accumulate as one; selective scan and attention '
                 'included (see mmmv/flops.py for the conventions).')
    return '\n'.join(lines)
