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


def _panel(rgb, label, colored, preds, titles, colormap, class_names, ignore_label,
           step=1):  # fmt: skip
    """image | ground truth | each colourised prediction, titled, with the legend
    of the classes present (the ground truth kept at every `step`-th pixel)."""
    legend = colormaps.legend_entries(
        class_names, colormap, label, *preds, ignore_label=ignore_label
    )
    truth = colormaps.colorize(label, colormap)[::step, ::step]
    return colormaps.titled_panel(
        [rgb, truth, *colored], ["image", "ground truth", *titles], legend
    )


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
        panel = _panel(rgb, label, [colored], [pred], ["prediction"], colormap,
                       options["class_names"], options["ignore_label"])  # fmt: skip
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


def comparison_figure(models, data, info, split="val", image_indices=(0,),
                      colormap_type="dataset", scales=(1.0,), downsample=1):  # fmt: skip
    """Predictions of several checkpoints beside the ground truth, one row per image.

    Args:
      models: [(title, checkpoint)]: a checkpoint directory (its latest) or
        prefix, each rebuilt from its own `model_config.json`.
      data: a `registry.DataSource` or a dataset directory (as `evaluate`).
      image_indices: positions of the images in the split's record order.
      downsample: an integer; every panel keeps each `downsample`-th pixel
        (nearest neighbour: label colours stay exact), for a smaller file.
    Returns:
      An RGB uint8 array: per image, titled panels (image | ground truth |
      each model's prediction) with a legend of the classes present, the rows
      stacked top to bottom.
    """
    import tensorflow as tf

    from deeplab_dpc.data import pipeline
    from deeplab_dpc.modeling import checkpoints

    if not models:
        raise ValueError("models: at least one (title, checkpoint)")
    wanted = sorted({int(i) for i in image_indices})
    if not wanted or wanted[0] < 0:
        raise ValueError(
            f"image_indices: non-negative positions, got {list(image_indices)}"
        )
    if int(downsample) < 1:
        raise ValueError(f"downsample: a positive integer, got {downsample}")
    colormap = colormaps.get_colormap(colormap_type, info)
    dataset = pipeline.build_dataset(data, split, info, is_training=False, batch_size=1)
    chosen = tf.constant(wanted, tf.int64)
    # The chosen images, read once and checked before any model is loaded.
    batches = list(
        dataset.take(wanted[-1] + 1)
        .enumerate()
        .filter(lambda i, _: tf.reduce_any(tf.equal(i, chosen)))
        .map(lambda _, batch: batch)
    )
    if len(batches) != len(wanted):
        raise ValueError(
            f"image_indices: the {split} split has {len(batches)} of the "
            f"positions {wanted}"
        )
    samples, predictions = None, []
    for _, checkpoint in models:
        prefix = checkpoints.resolve_checkpoint(checkpoint)
        model, config = evaluator.load_model_for(prefix, info)
        checkpoints.restore_model(prefix, model=model, config=config)
        predict = evaluator.make_predict_fn(model, scales, False)
        rows = list(evaluator.iterate_predictions(batches, predict))
        samples = samples or [(image, label) for _, image, label, _ in rows]
        predictions.append([pred for *_, pred in rows])
    step = int(downsample)
    panels = []
    for k, (image, label) in enumerate(samples):
        preds = [p[k] for p in predictions]
        colored = [colormaps.colorize(p, colormap)[::step, ::step] for p in preds]
        panels.append(_panel(
            colormaps.to_uint8_image(image)[::step, ::step], label, colored, preds,
            [title for title, _ in models], colormap, list(info.class_names),
            info.ignore_label, step,
        ))  # fmt: skip
    width = max(p.shape[1] for p in panels)
    return np.concatenate(
        [np.pad(p, ((0, 8), (0, width - p.shape[1]), (0, 0)), constant_values=255)
         for p in panels]
    )  # fmt: skip
