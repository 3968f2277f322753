"""Draw a detector's or segmentor's predictions on one image.

    python tools/image_demo.py CONFIG CHECKPOINT IMAGE --out-file OUT.png [--device cpu]

The checkpoint is read with mmmv's safe loader and must fit the model.
"""
import argparse
from contextlib import contextmanager
from unittest import mock

import torch


def parse_args():
    parser = argparse.ArgumentParser(description='Predict on one image and draw the result')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out-file', required=True, help='where to write the drawing')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--score-thr', type=float, default=0.3, help='detection score threshold')
    parser.add_argument('--opacity', type=float, default=0.5, help='segmentation mask opacity')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle the checkpoint fully (only for files you trust)')
    return parser.parse_args()


@contextmanager
def exact_checkpoint_loading(inference_module):
    """Make mmdet's / mmseg's ``init_*`` load the checkpoint with
    :func:`mmmv.input_checks.load_checkpoint_exact`: a checkpoint of another arch stops with the
    keys and shapes that differ instead of loading partially with a warning."""
    from mmmv.input_checks import load_checkpoint_exact
    with mock.patch.object(inference_module, 'load_checkpoint', load_checkpoint_exact):
        yield


def main():
    args = parse_args()
    import os
    if args.unsafe_load:
        os.environ['MMMV_UNSAFE_LOAD'] = '1'
    import mmcv
    import mmmv  # noqa: F401  (registers the backbone, safe checkpoint loading)
    from mmmv.runtime import load_config, task_of

    cfg = load_config(args.config)
    if not os.path.isfile(args.image):
        raise FileNotFoundError(f"image '{args.image}' does not exist")
    image = mmcv.imread(args.image, channel_order='rgb')
    if image is None:
        raise ValueError(f"image '{args.image}' cannot be decoded (empty, corrupt or not an "
                         'image)')
    if task_of(cfg) == 'mmdet':
        import mmdet.apis.inference as inference
        from mmdet.apis import inference_detector, init_detector
        from mmdet.registry import VISUALIZERS
        with exact_checkpoint_loading(inference):
            model = init_detector(cfg, args.checkpoint, device=args.device)
        result = inference_detector(model, args.image)
        visualizer = VISUALIZERS.build(model.cfg.visualizer)
        visualizer.dataset_meta = model.dataset_meta
        visualizer.add_datasample('result', image, data_sample=result, draw_gt=False,
                                  show=False, out_file=args.out_file, pred_score_thr=args.score_thr)
    else:
        import mmseg.apis.inference as inference
        from mmseg.apis import inference_model, init_model, show_result_pyplot
        with exact_checkpoint_loading(inference):
            model = init_model(cfg, args.checkpoint, device=args.device)
        result = inference_model(model, args.image)
        show_result_pyplot(model, image, result, opacity=args.opacity, show=False,
                           out_file=args.out_file)
    print(f'wrote {args.out_file}')


if __name__ == '__main__':
    main()
