"""The demo's configs, pictures, contact sheets and report (tools/demo.py, mmmv.demo_report,
mmmv.visualization) on tiny demo data; the whole `make demo` run is in test_e2e.py (slow)."""
import importlib.util
import os.path as osp
import pickle

import cv2
import numpy as np
import pytest
import torch

from mmmv.visualization import GAP, PAPER, contact_sheet, draw_instances, draw_label_map, pair

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEG = osp.join(ROOT, 'configs', 'seg', 'demo_upernet_mambavision_t.py')
DET = osp.join(ROOT, 'configs', 'det', 'demo_cascade_mambavision_t.py')
_spec = importlib.util.spec_from_file_location('make_demo_data',
                                               osp.join(ROOT, 'tools', 'make_demo_data.py'))
mdd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mdd)

pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo') / 'data' / 'demo'
    mdd.make_demo_data(str(out), num_train=4, num_val=3, size=64, verbose=False)
    return out


def _config(path):
    from mmengine.config import Config
    return Config.fromfile(path)


# ------------------------------------------------------------------------------ seg config
def test_seg_demo_config_trains_and_scores_background_as_a_class():
    cfg = _config(SEG)
    assert cfg.metainfo.classes[0] == 'background' and len(cfg.metainfo.classes) == 4
    assert len(cfg.metainfo.palette) == 4
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        assert head.num_classes == 4
        assert head.get('ignore_index', 255) == 255
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.reduce_zero_label is False
        for step in loader.dataset.pipeline:
            if step.type == 'LoadAnnotations':  # None: the dataset's setting
                assert step.get('reduce_zero_label') in (None, False)
    assert cfg.test_evaluator.get('ignore_index', 255) == 255


@pytest.mark.parametrize('loader', ['train_dataloader', 'test_dataloader'])
def test_seg_demo_pipelines_keep_label_zero(demo_data, monkeypatch, loader):
    """The label maps' 0 (background) reaches the model as class 0, not as ignored 255."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    monkeypatch.chdir(demo_data.parent.parent)
    init_default_scope('mmseg')
    cfg = _config(SEG)
    dataset = DATASETS.build(cfg[loader].dataset)
    folder = 'training' if loader == 'train_dataloader' else 'validation'
    for index in range(2):
        sample = dataset[index]
        label = cv2.imread(str(demo_data / 'ade' / 'annotations' / folder /
                               osp.basename(sample['data_samples'].seg_map_path)),
                           cv2.IMREAD_UNCHANGED)
        gt = sample['data_samples'].gt_sem_seg.data[0].numpy()
        assert (label == 0).any() and 255 not in np.unique(gt)
        if loader == 'test_dataloader':  # the test pipeline does not resize the labels
            assert np.array_equal(gt, label)
        else:                            # resized and maybe flipped: the same share of classes
            for k in range(4):
                assert abs((gt == k).mean() - (label == k).mean()) < 0.02


def test_val_random_is_val_with_other_hues(demo_data):
    for name in ('000000', '000001', '000002'):
        ann = [cv2.imread(str(demo_data / 'ade' / 'annotations' / folder / f'{name}.png'),
                          cv2.IMREAD_UNCHANGED) for folder in ('validation', 'validation_random')]
        assert np.array_equal(*ann)
        images = [cv2.imread(str(demo_data / 'coco' / folder / f'{name}.png'))
                  for folder in ('val', 'val_random')]
        assert np.array_equal(images[0][ann[0] == 0], images[1][ann[0] == 0])  # background
        assert not np.array_equal(images[0][ann[0] > 0], images[1][ann[0] > 0])


# ------------------------------------------------------------------------------ drawing
def test_contact_sheet_grid():
    h, w, columns = 30, 50, 3
    cells = [np.full((h, w, 3), (10 * i, 200 - 10 * i, 7), np.uint8) for i in range(7)]
    sheet = contact_sheet(cells, columns, 'title', ['a', 'bb'], [(255, 0, 0), (0, 0, 255)])
    rows = 3
    header = sheet.shape[0] - (rows * (h + GAP) - GAP)
    assert header > 20  # title and legend
    assert sheet.shape == (header + rows * (h + GAP) - GAP, columns * (w + GAP) - GAP, 3)
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        y, x = header + r * (h + GAP), c * (w + GAP)
        assert np.array_equal(sheet[y:y + h, x:x + w], cell), i
    # the last row's two empty cells and the gaps are blank paper
    assert (sheet[header + 2 * (h + GAP):, w + GAP:] == PAPER).all()
    assert (sheet[header:, w:w + GAP] == PAPER).all()
    with pytest.raises(ValueError, match='columns'):
        contact_sheet(cells, 0, 't', ['a'], [(0, 0, 0)])


def test_label_map_blend_against_float64():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    labels = np.zeros((120, 160), np.int64)
    labels[10:60, 20:90] = 1
    labels[90:, :] = 255
    palette = [(0, 0, 0), (220, 20, 60)]
    panel = draw_label_map(image, labels, ['background', 'circle'], palette, scale=2, alpha=0.4)
    expected = np.empty((240, 320, 3))
    for y in range(240):
        for x in range(320):
            pixel = image[y // 2, x // 2].astype(np.float64)
            label = labels[y // 2, x // 2]
            expected[y, x] = pixel if label == 255 else 0.6 * pixel + 0.4 * np.array(
                palette[label], np.float64)
    close = (np.abs(panel - expected) <= 0.5 + 1e-9).all(axis=2)
    assert close.mean() > 0.95  # the rest: the two class names written on the regions
    assert close[180:].all()    # ignored pixels keep the image, and nothing is written there
    assert not close.all()


def test_pair_layout():
    a, b = np.zeros((20, 30, 3), np.uint8), np.full((20, 30, 3), 9, np.uint8)
    picture = pair(a, b, 'x')
    assert picture.shape[1] == 2 * 30 + GAP
    top = picture.shape[0] - 20
    assert np.array_equal(picture[top:, :30], a) and np.array_equal(picture[top:, 30 + GAP:], b)


# ------------------------------------------------------------------------------ report
def _demo_metainfo(path):
    meta = _config(path).metainfo
    return dict(classes=meta.classes, palette=meta.palette)


def test_seg_pictures_and_scores_against_a_plain_count(demo_data, tmp_path):
    """Predictions: the truth with one image's left half called 'square'; the per-class IoU and
    background recall match a float64 count, every image gets a picture, the sheet its grid."""
    from mmmv.demo_report import draw_and_score
    predictions = tmp_path / 'pred'
    predictions.mkdir()
    folder = demo_data / 'ade' / 'annotations' / 'validation'
    truths, preds = [], []
    for i, name in enumerate(sorted(p.name for p in folder.iterdir())):
        truth = cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)
        pred = truth.copy()
        if i == 1:
            pred[:, :32] = 2
        cv2.imwrite(str(predictions / name), pred)
        truths.append(truth)
        preds.append(pred)
    found = draw_and_score('seg', _demo_metainfo(SEG), str(demo_data), ('val', 'validation'),
                           str(predictions), str(tmp_path / 'pictures'),
                           str(tmp_path / 'sheet.png'), 'title', 2, 2, 0.3)
    t, p = np.concatenate([x.ravel() for x in truths]), np.concatenate([x.ravel() for x in preds])
    for k in range(4):
        inter = float(np.sum((t == k) & (p == k), dtype=np.float64))
        union = float(np.sum((t == k) | (p == k), dtype=np.float64))
        assert found['IoU'][k] == pytest.approx(100 * inter / union, abs=0.006)
    assert found['Acc'][0] == pytest.approx(100 * np.mean(p[t == 0] == 0), abs=0.006)
    assert found['Acc'][0] < 100
    pictures = sorted((tmp_path / 'pictures').iterdir())
    assert [q.name for q in pictures] == ['000000.png', '000001.png', '000002.png']
    picture = cv2.imread(str(pictures[0]))
    assert picture.shape[1] == 2 * 128 + GAP  # 64-pixel images drawn at twice their size
    sheet = cv2.imread(str(tmp_path / 'sheet.png'))
    assert sheet.shape[1] == 2 * (2 * 64 + GAP) + GAP  # two cells per row, at the images' size


def test_det_pictures_from_a_dumped_pickle(demo_data, tmp_path):
    """A pickle in DumpDetResults' format (the ground truth as detections, RLE masks): every
    image gets a picture whose prediction panel equals its ground-truth panel but for the
    scores written on it; the sheet has the asked-for cells."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    from mmmv.demo_report import coco_instances, draw_and_score
    coco = COCO(str(demo_data / 'coco' / 'annotations' / 'instances_val.json'))
    samples = []
    for info in coco.loadImgs(coco.getImgIds()):
        gt = coco_instances(coco, info['id'], sorted(coco.getCatIds()))
        samples.append(dict(img_path=str(demo_data / 'coco' / 'val' / info['file_name']),
                            pred_instances=dict(
                                bboxes=torch.tensor([g['box'] for g in gt], dtype=torch.float32),
                                scores=torch.tensor([0.9] * len(gt)),
                                labels=torch.tensor([g['label'] for g in gt]),
                                masks=[mask_utils.encode(np.asfortranarray(g['mask'], np.uint8))
                                       for g in gt])))
    with open(tmp_path / 'pred.pkl', 'wb') as f:
        pickle.dump(samples, f)
    meta = _demo_metainfo(DET)
    found = draw_and_score('det', meta, str(demo_data), ('val', 'validation'),
                           str(tmp_path / 'pred.pkl'), str(tmp_path / 'pictures'),
                           str(tmp_path / 'sheet.png'), 'title', 3, 2, 0.3)
    assert found['num_pictures'] == 3
    picture = cv2.imread(str(tmp_path / 'pictures' / '000000.png'))[..., ::-1]
    predicted = picture[-128:, 128 + GAP:]
    image = cv2.imread(str(demo_data / 'coco' / 'val' / '000000.png'))[..., ::-1]
    gt = coco_instances(coco, 1, sorted(coco.getCatIds()))
    expected = draw_instances(image, [dict(g, score=0.9) for g in gt], meta['classes'],
                              meta['palette'], 2)
    assert np.array_equal(predicted, expected)
    assert not np.array_equal(picture[-128:, :128], expected)  # the truth has no scores
    sheet = cv2.imread(str(tmp_path / 'sheet.png'))
    assert sheet.shape[1] == 2 * (2 * 64 + GAP) + GAP


def test_report_names_every_class_and_split():
    from mmmv.demo_report import format_report
    classes = ['background', 'circle']
    split = dict(metrics=dict(mIoU=80.0, aAcc=95.0), IoU=[90.0, 70.0], Acc=[97.5, 80.0],
                 pictures='/p', num_pictures=3, sheet='/s.png')
    text = format_report({'seg': dict(name='UperNet', config='c.py', iterations=5,
                                      classes=classes, train_seconds=75.4,
                                      seconds_per_iteration=1.5,
                                      splits=dict(val=split, val_random=split))},
                         dict(val='as trained', val_random='any hue'))
    assert 'trained 5 iterations in 1 min 15 s (1.50 s per iteration)' in text
    assert 'background IoU' in text and 'circle IoU' in text
    assert 'background pixels predicted background (%)' in text and '97.50' in text
    assert 'val_random: any hue' in text and '/s.png' in text
