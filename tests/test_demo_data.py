"""Tests for tools/make_demo_data.py: determinism, splits, and annotation consistency."""
import filecmp
import importlib.util
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest

pycocotools = pytest.importorskip('pycocotools')
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
_spec = importlib.util.spec_from_file_location('make_demo_data',
                                               osp.join(ROOT, 'tools', 'make_demo_data.py'))
mdd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mdd)

SMALL = dict(num_train=6, num_val=4, size=96)

# pycocotools' mask decoding trips a numpy 2 deprecation warning on every call
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')


def _make(path, **kw):
    args = dict(SMALL, seed=0, verbose=False)
    args.update(kw)
    return mdd.make_demo_data(str(path), **args)


def _all_files(root):
    out = []
    for d, _, files in os.walk(root):
        out += [osp.relpath(osp.join(d, f), root) for f in files]
    return sorted(out)


def _load(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo') / 'demo'
    _make(out)
    return out


def test_layout(demo):
    files = _all_files(demo)
    assert 'meta.json' in files
    for split, ade_split, n in (('train', 'training', 6), ('val', 'validation', 4)):
        assert f'coco/annotations/instances_{split}.json' in files
        assert len([f for f in files if f.startswith(f'coco/{split}/') and f.endswith('.png')]) == n
        assert len([f for f in files
                    if f.startswith(f'ade/images/{ade_split}/') and f.endswith('.jpg')]) == n
        assert len([f for f in files if f.startswith(f'ade/annotations/{ade_split}/')
                    and f.endswith('.png')]) == n
    # nothing left over from the atomic write
    assert not [p for p in os.listdir(demo.parent) if p.startswith('.')]


def test_deterministic(demo, tmp_path):
    other = tmp_path / 'again'
    _make(other)
    files = _all_files(demo)
    assert files == _all_files(other)
    match, mismatch, errors = filecmp.cmpfiles(demo, other, files, shallow=False)
    assert not mismatch and not errors


def test_seed_changes_data(demo, tmp_path):
    other = tmp_path / 'seed1'
    _make(other, seed=1)
    a = _load(demo / 'coco/annotations/instances_train.json')['annotations']
    b = _load(other / 'coco/annotations/instances_train.json')['annotations']
    assert a != b
    img_a = cv2.imread(str(demo / 'coco/train/000000.png'))
    img_b = cv2.imread(str(other / 'coco/train/000000.png'))
    assert not np.array_equal(img_a, img_b)


def test_val_differs_from_train(demo):
    train = [cv2.imread(str(p)) for p in sorted((demo / 'coco/train').iterdir())]
    val = [cv2.imread(str(p)) for p in sorted((demo / 'coco/val').iterdir())]
    for v in val:
        for t in train:
            assert not np.array_equal(v, t)
    lab_t, lab_v = ([cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                     for p in sorted((demo / f'ade/annotations/{split}').iterdir())]
                    for split in ('training', 'validation'))
    for v in lab_v:
        for t in lab_t:
            assert not np.array_equal(v, t)


def test_image_independent_of_count(demo, tmp_path):
    # image i comes from its own stream: asking for more images keeps the first ones unchanged
    other = tmp_path / 'more'
    _make(other, num_train=8)
    assert filecmp.cmp(demo / 'coco/train/000003.png', other / 'coco/train/000003.png',
                       shallow=False)
    assert filecmp.cmp(demo / 'coco/val/000001.png', other / 'coco/val/000001.png', shallow=False)


@pytest.mark.parametrize('split,ade_split', [('train', 'training'), ('val', 'validation')])
def test_coco_consistent(demo, split, ade_split):
    coco = COCO(str(demo / f'coco/annotations/instances_{split}.json'))
    cats = coco.loadCats(coco.getCatIds())
    assert [(c['id'], c['name']) for c in cats] == [(1, 'circle'), (2, 'square'), (3, 'triangle')]
    size = SMALL['size']
    for img_info in coco.loadImgs(coco.getImgIds()):
        img = cv2.imread(str(demo / f'coco/{split}' / img_info['file_name']))
        assert img.shape == (size, size, 3) == (img_info['height'], img_info['width'], 3)
        label = cv2.imread(str(demo / f'ade/annotations/{ade_split}' / img_info['file_name']),
                           cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and label.shape == (size, size)
        assert set(np.unique(label).tolist()) <= {0, 1, 2, 3}
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_info['id']))
        assert 1 <= len(anns) <= 3
        rebuilt = np.zeros((size, size), np.uint8)
        for ann in anns:
            assert ann['iscrowd'] == 0
            assert ann['category_id'] in (1, 2, 3)
            assert isinstance(ann['segmentation'], list) and ann['segmentation']
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])
            m = coco.annToMask(ann).astype(bool)
            # the polygons decode to exactly the visible mask: same area, same tight box
            assert m.sum() == ann['area'] > 0
            x, y, w, h = ann['bbox']
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            assert mask_utils.toBbox(rle).tolist() == [x, y, w, h]
            # the bbox contains every polygon vertex
            pts = np.concatenate([np.array(p).reshape(-1, 2) for p in ann['segmentation']])
            assert pts[:, 0].min() >= x and pts[:, 0].max() <= x + w
            assert pts[:, 1].min() >= y and pts[:, 1].max() <= y + h
            # visible parts of different instances do not overlap
            assert not rebuilt[m].any()
            rebuilt[m] = ann['category_id']
        # the semantic label map is exactly the union of the instances, coloured by class
        assert np.array_equal(rebuilt, label)
        # the shapes are visible in the picture: saturated colours on a grey background
        sat = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[..., 1].astype(float)
        assert sat[label > 0].mean() > sat[label == 0].mean() + 40
        # the ADE image shows the same scene (JPEG, so only nearly the same pixels)
        jpg_name = img_info['file_name'].replace('.png', '.jpg')
        jpg = cv2.imread(str(demo / f'ade/images/{ade_split}' / jpg_name))
        assert np.abs(jpg.astype(float) - img).mean() < 8


def _instance_hues(root):
    """Mean hue (degrees) of the visible pixels of every instance, with its class id."""
    out = []
    for split in ('train', 'val'):
        coco = COCO(str(root / f'coco/annotations/instances_{split}.json'))
        for img_info in coco.loadImgs(coco.getImgIds()):
            img = cv2.imread(str(root / f'coco/{split}' / img_info['file_name']))
            hsv = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_BGR2HSV)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_info['id'])):
                hue = np.deg2rad(hsv[..., 0][coco.annToMask(ann) > 0])
                mean = np.rad2deg(np.arctan2(np.sin(hue).mean(), np.cos(hue).mean())) % 360
                out.append((ann['category_id'], mean))
    return out


def test_colour_modes(demo, tmp_path):
    # default 'class': every instance's hue lies in its class's family (centre +-50 degrees,
    # a little more for the pixel noise)
    for cat, hue in _instance_hues(demo):
        centre = mdd.CLASS_HUES[cat - 1]
        assert abs((hue - centre + 180) % 360 - 180) < 60, (cat, hue)
    # 'random': same layout rules, any hue; recorded in meta.json
    other = tmp_path / 'random'
    _make(other, colours='random', num_train=20, num_val=2)
    assert _load(other / 'meta.json')['colours'] == 'random'
    off = [abs((hue - mdd.CLASS_HUES[cat - 1] + 180) % 360 - 180)
           for cat, hue in _instance_hues(other)]
    assert max(off) > 60
    with pytest.raises(ValueError):
        _make(tmp_path / 'bad', colours='pastel')


def test_skip_and_force(tmp_path, capsys):
    out = tmp_path / 'd'
    first = _make(out, num_train=2, num_val=1)
    assert not first['skipped']
    stamp = os.stat(out / 'coco/train/000000.png').st_mtime_ns
    again = _make(out, num_train=2, num_val=1)
    assert again['skipped']
    assert os.stat(out / 'coco/train/000000.png').st_mtime_ns == stamp
    # different parameters replace the data
    changed = _make(out, num_train=3, num_val=1)
    assert not changed['skipped'] and (out / 'coco/train/000002.png').exists()
    assert _load(out / 'meta.json')['num_train'] == 3
    forced = _make(out, num_train=3, num_val=1, force=True)
    assert not forced['skipped']
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.')]
    # CLI
    mdd.main(['--out', str(out), '--num-train', '3', '--num-val', '1', '--size', '96'])
    assert 'up to date' in capsys.readouterr().out


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / 'd'

    def boom(*a, **k):
        raise RuntimeError('interrupted')

    monkeypatch.setattr(mdd, '_coco_annotation', boom)
    with pytest.raises(RuntimeError):
        _make(out, num_train=2, num_val=1)
    assert os.listdir(tmp_path) == []
