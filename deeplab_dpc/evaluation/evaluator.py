"""Evaluation of checkpoints: DeepLab's `eval.py` as library functions.

`evaluate(...)` watches a checkpoint directory (or takes one checkpoint),
rebuilds the model from the `model_config.json` stored beside it (no model
flags), and for each checkpoint streams a confusion matrix over whole
validation images at their original size: each image is padded to k*32+1 by
the input pipeline, predicted with multi-scale / flipped inference
(`deeplab_dpc.modeling.inference`, softmax averaged over `scales` and flips), then
prediction and label are cropped back to the original height and width.
Ignore-label pixels are excluded. Results go to the log as a table, to
`eval_logdir/results.json` and to TensorBoard (`miou`, `pixel_accuracy`,
`iou/<class>`).

Deviations from DeepLab:
- Per-class IoU with class names, pixel accuracy and the confusion matrix
  are reported, not only mIoU.
- `output_stride` (eval.py `--output_stride`) rebuilds the checkpoint's model
  at another output stride (DeepLab evaluates a model trained at 16 at 8 the
  same way): the weights do not depend on it, and ASPP and DPC rates scale
  with `16 // output_stride`. The other model fields come from the
  checkpoint's config. Unset, the checkpoint's own stride is used.
- With `max_number_of_evaluations=0` DeepLab waits for new checkpoints
  forever; here the loop also ends after the checkpoint of the final training
  step (read from `train_config.json`), after the first evaluation when the
  directory holds no `train_config.json` (an imported or exported model), or
  when no newer checkpoint came for `wait_secs` (default: two of the
  training's save intervals + 60 s: an interrupted training never writes its
  final step). Each wait is announced in one log line.
"""

import re
import time

import tensorflow as tf
from absl import logging

from deeplab_dpc.core import artefacts, common, errors
from deeplab_dpc.modeling import checkpoints, inference
from deeplab_dpc.modeling.model import build_model, check_output_stride, load_config
from deeplab_dpc.reporting import metrics, summaries


def checkpoint_step(prefix):
    """The training step of a checkpoint (its `step` variable, else its number)."""
    try:
        return int(tf.train.load_variable(prefix, "step/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.NotFoundError, ValueError):
        match = re.search(r"-(\d+)$", prefix)
        return int(match.group(1)) if match else 0


def default_wait_secs(train_cfg):
    """How long to wait for a newer checkpoint: 2 saves of the training + 60 s."""
    return 2 * float(train_cfg.get("save_interval_secs", 1200)) + 60


def watch_checkpoints(checkpoint_path, max_number, interval_secs, wait_secs=None,
                      once_flag="--max_number_of_evaluations=1"):  # fmt: skip
    """Yields checkpoint prefixes to process (see the module docstring).

    Before each wait it logs one line: where it waits, for which step, how
    long, and how to stop or evaluate once (`once_flag`). It stops after the
    final training step, after `max_number` checkpoints (0: no limit), or
    when no newer checkpoint came for `wait_secs` (None: `default_wait_secs`
    of the training; an interrupted training never writes its final step).
    """
    if artefacts.is_checkpoint_prefix(checkpoint_path) or not artefacts.isdir(
        checkpoint_path
    ):
        yield checkpoints.resolve_checkpoint(checkpoint_path)
        return
    if max_number != 0:
        checkpoints.resolve_checkpoint(checkpoint_path)  # fails early if empty
    train_cfg = artefacts.read_train_config(checkpoint_path)
    final_step = train_cfg["training_number_of_steps"] if train_cfg else None
    if wait_secs is None:
        wait_secs = default_wait_secs(train_cfg or {})
    state = {"last": None, "last_prefix": None}

    def announce():
        after = "a first checkpoint" if state["last"] is None else (
            f"a checkpoint newer than step {state['last']}"
        )  # fmt: skip
        target = "" if final_step is None else f" (training's final step: {final_step})"
        logging.info(
            "Waiting for %s in %s%s; polling every %d s, stopping after %d s without "
            "one. Ctrl-C stops; %s evaluates the latest once.",
            after, checkpoint_path, target, interval_secs, wait_secs, once_flag,
        )  # fmt: skip

    def timed_out():
        logging.info(
            "No new checkpoint in %s for %d s: the training stopped before its final "
            "step %s (last evaluated: step %s); stopping. Rerun when it resumes.",
            checkpoint_path, wait_secs, final_step, state["last"],
        )  # fmt: skip
        return True

    if tf.train.latest_checkpoint(checkpoint_path) is None:
        announce()
    count = 0
    while True:
        prefix = _newer_checkpoint(checkpoint_path, state["last_prefix"], wait_secs)
        if prefix is None:
            timed_out()
            return
        start = time.time()
        yield prefix
        count += 1
        state["last"], state["last_prefix"] = checkpoint_step(prefix), prefix
        if max_number and count >= max_number:
            return
        if final_step is None or state["last"] >= final_step:
            return
        announce()
        time.sleep(max(0.0, start + interval_secs - time.time()))


def _newer_checkpoint(checkpoint_dir, last_prefix, wait_secs, poll_secs=1.0):
    """The latest checkpoint once it differs from `last_prefix`; None after `wait_secs`."""
    stop = time.time() + wait_secs
    while True:
        latest = tf.train.latest_checkpoint(checkpoint_dir)
        if latest is not None and latest != last_prefix:
            return latest
        if time.time() + poll_secs > stop:
            return None
        time.sleep(poll_secs)


def check_classes(checkpoint_path, info):
    """CheckpointError early if the checkpoint's class count differs from `info`'s."""
    if artefacts.isdir(checkpoint_path) or artefacts.exists(checkpoint_path + ".index"):
        config_path = checkpoints.config_path_for(checkpoint_path)
        if artefacts.exists(config_path):
            _check_config_classes(checkpoint_path, load_config(config_path), info)


def _check_config_classes(checkpoint_path, config, info):
    if config["num_classes"] != info.num_classes:
        raise checkpoints.CheckpointError(
            f"{checkpoint_path}: a model with {config['num_classes']} classes, but "
            f"dataset {info.name} has {info.num_classes}; pass the --dataset it "
            "was trained on"
        )


def load_model_for(checkpoint_path, info, output_stride=None):
    """Model and config from the checkpoint; CheckpointError if `info` disagrees.

    `output_stride` (None: the checkpoint's) rebuilds the model at another
    output stride; the weights are the same at every stride.
    """
    config = checkpoints.read_checkpoint_config(checkpoint_path)
    _check_config_classes(checkpoint_path, config, info)
    if output_stride is not None:
        check_output_stride(int(output_stride))
        config = dict(config, output_stride=int(output_stride))
    return build_model(config), config


def make_predict_fn(model, scales, add_flipped_images):
    """images -> class ids [B, H, W], with the model as one retracing-tolerant graph.

    Only the model call is a `tf.function` (traced once per input shape, then
    with unknown sizes), so S scales and flips cost at most a few traces of
    the model instead of one graph holding 2 * S copies of it.
    """
    model_fn = tf.function(
        lambda images, training=False: model(images, training=False),
        reduce_retracing=True,
    )

    def predict(images):
        return inference.predict_labels(model_fn, images, scales, add_flipped_images)

    return predict


def iterate_predictions(dataset, predict):
    """Yields (name, image, label, prediction) cropped to the original size."""
    from deeplab_dpc.core import interrupts

    for batch in dataset:
        interrupts.check()  # a safe point (the handler's raise can be swallowed)
        preds = predict(batch[common.IMAGE]).numpy()
        for i in range(preds.shape[0]):
            h, w = int(batch[common.HEIGHT][i]), int(batch[common.WIDTH][i])
            yield (
                batch[common.IMAGE_NAME][i].numpy().decode("utf-8"),
                batch[common.IMAGE][i, :h, :w].numpy(),
                batch[common.LABEL][i, :h, :w, 0].numpy(),
                preds[i, :h, :w],
            )


def evaluate_once(model, config, prefix, info, dataset, scales, add_flipped_images):
    """Restores `prefix` into `model` and returns the results dict."""
    checkpoints.restore_model(prefix, model=model, config=config)
    predict = make_predict_fn(model, scales, add_flipped_images)
    stream = metrics.StreamingConfusionMatrix(info.num_classes, info.ignore_label)
    num_images = 0
    for _, _, label, pred in iterate_predictions(dataset, predict):
        stream.update(label, pred)
        num_images += 1
    results = {
        "checkpoint": prefix,
        "step": checkpoint_step(prefix),
        "scales": [float(s) for s in scales],
        "flip": bool(add_flipped_images),
        "num_images": num_images,
        "output_stride": int(config["output_stride"]),
    }
    results.update(stream.result(info.class_names))
    return results


def format_table(results):
    """The results as a text table: one line per class, then mIoU and accuracy."""
    names = list(results["per_class_iou"])
    width = max([len(n) for n in names] + [14])
    lines = [f"{'class':<{width}}  IoU"]
    for name, iou in results["per_class_iou"].items():
        lines.append(f"{name:<{width}}  {'n/a' if iou is None else f'{iou:.4f}'}")
    lines.append(f"{'mIoU':<{width}}  {results['miou']:.4f}")
    lines.append(f"{'pixel accuracy':<{width}}  {results['pixel_accuracy']:.4f}")
    return "\n".join(lines)


def write_results(results, eval_logdir, writer):
    """results.json (atomically) and TensorBoard scalars."""
    artefacts.makedirs(eval_logdir)
    artefacts.write_json(results, artefacts.results_path(eval_logdir))
    step = results["step"]
    with writer.as_default(step=step):
        summaries.write_scalar("miou", results["miou"], step)
        summaries.write_scalar("pixel_accuracy", results["pixel_accuracy"], step)
        for name, iou in results["per_class_iou"].items():
            if iou is not None:
                summaries.write_scalar(f"iou/{name}", iou, step)
    writer.flush()


def evaluate(
    checkpoint_path,
    eval_logdir,
    info,
    data=None,
    eval_split="val",
    eval_scales=(1.0,),
    add_flipped_images=False,
    max_number_of_evaluations=1,
    eval_interval_secs=300,
    output_stride=None,
    wait_secs=None,
):
    """Evaluates checkpoints as they come; returns the last results dict.

    `data`: where the samples come from, a `registry.DataSource` or a
    dataset directory (None: the dataset's default).
    """
    from deeplab_dpc.data import pipeline

    scales = [float(s) for s in eval_scales] or [1.0]
    for scale in scales:
        errors.check_range("eval_scales", scale, 0.0, low_open=True)
    check_classes(checkpoint_path, info)
    dataset = pipeline.build_dataset(
        data, eval_split, info, is_training=False, batch_size=1
    )
    results = model = writer = None
    for prefix in watch_checkpoints(
        checkpoint_path, max_number_of_evaluations, eval_interval_secs, wait_secs
    ):
        if model is None:
            model, config = load_model_for(prefix, info, output_stride)
            writer = tf.summary.create_file_writer(eval_logdir)
        results = evaluate_once(
            model, config, prefix, info, dataset, scales, add_flipped_images
        )
        logging.info(
            "Evaluated %s (step %d) on %d images of %s/%s, output stride %d, "
            "scales %s, flip %s:\n%s",
            prefix, results["step"], results["num_images"], info.name, eval_split,
            results["output_stride"], scales, add_flipped_images, format_table(results),
        )  # fmt: skip
        write_results(results, eval_logdir, writer)
    if writer is not None:
        writer.close()
    return results
