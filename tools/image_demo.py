"""Draw a detector's or segmentor's predictions on one image.

    python tools/image_demo.py CONFIG CHECKPOINT IMAGE --out-file OUT.png [--device cpu] [--amp]

The checkpoint is read with mmmv's safe loader and must fit the model: a checkpoint of another
arch stops with the keys and shapes that differ instead of loading partially with a warning.
"""
import argparse
import warnings

import torch

from mmmv.cli import add_amp_argument, add_unsafe_load_argument, apply_unsafe_load
from mmmv.engine import inference_autocast, load_config, prepare_for_inference, task_of
from mmmv.checkpoint import load_checkpoint_exact
from mmmv.errors import check_output_file, cli_main
from mmmv.input_checks import read_image_file


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Predict on one image and draw the result')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out-file', required=True, help='where to write the drawing')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--score-thr', type=float, default=0.3, help='detection score threshold')
    parser.add_argument('--opacity', type=float, default=0.5, help='segmentation mask opacity')
    add_amp_argument(add_unsafe_load_argument(parser), 'inference')
    args = parser.parse_args(argv)
    apply_unsafe_load(args)
    return args


def dataset_meta(checkpoint, default):
    """Class names and palette as training stored them in the checkpoint (mmdet 3 / mmseg 1:
    ``meta.dataset_meta``; older: ``meta.CLASSES`` / ``PALETTE``), else ``default``. Palette
    colours become tuples: mmengine's visualizer reads a list as a list of colours."""
    meta = checkpoint.get('meta') or {}
    if 'dataset_meta' in meta:
        found = {key.lower(): value for key, value in meta['dataset_meta'].items()}
    elif 'CLASSES' in meta:
        found = {'classes': meta['CLASSES'],
                 **({'palette': meta['PALETTE']} if 'PALETTE' in meta else {})}
    else:
        return default
    if found.get('palette') is not None:
        found['palette'] = [tuple(colour) for colour in found['palette']]
    return found


def init_model(cfg, checkpoint, device):
    """mmdet's ``init_detector`` / mmseg's ``init_model`` (the model in eval mode on ``device``,
    with ``cfg`` and ``dataset_meta``), loading ``checkpoint`` exactly
    (:func:`mmmv.checkpoint.load_checkpoint_exact`) where those load it non-strictly, with
    prepared for inference (:func:`mmmv.engine.prepare_for_inference`)."""
    if task_of(cfg) == 'mmdet':
        from mmdet.apis import init_detector as init
    else:
        from mmseg.apis import init_model as init
    with warnings.catch_warnings():  # mmdet warns that it uses COCO's classes without weights
        warnings.filterwarnings('ignore', message='checkpoint is None')
        model = init(cfg, None, device=device)
    loaded = load_checkpoint_exact(model, checkpoint, map_location='cpu')
    model.dataset_meta = dataset_meta(loaded, getattr(model, 'dataset_meta', None))
    return prepare_for_inference(model)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config)
    image = read_image_file(args.image)
    check_output_file(args.out_file, '--out-file')
    model = init_model(cfg, args.checkpoint, args.device)
    if task_of(cfg) == 'mmdet':
        from mmdet.apis import inference_detector
        from mmdet.registry import VISUALIZERS
        with inference_autocast(args.device, args.amp, args.amp_force):
            result = inference_detector(model, args.image)
        visualizer = VISUALIZERS.build(model.cfg.visualizer)
        visualizer.dataset_meta = model.dataset_meta
        visualizer.add_datasample('result', image, data_sample=result, draw_gt=False,
                                  show=False, out_file=args.out_file, pred_score_thr=args.score_thr)
    else:
        from mmseg.apis import inference_model, show_result_pyplot
        with inference_autocast(args.device, args.amp, args.amp_force):
            result = inference_model(model, args.image)
        show_result_pyplot(model, image, result, opacity=args.opacity, show=False,
                           out_file=args.out_file)
    print(f'wrote {args.out_file}')


if __name__ == '__main__':
    cli_main(main)
