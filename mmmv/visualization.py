"""Pictures that put a prediction beside its ground truth, and contact sheets of many of them.

``tools/demo.py`` draws one picture per validation image and one contact sheet per task with
these. Everything works on RGB uint8 arrays with OpenCV's primitives; images are enlarged by an
integer ``scale`` (nearest neighbour) before drawing, so that class names written at a fixed font
size stay readable on the demo's 192x192 images.

- :func:`draw_label_map` / :func:`draw_instances`: one panel (a segmentation label map, or
  detected / annotated instances) over its image;
- :func:`pair`: ground truth and prediction side by side, each titled;
- :func:`contact_sheet`: equal pictures in a grid under a header naming the classes in their
  colours.
"""
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_SCALE = 0.45            # OpenCV font scale: capitals about 10 pixels high
TITLE_SCALE = 0.7
GAP = 8                      # pixels between the panels of a pair and between grid cells
PAPER = (255, 255, 255)      # colour of margins and headers
INK = (0, 0, 0)
MIN_NAMED_PIXELS = 60        # label-map regions smaller than this (in image pixels) go unnamed


def _text_size(text: str, scale: float):
    (w, h), baseline = cv2.getTextSize(text, FONT, scale, 1)
    return w, h + baseline


def _contrasting_ink(colour) -> tuple:
    """Black on light colours, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = (float(c) for c in colour)
    return INK if 0.299 * r + 0.587 * g + 0.114 * b > 128 else PAPER


def put_label(canvas: np.ndarray, text: str, x: int, y: int, colour, scale=TEXT_SCALE):
    """Write ``text`` on a box filled with ``colour``, top-left corner at (x, y) moved inside the
    canvas as far as needed. Draws on ``canvas`` (H, W, 3) in place."""
    w, h = _text_size(text, scale)
    x = int(min(max(x, 0), max(canvas.shape[1] - w - 4, 0)))
    y = int(min(max(y, 0), max(canvas.shape[0] - h - 4, 0)))
    cv2.rectangle(canvas, (x, y), (x + w + 3, y + h + 3), tuple(int(c) for c in colour), -1)
    cv2.putText(canvas, text, (x + 2, y + h - 2), FONT, scale, _contrasting_ink(colour), 1,
                cv2.LINE_AA)


def _enlarge(array: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return array.copy()
    return cv2.resize(array, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def _check_scale(scale):
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f'scale must be a positive int, got {scale!r}')


def draw_label_map(image: np.ndarray, label_map: np.ndarray, classes: Sequence[str],
                   palette: Sequence[Sequence[int]], scale: int = 2, alpha: float = 0.5,
                   ignore_index: int = 255) -> np.ndarray:
    """Blend every pixel of ``image`` (H, W, 3) with the colour of its class in ``label_map``
    (H, W; ``ignore_index`` left as it is) and name each region of a class at its innermost
    point. Returns the panel, (scale * H, scale * W, 3) uint8."""
    _check_scale(scale)
    if label_map.shape != image.shape[:2]:
        raise ValueError(f'label_map shape {label_map.shape} differs from the image\'s '
                         f'{image.shape[:2]}')
    labels = _enlarge(label_map.astype(np.int32), scale)
    panel = _enlarge(image, scale).astype(np.float32)
    colours = np.asarray(palette, np.float32)
    known = labels != ignore_index
    panel[known] = (1 - alpha) * panel[known] + alpha * colours[labels[known]]
    panel = np.round(panel).astype(np.uint8)
    for label in np.unique(labels[known]):
        count, components = cv2.connectedComponents((labels == label).astype(np.uint8))
        for component in range(1, count):
            region = (components == component).astype(np.uint8)
            if region.sum() < MIN_NAMED_PIXELS * scale * scale:
                continue
            depth = cv2.distanceTransform(region, cv2.DIST_L2, 3)
            y, x = np.unravel_index(np.argmax(depth), depth.shape)
            w, h = _text_size(classes[label], TEXT_SCALE)
            put_label(panel, classes[label], x - w // 2, y - h // 2, palette[label])
    return panel


def draw_instances(image: np.ndarray, instances: List[Dict], classes: Sequence[str],
                   palette: Sequence[Sequence[int]], scale: int = 2,
                   alpha: float = 0.5) -> np.ndarray:
    """Draw ``instances`` over ``image`` (H, W, 3): each a dict with ``label`` (class index),
    ``box`` (x0, y0, x1, y1 in image pixels) and optionally ``mask`` ((H, W) bool) and ``score``.
    Masks are blended with the class colour, boxes outlined in it, and 'name' or 'name 0.93'
    written at the box's top-left corner. Returns the panel, (scale * H, scale * W, 3) uint8."""
    _check_scale(scale)
    panel = _enlarge(image, scale).astype(np.float32)
    for instance in instances:
        mask = instance.get('mask')
        if mask is not None:
            area = _enlarge(np.asarray(mask, np.uint8), scale).astype(bool)
            colour = np.asarray(palette[instance['label']], np.float32)
            panel[area] = (1 - alpha) * panel[area] + alpha * colour
    panel = np.round(panel).astype(np.uint8)
    for instance in instances:
        colour = tuple(int(c) for c in palette[instance['label']])
        x0, y0, x1, y1 = (int(round(v * scale)) for v in instance['box'])
        cv2.rectangle(panel, (x0, y0), (x1 - 1, y1 - 1), colour, 2)
        text = classes[instance['label']]
        if instance.get('score') is not None:
            text += f' {instance["score"]:.2f}'
        put_label(panel, text, x0, y0 - _text_size(text, TEXT_SCALE)[1] - 3, colour)
    return panel


def pair(ground_truth: np.ndarray, prediction: np.ndarray, name: str) -> np.ndarray:
    """Two panels of one size side by side under the titles '<name>: ground truth' and
    'prediction'. Returns (title height + H, 2 * W + GAP, 3) uint8."""
    if ground_truth.shape != prediction.shape:
        raise ValueError(f'the panels differ in shape: {ground_truth.shape} and '
                         f'{prediction.shape}')
    h, w = ground_truth.shape[:2]
    title_h = _text_size('Ag', TEXT_SCALE)[1] + 6
    picture = np.full((title_h + h, 2 * w + GAP, 3), PAPER, np.uint8)
    picture[title_h:, :w] = ground_truth
    picture[title_h:, w + GAP:] = prediction
    for text, x in ((f'{name}: ground truth', 0), ('prediction', w + GAP)):
        cv2.putText(picture, text, (x + 2, title_h - 6), FONT, TEXT_SCALE, INK, 1, cv2.LINE_AA)
    return picture


def _legend(width: int, title: str, classes: Sequence[str],
            palette: Sequence[Sequence[int]]) -> np.ndarray:
    """A header strip: ``title`` on the first line, then every class name on its colour."""
    title_h = _text_size(title, TITLE_SCALE)[1] + 10
    swatch_h = _text_size('Ag', TEXT_SCALE)[1] + 4
    rows, x, y = [], GAP, title_h
    for name in classes:
        w = _text_size(name, TEXT_SCALE)[0] + 4
        if x + w > width - GAP and x > GAP:
            x, y = GAP, y + swatch_h + 4
        rows.append((name, x, y))
        x += w + GAP
    header = np.full((y + swatch_h + 8, width, 3), PAPER, np.uint8)
    cv2.putText(header, title, (GAP, title_h - 10), FONT, TITLE_SCALE, INK, 2, cv2.LINE_AA)
    for (name, x, y), colour in zip(rows, palette):
        put_label(header, name, x, y, colour)
    return header


def contact_sheet(pictures: Sequence[np.ndarray], columns: int, title: str,
                  classes: Sequence[str], palette: Sequence[Sequence[int]],
                  legend_classes: Optional[Sequence[int]] = None) -> np.ndarray:
    """Lay ``pictures`` (all one shape (h, w, 3)) out in a grid of ``columns`` cells per row, in
    order, under a header with ``title`` and the class names on their colours (those indexed by
    ``legend_classes``, default all). Cell (r, c) starts at (header + r * (h + GAP),
    c * (w + GAP)); margins are white. Returns (header + rows * (h + GAP) - GAP,
    columns * (w + GAP) - GAP, 3) uint8 with rows = ceil(len(pictures) / columns)."""
    if not pictures:
        raise ValueError('contact_sheet needs at least one picture')
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f'columns must be a positive int, got {columns!r}')
    shape = pictures[0].shape
    if any(p.shape != shape for p in pictures):
        shapes = sorted({p.shape for p in pictures})
        raise ValueError(f'all pictures must have one shape; got {shapes}')
    h, w = shape[:2]
    columns = min(columns, len(pictures))
    rows = -(-len(pictures) // columns)
    width = columns * (w + GAP) - GAP
    shown = range(len(classes)) if legend_classes is None else legend_classes
    header = _legend(width, title, [classes[i] for i in shown], [palette[i] for i in shown])
    sheet = np.full((len(header) + rows * (h + GAP) - GAP, width, 3), PAPER, np.uint8)
    sheet[:len(header)] = header
    for index, picture in enumerate(pictures):
        r, c = divmod(index, columns)
        y, x = len(header) + r * (h + GAP), c * (w + GAP)
        sheet[y:y + h, x:x + w] = picture
    return sheet
