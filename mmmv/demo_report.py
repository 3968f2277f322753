"""What ``tools/demo.py`` shows: a test run's predictions drawn beside the ground truth, scored
per class, and the final table.

The predictions are those ``tools/test.py`` dumped: detections as mmdet's ``DumpDetResults``
pickle (boxes, scores, labels, RLE masks per image), segmentation as the label-map PNGs mmseg's
``IoUMetric(output_dir=...)`` writes. The ground truth is read from the demo data itself (COCO
json, label-map PNGs), so the pictures show what the metrics scored (detections from a score
threshold on; the metrics take all).
"""
import os
import os.path as osp
from typing import Dict, Iterator, List, Tuple

import cv2
import numpy as np

from .visualization import contact_sheet, draw_instances, draw_label_map, pair

PICTURE_SCALE = 2   # the per-image pictures: 192-pixel demo images drawn at 384
SHEET_SCALE = 1     # the contact sheet: many pictures at the images' own size


def _read_rgb(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image '{path}'")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _write_rgb(path: str, image: np.ndarray):
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write '{path}'")


# ---------------------------------------------------------------------------- detection
def coco_instances(coco, image_id: int, cat_ids: List[int]) -> List[Dict]:
    """The annotations of one image of a pycocotools ``COCO`` as :func:`draw_instances` dicts
    (``label`` = index of the category in ``cat_ids``)."""
    instances = []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        x, y, w, h = ann['bbox']
        instances.append(dict(label=cat_ids.index(ann['category_id']), box=(x, y, x + w, y + h),
                              mask=coco.annToMask(ann).astype(bool)))
    return instances


def dumped_instances(sample: Dict, score_thr: float) -> List[Dict]:
    """The detections of one ``DumpDetResults`` sample scoring at least ``score_thr``, highest
    score drawn last (on top)."""
    from pycocotools import mask as mask_utils
    pred = sample['pred_instances']
    scores = np.asarray(pred['scores'], np.float64)
    keep = [i for i in np.argsort(scores, kind='stable') if scores[i] >= score_thr]
    masks = pred.get('masks')
    return [dict(label=int(pred['labels'][i]), score=float(scores[i]),
                 box=tuple(float(v) for v in pred['bboxes'][i]),
                 mask=None if masks is None else mask_utils.decode(masks[i]).astype(bool))
            for i in keep]


def det_records(data_root: str, split: str, predictions: str, score_thr: float) -> Iterator:
    """(image name, RGB image, ground-truth instances, predicted instances) of every image of the
    COCO ``split`` under ``data_root``, in file-name order; ``predictions``: the test's pickle."""
    import mmengine
    from pycocotools.coco import COCO
    coco = COCO(osp.join(data_root, 'annotations', f'instances_{split}.json'))
    cat_ids = sorted(coco.getCatIds())
    by_name = {osp.basename(s['img_path']): s for s in mmengine.load(predictions)}
    for info in sorted(coco.loadImgs(coco.getImgIds()), key=lambda i: i['file_name']):
        name = info['file_name']
        yield (osp.splitext(name)[0], _read_rgb(osp.join(data_root, split, name)),
               coco_instances(coco, info['id'], cat_ids),
               dumped_instances(by_name[name], score_thr))


# ---------------------------------------------------------------------------- segmentation
def seg_records(data_root: str, folder: str, predictions: str) -> Iterator:
    """(image name, RGB image, ground-truth label map, predicted label map) of every image of
    the ADE-layout ``folder`` (e.g. 'validation') under ``data_root``, in file-name order;
    ``predictions``: the folder of predicted label-map PNGs."""
    names = sorted(n for n in os.listdir(osp.join(data_root, 'annotations', folder))
                   if n.endswith('.png'))
    for name in names:
        stem = osp.splitext(name)[0]
        predicted = cv2.imread(osp.join(predictions, name), cv2.IMREAD_UNCHANGED)
        if predicted is None:
            raise FileNotFoundError(f"no predicted label map '{osp.join(predictions, name)}'")
        yield (stem, _read_rgb(osp.join(data_root, 'images', folder, stem + '.jpg')),
               cv2.imread(osp.join(data_root, 'annotations', folder, name),
                          cv2.IMREAD_UNCHANGED), predicted)


def seg_scores(records, num_classes: int, ignore_index: int = 255) -> Dict[str, List[float]]:
    """Per-class 'IoU' and 'Acc' (the share of the class's pixels predicted as it), in percent,
    over all ``records`` of :func:`seg_records`, with mmseg's IoUMetric arithmetic."""
    import torch
    from mmseg.evaluation import IoUMetric
    totals = [0, 0, 0, 0]
    for _, _, truth, predicted in records:
        areas = IoUMetric.intersect_and_union(torch.from_numpy(predicted.astype(np.int64)),
                                              torch.from_numpy(truth.astype(np.int64)),
                                              num_classes, ignore_index)
        totals = [t + a for t, a in zip(totals, areas)]
    per_class = IoUMetric.total_area_to_metrics(*totals, metrics=['mIoU'])
    return {key: [round(float(v) * 100, 2) for v in per_class[key]] for key in ('IoU', 'Acc')}


# ---------------------------------------------------------------------------- both
def draw_and_score(task: str, metainfo, data_dir: str, split: Tuple[str, str], predictions: str,
                   pictures_dir: str, sheet_path: str, title: str, sheet_images: int,
                   columns: int, score_thr: float) -> Dict:
    """Draw every image of a ``split`` of the demo data in ``data_dir`` (its folder names in the
    COCO and the ADE layouts, e.g. ('val', 'validation')):
    one ground truth | prediction PNG per image into ``pictures_dir`` (at
    :data:`PICTURE_SCALE`), and a contact sheet of the first ``sheet_images`` (at
    :data:`SHEET_SCALE`, ``columns`` per row) to ``sheet_path``. Returns where the pictures are
    and, for segmentation, the per-class scores of :func:`seg_scores`."""
    classes, palette = metainfo['classes'], [tuple(c) for c in metainfo['palette']]
    if task == 'det':
        records = list(det_records(osp.join(data_dir, 'coco'), split[0], predictions,
                                   score_thr))
        draw, scores = draw_instances, {}
    else:
        records = list(seg_records(osp.join(data_dir, 'ade'), split[1], predictions))
        draw, scores = draw_label_map, seg_scores(records, len(classes))

    def picture(record, scale):
        name, image, truth, predicted = record
        return pair(draw(image, truth, classes, palette, scale),
                    draw(image, predicted, classes, palette, scale), name)

    for record in records:
        _write_rgb(osp.join(pictures_dir, record[0] + '.png'), picture(record, PICTURE_SCALE))
    cells = [picture(record, SHEET_SCALE) for record in records[:sheet_images]]
    _write_rgb(sheet_path, contact_sheet(cells, columns, title, classes, palette))
    return dict(scores, pictures=pictures_dir, num_pictures=len(records), sheet=sheet_path)


# ---------------------------------------------------------------------------- the table
def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f'{minutes} min {seconds:02d} s'


def _rows(task: str, classes, split_results: List[Dict]) -> List[Tuple[str, List]]:
    """(row title, one value per split) of one model's part of the table."""
    if task == 'det':
        rows = []
        for kind in ('bbox', 'segm'):
            rows.append((f'{kind} mAP',
                         [r['metrics'][f'{kind}/{kind}_mAP'] for r in split_results]))
            rows += [(f'  {name} AP', [r['metrics'][f'{kind}/{name}_precision']
                                       for r in split_results]) for name in classes]
        return rows
    rows = [('mIoU', [r['metrics']['mIoU'] for r in split_results])]
    rows += [(f'  {name} IoU', [r['IoU'][i] for r in split_results])
             for i, name in enumerate(classes)]
    rows.append((f'{classes[0]} pixels predicted {classes[0]} (%)',
                 [r['Acc'][0] for r in split_results]))
    rows.append(('aAcc', [r['metrics']['aAcc'] for r in split_results]))
    return rows


def format_report(results: Dict, split_titles: Dict[str, str]) -> str:
    """The demo's final table from ``results`` (task -> what tools/demo.py gathered) and
    ``split_titles`` (split -> what it shows)."""
    splits = list(split_titles)
    lines = ['==== demo results ====',
             '; '.join(f'{split}: {title}' for split, title in split_titles.items())]
    for task, result in results.items():
        per_iter = result.get('seconds_per_iteration')
        lines += ['', f"{result['name']} ({result['config']})",
                  f"  trained {result['iterations']} iterations in "
                  f"{_duration(result['train_seconds'])}" +
                  (f' ({per_iter:.2f} s per iteration)' if per_iter else ''),
                  f"  {'':<40}" + ''.join(f'{split:>12}' for split in splits)]
        split_results = [result['splits'][split] for split in splits]
        for title, values in _rows(task, result['classes'], split_results):
            lines.append(f'  {title:<40}' + ''.join(
                f'{v:>12.3f}' if task == 'det' else f'{v:>12.2f}' for v in values))
        for split in splits:
            found = result['splits'][split]
            lines.append(f"  {split} pictures: {found['pictures']} ({found['num_pictures']} "
                         f"PNGs, ground truth | prediction); contact sheet: {found['sheet']}")
    return '\n'.join(lines)
