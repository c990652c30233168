"""TensorBoard summaries (`write_scalar`, `write_images`) and training progress lines.

Below training, evaluation and search, which all write through it without
importing each other (the evaluator writes `miou`, `pixel_accuracy` and
`iou/<class>` with `write_scalar`).

DeepLab logged `global step N: loss = x (s/step)` through slim and wrote
summaries of the losses, the learning rate and (optionally) images. Here:
- `Progress` logs every `log_steps` steps: step/total, loss, learning rate,
  images/s and ETA from a moving average of recent step times (warm-up and
  the steps a resume skipped left out); a tqdm bar instead on a terminal.
- `SummaryWriter` (chief only; a no-op elsewhere) writes scalars `loss`,
  `total_loss`, `learning_rate`, `images_per_sec`, the batch mIoU of one
  sample batch (`train_miou`, a noisy training signal, not an evaluation),
  and `samples`: image | ground truth | prediction panels in the dataset's
  colours.

Deviation: summaries are written with `tf.summary.write` and TensorBoard's
plugin metadata (scalars, images) built here, so training does not need the
`tensorboard` package installed; TensorBoard reads them as usual.
"""

import collections
import datetime
import time

import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from deeplab_dpc.core import common, console
from deeplab_dpc.layers.resize import resize_bilinear
from deeplab_dpc.reporting import colormaps, metrics

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
    """Step, loss, learning rate, images/s and ETA every `log_steps` steps.

    Speed and ETA come from a moving average of the last `window` step times,
    leaving out the first `warmup_steps` steps of this process (tracing, the
    first checkpoint save) and the steps a resume skipped, so the first line's
    ETA is already right. On a terminal (`console.progress_bar`) a tqdm bar
    shows the same figures; in a log file they are plain lines.
    """

    def __init__(self, start_step, total_steps, global_batch_size, warmup_steps=2,
                 window=50, bar=None):  # fmt: skip
        self.total_steps = total_steps
        self.batch = global_batch_size
        self.start_step = start_step
        self.warmup_steps = warmup_steps
        self.times = collections.deque(maxlen=window)
        self.last_step, self.last_time = start_step, time.time()
        self.bar = bar
        if bar is None:
            self.bar = console.progress_bar(
                total=total_steps, initial=start_step, unit="step", desc="train"
            )

    def step_seconds(self):
        """Mean seconds per step over the window, or None during warm-up."""
        return sum(self.times) / len(self.times) if self.times else None

    def images_per_sec(self):
        seconds = self.step_seconds()
        return self.batch / seconds if seconds else None

    def eta_seconds(self, step):
        seconds = self.step_seconds()
        return None if seconds is None else (self.total_steps - step) * seconds

    def tick(self, step, now=None):
        """Records the time of `step` (called every step)."""
        now = time.time() if now is None else now
        steps = step - self.last_step
        if steps > 0 and self.last_step - self.start_step >= self.warmup_steps:
            per_step = (now - self.last_time) / steps
            self.times.extend([per_step] * min(steps, self.times.maxlen))
        self.last_step, self.last_time = step, now

    def update(self, step, loss, learning_rate, log_steps, now=None):
        """Records `step`; prints on logging steps. `loss` None: not read this step."""
        self.tick(step, now)
        if loss is None:  # the bar advances; no figures (never a logging step)
            if self.bar is not None:
                self.bar.update(step - self.bar.n)
            return
        eta_s, rate = self.eta_seconds(step), self.images_per_sec()
        eta = "?" if eta_s is None else str(datetime.timedelta(seconds=round(eta_s)))
        speed = "? images/s" if rate is None else f"{rate:.1f} images/s"
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"loss {loss:.4f}  lr {learning_rate:.3g}  {speed}", refresh=False
            )
            self.bar.update(step - self.bar.n)
            if step >= self.total_steps:
                self.close()
            return
        if step % log_steps and step != self.total_steps:
            return
        logging.info(
            "step %d/%d  loss %.4f  lr %.3g  %s  ETA %s",
            step, self.total_steps, loss, learning_rate, speed, eta,
        )  # fmt: skip

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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
