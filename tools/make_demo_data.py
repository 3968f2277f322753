#!/usr/bin/env python
"""Generate a tiny synthetic dataset for the CPU demo configs, deterministically from a seed.

Each image shows 1-3 filled shapes (circle, square, triangle: three classes) in random shades,
sizes, positions and rotations on a noisy grey background. By default each class has its own hue
family (circles reddish, squares greenish, triangles bluish, each +-50 degrees of hue, random
saturation and brightness): a model trained from scratch for a few hundred CPU iterations then
learns the classes, while with ``colours='random'`` (any hue; only the shape tells the class)
it does not (a UperNet demo stayed at chance after 300 iterations). Shapes may overlap; later
shapes hide earlier ones, and every annotation describes the *visible* part. Placements that
would leave a shape mostly hidden, split into pieces too small to outline, or with a hole (which
a COCO polygon cannot describe) are re-drawn, so the polygons, boxes and label maps all agree.

Besides ``train`` and ``val`` a second validation split, ``val_random``, shows the very same
scenes as ``val`` (same shapes, places, shades of grey, noise and labels) with every shape's hue
drawn independently of its class: evaluated on both, a model tells how much it learned about
shape rather than colour.

The scenes are written in two layouts under the output root (default ``data/demo``)::

    coco/train/000000.png ...              lossless PNG images
    coco/val/000000.png ...
    coco/val_random/000000.png ...
    coco/annotations/instances_train.json  polygons (cv2.findContours; decode to the exact masks),
                                           bbox xywh, area (pixels), iscrowd 0
    coco/annotations/instances_val.json    categories 1 circle, 2 square, 3 triangle
    coco/annotations/instances_val_random.json
    ade/images/training/000000.jpg ...     ADE20K's folder layout (mmseg's BaseSegDataset)
    ade/images/validation/...
    ade/images/validation_random/...
    ade/annotations/training/000000.png    uint8 label maps: 0 background, 1 circle, 2 square,
    ade/annotations/validation/...         3 triangle; background is a class like the others
    ade/annotations/validation_random/...  (load with reduce_zero_label=False, as for VOC)
    meta.json                              generator version and parameters

Image ``i`` of a split is drawn from its own random stream ``(seed, split, i)``: train and val come
from different streams (no copies), and an image does not depend on how many others are made.
The output appears atomically (written to a temporary folder next to it, then renamed); a run
whose ``meta.json`` matches the requested parameters does nothing unless ``force`` is set.

CLI:  python tools/make_demo_data.py [--out data/demo] [--seed 0] [--num-train 200]
                                     [--num-val 50] [--size 192] [--colours class|random] [--force]
API:  from make_demo_data import make_demo_data; make_demo_data('data/demo', seed=0, ...)
"""
import argparse
import json
import os
import os.path as osp
import shutil
import tempfile

import cv2
import numpy as np

GENERATOR_VERSION = 3
CLASSES = ('circle', 'square', 'triangle')
PALETTE = ((220, 20, 60), (0, 128, 255), (60, 180, 75))
CLASS_HUES = (0., 120., 240.)   # degrees; see _random_colour
COLOUR_MODES = ('class', 'random')
MIN_SIZE = 32   # image side in pixels: the smallest input MambaVision takes
GENERATOR = 'mmmv.tools.make_demo_data'  # meta.json's mark of a folder this tool wrote
# (COCO folder, ADE folder, random stream, colours: None = as asked). val_random reuses val's
# stream: both hue draws take one number from it, so everything else comes out the same.
SPLITS = (('train', 'training', 0, None), ('val', 'validation', 1, None),
          ('val_random', 'validation_random', 1, 'random'))

MAX_SHAPES = 3
MIN_VISIBLE_FRACTION = 0.4   # of the shape's full area
MIN_PIECE_PIXELS = 16        # every visible connected piece must be at least this big
MAX_TRIES = 50               # placements tried per shape before giving up on it
JPEG_QUALITY = 95


# --------------------------------------------------------------------------------- scenes
def _shape_polygon(rng, kind, size):
    """Random placement of shape `kind` (0 circle, 1 square, 2 triangle).

    Returns ('circle', (cx, cy, r)) or ('poly', int32 points (N, 2)), fully inside the image, or
    None when the draw fell outside (the caller draws again).
    """
    # "radius" of a circle of equal area; sizes span small to large objects.
    r = rng.uniform(0.07, 0.22) * size
    cx, cy = rng.uniform(0, size, 2)
    theta = rng.uniform(0, 2 * np.pi)
    if kind == 0:
        pts = None
        ext = r
    elif kind == 1:
        half = r * np.sqrt(np.pi) / 2           # same area as the circle
        ang = theta + np.pi / 4 + np.arange(4) * np.pi / 2
        radius = half * np.sqrt(2)
        pts = np.stack([cx + radius * np.cos(ang), cy + radius * np.sin(ang)], 1)
    else:
        circ = r * 1.3                           # circumradius of an equilateral triangle
        ang = theta + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([cx + circ * np.cos(ang), cy + circ * np.sin(ang)], 1)
    if pts is None:
        if cx - ext < 1 or cy - ext < 1 or cx + ext > size - 2 or cy + ext > size - 2:
            return None
        return 'circle', (int(round(cx)), int(round(cy)), int(round(r)))
    pts = np.round(pts).astype(np.int32)
    if pts.min() < 1 or pts.max() > size - 2:
        return None
    return 'poly', pts


def _rasterise(shape, size):
    mask = np.zeros((size, size), np.uint8)
    kind, geom = shape
    if kind == 'circle':
        cv2.circle(mask, geom[:2], geom[2], 1, thickness=-1, lineType=cv2.LINE_8)
    else:
        cv2.fillPoly(mask, [geom], 1, lineType=cv2.LINE_8)
    return mask.astype(bool)


def _outline(mask):
    """COCO polygons (flat [x0, y0, x1, y1, ...] lists) of the outer contours of a boolean mask.

    pycocotools rasterises a polygon so that pixel i covers [i, i + 1). A contour traced through
    the centres of the boundary pixels (cv2.findContours on the mask itself) therefore loses about
    half a pixel around the shape and whole sharp tips. Tracing the mask upsampled 2x and halving
    the coordinates puts the vertices at i (left/top edges) and i + 0.5 (right/bottom edges), which
    pycocotools decodes back to exactly the original mask.
    """
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = c.reshape(-1, 2)
        if len(c) >= 3 and cv2.contourArea(c) > 0:
            polys.append([v / 2 for v in c.reshape(-1).tolist()])
    return polys


def _visible_ok(mask, full_area):
    """A visible mask is usable when big enough, every piece outlines well and it has no holes."""
    area = int(mask.sum())
    if area < MIN_VISIBLE_FRACTION * full_area:
        return False
    m8 = mask.astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
    if n > 1 and stats[1:, cv2.CC_STAT_AREA].min() < MIN_PIECE_PIXELS:
        return False
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(m8)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    return int(filled.sum()) == area    # filling the outer contours adds nothing: no holes


def _random_colour(rng, kind, colours):
    """A saturated colour (HSV with s, v well above grey) as uint8 RGB.

    colours='random': any hue. colours='class': a hue within +-50 degrees of the class's own
    (circle red 0, square green 120, triangle blue 240), so colour hints at the class.
    """
    if colours == 'class':
        hue = (CLASS_HUES[kind] + rng.uniform(-50, 50)) % 360
    else:
        hue = rng.uniform(0, 360)
    sat = rng.uniform(0.45, 1.0)
    val = rng.uniform(0.45, 1.0)
    rgb = cv2.cvtColor(np.array([[[hue, sat, val]]], np.float32), cv2.COLOR_HSV2RGB)
    return np.clip(np.round(rgb[0, 0] * 255), 0, 255).astype(np.uint8)


def make_scene(rng, size, colours='class'):
    """Draw one scene.

    Returns (RGB uint8 image, label map uint8, list of (class_idx, visible mask)).
    """
    target = int(rng.integers(1, MAX_SHAPES + 1))
    shapes = []                                  # (class_idx, full mask), bottom to top
    for _ in range(target):
        kind = int(rng.integers(0, len(CLASSES)))
        for _ in range(MAX_TRIES):
            shape = _shape_polygon(rng, kind, size)
            if shape is None:
                continue
            full = _rasterise(shape, size)
            cand = shapes + [(kind, full)]
            if all(_visible_ok(v, f.sum()) for (_, f), v in zip(cand, _visible_masks(cand))):
                shapes = cand
                break
    visible = _visible_masks(shapes)

    # Background: grey level with a gentle gradient; then colours; then noise over everything.
    grey = rng.uniform(80, 175)
    gy, gx = rng.uniform(-20, 20, 2)
    ramp = (np.arange(size) / size - 0.5)
    img = grey + gy * ramp[:, None] + gx * ramp[None, :]
    img = np.repeat(img[..., None], 3, axis=2)
    label = np.zeros((size, size), np.uint8)
    for (kind, full), vis in zip(shapes, visible):
        img[full] = _random_colour(rng, kind, colours)
        label[vis] = kind + 1
    img = img + rng.normal(0, 10, img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return img, label, [(k, v) for (k, _), v in zip(shapes, visible)]


def _visible_masks(shapes):
    """Visible part of each shape: its mask minus the union of all shapes drawn after it."""
    out = []
    above = None
    for _, full in reversed(shapes):
        out.append(full if above is None else full & ~above)
        above = full.copy() if above is None else above | full
    return out[::-1]


# --------------------------------------------------------------------------------- writing
def _coco_annotation(mask, class_idx, image_id, ann_id):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return dict(
        id=ann_id, image_id=image_id, category_id=class_idx + 1,
        segmentation=_outline(mask),
        bbox=[x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
        area=int(mask.sum()), iscrowd=0)


def _write_split(root, coco_split, ade_split, stream, seed, num, size, colours):
    coco_dir = osp.join(root, 'coco', coco_split)
    ade_img_dir = osp.join(root, 'ade', 'images', ade_split)
    ade_ann_dir = osp.join(root, 'ade', 'annotations', ade_split)
    for d in (coco_dir, ade_img_dir, ade_ann_dir):
        os.makedirs(d, exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        rng = np.random.default_rng([seed, stream, i])
        img, label, instances = make_scene(rng, size, colours)
        name = f'{i:06d}'
        bgr = img[..., ::-1]
        cv2.imwrite(osp.join(coco_dir, name + '.png'), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        cv2.imwrite(osp.join(ade_img_dir, name + '.jpg'), bgr,
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        cv2.imwrite(osp.join(ade_ann_dir, name + '.png'), label, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        image_id = i + 1
        images.append(dict(id=image_id, file_name=name + '.png', height=size, width=size))
        for class_idx, mask in instances:
            annotations.append(_coco_annotation(mask, class_idx, image_id, len(annotations) + 1))
    coco = dict(
        info=dict(description=f'mmmv synthetic shapes demo ({coco_split})',
                  version=str(GENERATOR_VERSION)),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=k + 1, name=n, supercategory='shape') for k, n in enumerate(CLASSES)])
    ann_dir = osp.join(root, 'coco', 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    with open(osp.join(ann_dir, f'instances_{coco_split}.json'), 'w') as f:
        json.dump(coco, f)
    return len(images), len(annotations)


def _meta(seed, num_train, num_val, size, colours):
    return dict(generator=GENERATOR, version=GENERATOR_VERSION, seed=int(seed),
                num_train=int(num_train), num_val=int(num_val), size=int(size), colours=colours,
                classes=list(CLASSES))


def _holds_demo_data(folder) -> bool:
    try:
        with open(osp.join(folder, 'meta.json')) as f:
            return json.load(f).get('generator') == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def bad_argument(out_dir, num_train, num_val, size, colours):
    """``(parameter, value, why)`` for the first argument of :func:`make_demo_data` that cannot
    work, or None. An existing ``out_dir`` is replaced, so it must be an empty folder or one this
    tool wrote."""
    for name, value, minimum in (('num_train', num_train, 1), ('num_val', num_val, 1),
                                 ('size', size, MIN_SIZE)):
        if value < minimum:
            return name, value, f'must be at least {minimum}'
    if colours not in COLOUR_MODES:
        return 'colours', colours, f'must be one of {", ".join(COLOUR_MODES)}'
    if osp.lexists(out_dir) and not osp.isdir(out_dir):
        return 'out_dir', out_dir, 'is a file, not a folder; give a new folder'
    if osp.isdir(out_dir) and os.listdir(out_dir) and not _holds_demo_data(out_dir):
        return ('out_dir', out_dir, 'is a folder with files this tool did not write (no meta.json '
                'of make_demo_data), which it would replace; give a new or empty folder')
    return None


def make_demo_data(out_dir='data/demo', seed=0, num_train=200, num_val=50, size=192,
                   colours='class', force=False, verbose=True):
    """Write the demo dataset into `out_dir` (see the module docstring). Returns a summary dict.

    Does nothing (summary has skipped=True) if `out_dir/meta.json` records the same parameters,
    unless `force`. Anything else at `out_dir` is replaced only once the new data is complete.
    """
    bad = bad_argument(out_dir, num_train, num_val, size, colours)
    if bad is not None:
        raise ValueError(f"make_demo_data: {bad[0]}={bad[1]!r} {bad[2]}")
    out_dir = osp.abspath(out_dir)
    meta = _meta(seed, num_train, num_val, size, colours)
    meta_path = osp.join(out_dir, 'meta.json')
    if not force and osp.isfile(meta_path):
        try:
            with open(meta_path) as f:
                if json.load(f) == meta:
                    if verbose:
                        print(f'make_demo_data: {out_dir} is up to date (seed {seed}); '
                              'nothing to do')
                    return dict(meta, out_dir=out_dir, skipped=True)
        except (OSError, ValueError):
            pass

    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.' + osp.basename(out_dir) + '.tmp-', dir=parent)
    counts = {}
    try:
        for coco_split, ade_split, stream, split_colours in SPLITS:
            num = num_train if coco_split == 'train' else num_val
            counts[coco_split] = _write_split(tmp, coco_split, ade_split, stream, seed, num, size,
                                              split_colours or colours)
        with open(osp.join(tmp, 'meta.json'), 'w') as f:
            json.dump(meta, f, indent=2)
        if osp.lexists(out_dir):
            old = tempfile.mkdtemp(prefix='.' + osp.basename(out_dir) + '.old-', dir=parent)
            os.rename(out_dir, osp.join(old, 'data'))
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        for split, (n_img, n_ann) in counts.items():
            print(f'make_demo_data: {split}: {n_img} images, {n_ann} instances ({size}x{size})')
        print(f'make_demo_data: wrote {out_dir}/coco '
              '(train, val, val_random, annotations/instances_{train,val,val_random}.json)')
        print(f'make_demo_data: wrote {out_dir}/ade '
              '(images|annotations/{training,validation,validation_random})')
    return dict(meta, out_dir=out_dir, skipped=False,
                num_instances={k: v[1] for k, v in counts.items()})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Generate the synthetic shapes demo dataset '
                                            '(COCO instances + ADE20K-layout semantic maps).')
    p.add_argument('--out', default='data/demo', help='output root (default: data/demo)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default: 0)')
    p.add_argument('--num-train', type=int, default=200, help='training images (default: 200)')
    p.add_argument('--num-val', type=int, default=50,
                   help='images of each validation split, val and val_random (default: 50)')
    p.add_argument('--size', type=int, default=192, help='image side in pixels (default: 192)')
    p.add_argument('--colours', choices=COLOUR_MODES, default='class',
                   help="'class' (default): each class has its own hue family, shades random; "
                        "'random': any hue, so only the shape tells the class (much harder to "
                        "learn from scratch); for train and val: val_random is always 'random'")
    p.add_argument('--force', action='store_true', help='regenerate even if up to date')
    args = p.parse_args(argv)
    bad = bad_argument(args.out, args.num_train, args.num_val, args.size, args.colours)
    if bad is not None:
        name, value, why = bad
        flag = '--out' if name == 'out_dir' else '--' + name.replace('_', '-')
        p.error(f"{flag} '{value}': {why}")  # exit status 2, as for argparse's own checks
    return args


def main(argv=None):
    args = parse_args(argv)
    make_demo_data(args.out, seed=args.seed, num_train=args.num_train, num_val=args.num_val,
                   size=args.size, colours=args.colours, force=args.force)


if __name__ == '__main__':
    main()
