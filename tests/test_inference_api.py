"""mmdet's and mmseg's own inference APIs on our demo configs and checkpoints: init_detector /
inference_detector / DetInferencer, init_model / inference_model / MMSegInferencer.

The checkpoints are the demo models with seeded random weights, saved as a training run saves
them (state_dict + dataset meta); the segmentor's classifier is set to call every pixel 'square',
so a prediction shows that the checkpoint, not a fresh initialisation, was used.
"""
import importlib.util
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from test_e2e import DET, SEG, _demo_checkpoint  # noqa: I100  (tests/ is on sys.path)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SQUARE = 2  # index of 'square' in the seg demo's classes (background, circle, square, triangle)

pytestmark = [pytest.mark.usefixtures('one_thread'),
              pytest.mark.filterwarnings('ignore::UserWarning')]


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    """One 96x96 demo scene (RGB) and its file."""
    spec = importlib.util.spec_from_file_location('make_demo_data',
                                                  osp.join(ROOT, 'tools', 'make_demo_data.py'))
    mdd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mdd)
    rgb, _, _ = mdd.make_scene(np.random.default_rng(0), 96)
    path = tmp_path_factory.mktemp('image') / 'scene.png'
    cv2.imwrite(str(path), rgb[..., ::-1])
    return rgb, str(path)


@pytest.fixture(scope='module')
def det_checkpoint(tmp_path_factory):
    return _demo_checkpoint(DET, tmp_path_factory.mktemp('det') / 'det.pth', lambda m: None)


@pytest.fixture(scope='module')
def seg_checkpoint(tmp_path_factory):
    def always_square(model):
        for head in (model.decode_head, model.auxiliary_head):
            torch.nn.init.zeros_(head.conv_seg.weight)
            bias = torch.zeros(head.conv_seg.out_channels)
            bias[SQUARE] = 10
            head.conv_seg.bias.data = bias

    return _demo_checkpoint(SEG, tmp_path_factory.mktemp('seg') / 'seg.pth', always_square)


def _same_weights(model, checkpoint):
    saved = torch.load(checkpoint, weights_only=True)['state_dict']
    state = model.state_dict()
    return saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in saved)


def _init_exactly(init, config, checkpoint_and_meta):
    """``init(config, checkpoint)`` (mmdet's init_detector / mmseg's init_model), checked to hold
    the checkpoint's weights and classes."""
    checkpoint, meta = checkpoint_and_meta
    model = init(config, checkpoint, device='cpu')
    assert _same_weights(model, checkpoint)
    assert list(model.dataset_meta['classes']) == list(meta['classes'])
    return model


@pytest.mark.slow  # Cascade Mask R-CNN built twice: 10-25 s
def test_init_detector_and_inference_detector(det_checkpoint, image):
    from mmdet.apis import inference_detector, init_detector
    model = _init_exactly(init_detector, DET, det_checkpoint)
    rgb, path = image
    for result in (inference_detector(model, path), inference_detector(model, rgb[..., ::-1])):
        pred = result.pred_instances
        n = len(pred)
        assert 0 < n <= 20  # test_cfg.rcnn.max_per_img of the demo config
        assert pred.bboxes.shape == (n, 4) and pred.scores.shape == (n, )
        assert ((pred.labels >= 0) & (pred.labels < 3)).all()
        assert pred.masks.shape == (n, 96, 96)
        assert (pred.bboxes[:, 2:] <= 96 + 1e-3).all() and (pred.bboxes >= -1e-3).all()


@pytest.mark.slow
def test_det_inferencer_agrees_with_inference_detector(det_checkpoint, image):
    from mmdet.apis import DetInferencer, inference_detector, init_detector
    checkpoint, _ = det_checkpoint
    rgb, path = image
    inferencer = DetInferencer(model=DET, weights=checkpoint, device='cpu', show_progress=False)
    out = inferencer(path, return_datasamples=True)['predictions'][0].pred_instances
    reference = inference_detector(init_detector(DET, checkpoint, device='cpu'),
                                   path).pred_instances
    assert len(out) == len(reference) > 0
    torch.testing.assert_close(out.bboxes, reference.bboxes, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out.scores, reference.scores, rtol=1e-4, atol=1e-5)
    assert torch.equal(out.labels, reference.labels)


def test_init_model_and_inference_model(seg_checkpoint, image):
    from mmseg.apis import inference_model, init_model
    model = _init_exactly(init_model, SEG, seg_checkpoint)
    rgb, path = image
    for source in (path, rgb[..., ::-1].copy()):
        pred = inference_model(model, source).pred_sem_seg.data
        assert pred.shape == (1, 96, 96)
        assert (pred == SQUARE).all()


def test_mmseg_inferencer(seg_checkpoint, image, tmp_path):
    from mmseg.apis import MMSegInferencer
    checkpoint, _ = seg_checkpoint
    _, path = image
    inferencer = MMSegInferencer(model=SEG, weights=checkpoint, device='cpu')
    out = inferencer(path, out_dir=str(tmp_path), show=False)
    assert out['predictions'].shape == (96, 96)
    assert (out['predictions'] == SQUARE).all()
    assert (tmp_path / 'vis').is_dir() and list((tmp_path / 'vis').iterdir())


def test_prepare_for_inference_keeps_the_segmentors_numbers(image):
    """prepare_for_inference (what tools/test.py, benchmark.py and image_demo.py do once) folds
    BatchNorm and makes the class logits channels-last: the logits and the prediction stay."""
    import copy

    from mmseg.apis import inference_model, init_model

    from mmmv.engine import prepare_for_inference
    torch.manual_seed(0)
    model = init_model(SEG, None, device='cpu')  # random weights: every pixel's logits differ
    _, path = image
    before = inference_model(model, path)
    after = inference_model(prepare_for_inference(copy.deepcopy(model)), path)
    logits = after.seg_logits.data
    assert logits.stride(0) == 1 and before.seg_logits.data.stride(0) != 1  # classes innermost
    torch.testing.assert_close(logits, before.seg_logits.data, rtol=1e-5, atol=1e-5)
    top2 = logits.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4  # pixels whose winner no rounding can change
    assert clear.float().mean() > 0.9
    assert torch.equal(after.pred_sem_seg.data[0][clear], before.pred_sem_seg.data[0][clear])
