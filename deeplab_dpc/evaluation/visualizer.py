"""Writes colourised predictions of checkpoints: DeepLab's `vis.py` as a library.

For every image of a split: `<name>_image.png`, `<name>_prediction.png` (the
prediction in the chosen palette) and `<name>_panel.png` (image | ground
truth | prediction side by side) under `vis_logdir/segmentation_results/`,
and with `also_save_raw_predictions` the class ids as a single-channel PNG
under `vis_logdir/raw_segmentation_results/`, as DeepLab does (for
Cityscapes mapped back from train ids to the official label ids). Predictions
use the same multi-scale / flipped inference as evaluation, at the original
image size. The checkpoint loop is the evaluator's (`watch_checkpoints`).

Deviations from DeepLab: files are named after the image (`image/filename`)
instead of a running index; the panel file is new (titled image | ground
truth | prediction, enlarged when small, with a legend of the classes present
in ground truth or prediction); ignore-label pixels of the ground truth are
drawn with the palette entry of the ignore label.
"""

import os

import numpy as np
from absl import logging

from deeplab_dpc.core import artefacts
from deeplab_dpc.data import registry
from deeplab_dpc.evaluation import evaluator
from deeplab_dpc.reporting import colormaps

SEGMENTATION_DIR = "segmentation_results"
RAW_DIR = "raw_segmentation_results"


def _safe_name(name, index):
    name = os.path.splitext(os.path.basename(name))[0] if name else ""
    return name or f"{index:06d}"


def raw_id_map(info):
    """Lookup table train id -> id written to raw PNGs (Cityscapes: label ids)."""
    table = np.arange(256, dtype=np.uint8)
    if info.name == "cityscapes":
        for label_id, train_id in registry.CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items():
            table[train_id] = label_id
    return table


def visualize_checkpoint(model, config, prefix, dataset, colormap, options):
    """Writes the PNGs of one checkpoint; returns the number of images."""
    from deeplab_dpc.modeling import checkpoints

    checkpoints.restore_model(prefix, model=model, config=config)
    predict = evaluator.make_predict_fn(
        model, options["scales"], options["add_flipped_images"]
    )
    out_dir = os.path.join(options["vis_logdir"], SEGMENTATION_DIR)
    raw_dir = os.path.join(options["vis_logdir"], RAW_DIR)
    artefacts.makedirs(out_dir)
    if options["also_save_raw_predictions"]:
        artefacts.makedirs(raw_dir)
    count = 0
    for index, (name, image, label, pred) in enumerate(
        evaluator.iterate_predictions(dataset, predict)
    ):
        if options["max_images"] and index >= options["max_images"]:
            break
        base = _safe_name(name, index)
        rgb = colormaps.to_uint8_image(image)
        colored = colormaps.colorize(pred, colormap)
        colormaps.save_png(rgb, os.path.join(out_dir, f"{base}_image.png"))
        colormaps.save_png(colored, os.path.join(out_dir, f"{base}_prediction.png"))
        legend = colormaps.legend_entries(
            options["class_names"], colormap, label, pred,
            ignore_label=options["ignore_label"],
        )  # fmt: skip
        panel = colormaps.titled_panel(
            [rgb, colormaps.colorize(label, colormap), colored],
            ["image", "ground truth", "prediction"], legend,
        )  # fmt: skip
        colormaps.save_png(panel, os.path.join(out_dir, f"{base}_panel.png"))
        if options["also_save_raw_predictions"]:
            raw = options["raw_id_map"][pred]
            colormaps.save_png(raw, os.path.join(raw_dir, f"{base}.png"))
        count += 1
    return count


def visualize_checkpoints(
    checkpoint_path,
    vis_logdir,
    info,
    data=None,
    vis_split="val",
    colormap_type="pascal",
    vis_scales=(1.0,),
    add_flipped_images=False,
    also_save_raw_predictions=False,
    max_number_of_iterations=1,
    eval_interval_secs=300,
    max_images=0,
    wait_secs=None,
):
    """Visualises checkpoints as they come; returns the number of images written.

    `data`: a `registry.DataSource` or a dataset directory, as `evaluator.evaluate`.
    """
    from deeplab_dpc.data import pipeline

    colormap = colormaps.get_colormap(colormap_type, info)
    evaluator.check_classes(checkpoint_path, info)
    if info.num_classes > len(colormap):
        raise ValueError(f"{info.num_classes} classes do not fit a 256-colour palette")
    dataset = pipeline.build_dataset(
        data, vis_split, info, is_training=False, batch_size=1
    )
    options = {
        "raw_id_map": raw_id_map(info),
        "scales": [float(s) for s in vis_scales] or [1.0],
        "add_flipped_images": bool(add_flipped_images),
        "vis_logdir": vis_logdir,
        "also_save_raw_predictions": bool(also_save_raw_predictions),
        "max_images": int(max_images),
        "class_names": list(info.class_names),
        "ignore_label": info.ignore_label,
    }
    model = config = None
    count = 0
    for prefix in evaluator.watch_checkpoints(
        checkpoint_path, max_number_of_iterations, eval_interval_secs, wait_secs,
        once_flag="--max_number_of_iterations=1",
    ):  # fmt: skip
        if model is None:
            model, config = evaluator.load_model_for(prefix, info)
        count = visualize_checkpoint(model, config, prefix, dataset, colormap, options)
        logging.info(
            "Wrote %d visualisations of %s to %s",
            count, prefix, os.path.join(vis_logdir, SEGMENTATION_DIR),
        )  # fmt: skip
    return count
