"""TensorBoard summaries (`write_scalar`, `write_images`) and training progress lines.

Below training, evaluation and search, which all write through it without
importing each other (the evaluator writes `miou`, `pixel_accuracy` and
`iou/<class>` with `write_scalar`).

DeepLab logged `global step N: loss = x (s/step)` through slim and wrote
summaries of the losses, the learning rate and (optionally) images. Here:
- `Progress` logs every `log_steps` steps: step/total, loss, learning rate,
  images/s (global batch over wall time since the last line) and ETA.
- `SummaryWriter` (chief only; a no-op elsewhere) writes scalars `loss`,
  `total_loss`, `learning_rate`, `images_per_sec`, the batch mIoU of one
  sample batch (`train_miou`, a noisy training signal, not an evaluation),
  and `samples`: image | ground truth | prediction panels in the dataset's
  colours.

Deviation: summaries are written with `tf.summary.write` and TensorBoard's
plugin metadata (scalars, images) built here, so training does not need the
`tensorboard` package installed; TensorBoard reads them as usual.
"""

import datetime
import time

import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from deeplab_dpc import colormaps, common, metrics
from deeplab_dpc.layers.resize import resize_bilinear

MAX_SAMPLE_IMAGES = 3


def _metadata(plugin_name, data_class):
    metadata = summary_pb2.SummaryMetadata(data_class=data_class)
    metadata.plugin_data.plugin_name = plugin_name
    return metadata.SerializeToString()


def write_scalar(name, value, step):
    """A TensorBoard scalar (needs a default writer)."""
    return tf.summary.write(
        name,
        tf.constant(float(value), tf.float32),
        step=step,
        metadata=_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR),
    )


def write_images(name, images, step):
    """TensorBoard images from uint8 RGB arrays of one size (needs a default writer)."""
    height, width = images[0].shape[:2]
    blobs = [str(width).encode(), str(height).encode()]
    blobs += [colormaps.encode_png(image) for image in images]
    return tf.summary.write(
        name,
        tf.constant(blobs),
        step=step,
        metadata=_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE),
    )


class Progress:
    """Logs step, loss, learning rate, images/s and ETA every `log_steps` steps."""

    def __init__(self, start_step, total_steps, global_batch_size):
        self.total_steps = total_steps
        self.batch = global_batch_size
        self.last_step, self.last_time = start_step, time.time()
        self.rate = None

    def images_per_sec(self):
        return self.rate

    def update(self, step, loss, learning_rate, log_steps):
        if step % log_steps and step != self.total_steps:
            return
        now = time.time()
        steps = step - self.last_step
        if steps > 0 and now > self.last_time:
            self.rate = steps * self.batch / (now - self.last_time)
        self.last_step, self.last_time = step, now
        if self.rate:
            eta_s = (self.total_steps - step) * self.batch / self.rate
            eta = str(datetime.timedelta(seconds=round(eta_s)))
            speed = f"{self.rate:.1f} images/s"
        else:
            eta, speed = "?", "? images/s"
        logging.info(
            "step %d/%d  loss %.4f  lr %.3g  %s  ETA %s",
            step, self.total_steps, loss, learning_rate, speed, eta,
        )  # fmt: skip


class SummaryWriter:
    """TensorBoard scalars and sample panels, written by the chief only."""

    def __init__(self, logdir, is_chief, info):
        self.info = info
        self.writer = tf.summary.create_file_writer(logdir) if is_chief else None
        self.colormap = colormaps.get_colormap("dataset", info)

    def scalars(self, step, loss, total_loss, learning_rate, images_per_sec):
        if self.writer is None:
            return
        values = {
            "loss": loss,
            "total_loss": total_loss,
            "learning_rate": learning_rate,
            "images_per_sec": images_per_sec,
        }
        with self.writer.as_default(step=step):
            for name, value in values.items():
                if value is not None:
                    write_scalar(name, value, step)

    def samples(self, step, model, strategy, batch):
        """Predicts the first replica's part of `batch`; writes panels and its mIoU."""
        if self.writer is None:
            return
        images = strategy.experimental_local_results(batch[common.IMAGE])[0]
        labels = strategy.experimental_local_results(batch[common.LABEL])[0]
        images, labels = images[:MAX_SAMPLE_IMAGES], labels[:MAX_SAMPLE_IMAGES]
        logits = model(images, training=False)[common.SEMANTIC_LOGITS]
        logits = resize_bilinear(logits, tf.shape(labels)[1:3])
        preds = tf.argmax(logits, axis=-1).numpy()
        labels = labels.numpy()[..., 0]
        stream = metrics.StreamingConfusionMatrix(
            self.info.num_classes, self.info.ignore_label
        )
        stream.update(labels, preds)
        panels = [
            colormaps.side_by_side(
                colormaps.to_uint8_image(image),
                colormaps.colorize(label, self.colormap),
                colormaps.colorize(pred, self.colormap),
            )
            for image, label, pred in zip(images.numpy(), labels, preds)
        ]
        with self.writer.as_default(step=step):
            write_scalar("train_miou", stream.result()["miou"], step)
            write_images("samples", panels, step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
