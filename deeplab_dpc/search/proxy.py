"""The proxy task's trainer: one candidate cell trained on cached features.

Chen et al. (NeurIPS 2018, Sec. 3.3): the candidate DPC (plus the logits
layer) is trained on the cached backbone features for a fixed, short number
of iterations (30K at batch 8 in the paper: early stopping instead of
convergence) and scored by mIoU on the validation split. The backbone never
runs here.

The hot loop is one compiled train step (`tf.function`, XLA with
`jit_compile=True`). Features that fit in `memory_limit_bytes` stay in memory
and each step gathers a random batch inside the compiled step; otherwise
batches are streamed from the memory-mapped shards by `tf.data` (shard order
shuffled every pass, examples shuffled within a shard). No per-pixel work
happens in Python.

Training follows DeepLab: momentum SGD (0.9) with the poly schedule (power
0.9) from `learning_rate`, softmax cross-entropy that skips the ignore label,
on logits upsampled bilinearly (align_corners) to the label size, or with
`upsample_logits=False` on labels downsampled to the logits size with nearest
neighbour (DeepLab's `--upsample_logits`, as `training/losses.py` does for
train.py; the val mIoU is always scored at the label size).
`compute_dtype="bfloat16"` runs the cell in Keras' `mixed_bfloat16` policy
(float32 weights, bfloat16 compute; the loss in float32).

Deviations: no weight decay (too few steps to matter); the batch-norm
momentum of the cell is derived from the number of steps
(`bn_momentum_for_steps`) instead of DeepLab's 0.9997, whose moving averages
would still be mostly their initial values after a few hundred steps.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from deeplab_dpc.core import common, interrupts
from deeplab_dpc.layers import DensePredictionCell
from deeplab_dpc.layers.conv import Logits
from deeplab_dpc.layers.resize import resize_bilinear
from deeplab_dpc.reporting.metrics import mean_iou
from deeplab_dpc.training import losses

DEFAULT_MEMORY_LIMIT_BYTES = 4 << 30
POLY_POWER = 0.9
MOMENTUM = 0.9


def bn_momentum_for_steps(steps):
    """Batch-norm momentum whose averaging window is about a tenth of the run."""
    return float(min(0.9997, max(0.9, 1.0 - 10.0 / max(1, steps))))


def build_proxy_model(spec, feature_channels, num_classes, output_stride, bn_momentum):
    """cached features [N, h, w, C] -> DPC (`head`) -> logits [N, h, w, classes]."""
    features = keras.Input((None, None, feature_channels), name="features")
    x = DensePredictionCell(
        spec, output_stride=output_stride, bn_momentum=bn_momentum, name=common.HEAD
    )(features)
    logits = Logits(num_classes, name=common.LOGITS)(x)
    return keras.Model(features, logits, name="proxy")


def segmentation_loss(logits, labels, ignore_label, upsample_logits=True):
    """The training loss (`training.losses.softmax_cross_entropy`) for the
    cache's [B, H, W] labels: logits resized to the labels (`upsample_logits`)
    or labels to the logits by nearest neighbour, as DeepLab's flag does."""
    labels = tf.cast(labels, tf.int32)[..., None]
    return losses.softmax_cross_entropy(
        logits, labels, logits.shape[-1], ignore_label, upsample_logits=upsample_logits
    )


def confusion_matrix(logits, labels, num_classes, ignore_label):
    """[classes, classes] counts (row: label, column: prediction), ignore skipped.

    The in-graph twin of `metrics.confusion_matrix` (which is numpy),
    so that a batch's counts come out of one compiled call; the mIoU of the
    summed counts is `metrics.mean_iou`.
    """
    labels = tf.cast(labels, tf.int32)
    logits = resize_bilinear(tf.cast(logits, tf.float32), tf.shape(labels)[1:3])
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    index = tf.boolean_mask(labels * num_classes + pred, valid)
    counts = tf.math.bincount(
        index, minlength=num_classes**2, maxlength=num_classes**2, dtype=tf.int64
    )
    return tf.reshape(counts, [num_classes, num_classes])


COMPUTE_DTYPES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def _build_with_policy(compute_dtype, *args):
    """`build_proxy_model(*args)` under the Keras dtype policy of `compute_dtype`."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"proxy compute dtype must be one of {sorted(COMPUTE_DTYPES)},"
            f" got {compute_dtype!r}"
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(COMPUTE_DTYPES[compute_dtype])
    try:
        return build_proxy_model(*args)
    finally:
        keras.config.set_dtype_policy(previous)


def _float32(features):
    """Cached features as float32 before they reach TensorFlow.

    The cell computes in float32 either way; a float16 tensor in TensorFlow
    would also make oneDNN builds log an ERROR line ("oneDNN supports DT_HALF
    only on platforms with AVX-512") at its first creation, on hosts with
    oneDNN's custom operations.
    """
    return np.asarray(features, dtype=np.float32)


def _streamed_batches(cache, batch_size, seed):
    """tf.data over memory-mapped train shards, forever, shuffled per pass."""
    shards = cache.shards("train")
    features, labels = cache.read_shard(shards[0])
    signature = (
        tf.TensorSpec([batch_size, *features.shape[1:]], tf.float32),
        tf.TensorSpec([batch_size, *labels.shape[1:]], labels.dtype),
    )

    def generate():
        rng = np.random.default_rng(seed)
        while True:
            for s in rng.permutation(len(shards)):
                features, labels = cache.read_shard(shards[int(s)])
                order = rng.permutation(len(features))
                for start in range(0, len(order) - batch_size + 1, batch_size):
                    index = np.sort(order[start : start + batch_size])
                    yield _float32(features[index]), labels[index]

    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return iter(dataset.prefetch(2))


class _TrainData:
    """Random training batches: gathered in memory, or streamed from shards."""

    def __init__(self, cache, batch_size, seed, memory_limit_bytes):
        self.batch_size = batch_size
        itemsize = np.dtype(cache.info["dtype"]).itemsize
        float32_bytes = cache.nbytes("train") * 4 // itemsize  # as held in memory
        self.in_memory = float32_bytes <= memory_limit_bytes
        self.rng = np.random.default_rng(seed)
        if self.in_memory:
            features, labels = cache.load_split("train")
            if len(features) < batch_size:
                raise ValueError(
                    f"{cache.cache_dir}: {len(features)} cached training examples,"
                    f" fewer than the batch size {batch_size}"
                )
            self.features = tf.constant(_float32(features))
            self.labels = tf.constant(labels)
        else:
            self.iterator = _streamed_batches(cache, batch_size, seed)

    def next_args(self):
        """Arguments of the compiled step: batch indices, or a streamed batch."""
        if self.in_memory:
            n = int(self.features.shape[0])
            return (tf.constant(self.rng.choice(n, self.batch_size, replace=False)),)
        return next(self.iterator)


def _make_train_step(
    model, optimizer, data, ignore_label, jit_compile, upsample_logits=True
):
    variables = model.trainable_variables

    def step(features, labels):
        with tf.GradientTape() as tape:
            logits = model(tf.cast(features, tf.float32), training=True)
            loss = segmentation_loss(logits, labels, ignore_label, upsample_logits)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    if data.in_memory:

        def gather_step(index):
            return step(tf.gather(data.features, index), tf.gather(data.labels, index))

        return tf.function(gather_step, jit_compile=jit_compile)
    return tf.function(step, jit_compile=jit_compile)


def evaluate_proxy(model, cache, batch_size=8, split="val"):
    """mIoU of the proxy model on a cached split, and the confusion matrix."""
    num_classes, ignore = cache.num_classes, cache.ignore_label

    @tf.function
    def counts(features, labels):
        logits = model(tf.cast(features, tf.float32), training=False)
        return confusion_matrix(logits, labels, num_classes, ignore)

    total = np.zeros([num_classes, num_classes], np.int64)
    for shard in cache.shards(split):
        features, labels = cache.read_shard(shard)
        for start in range(0, len(features), batch_size):
            stop = start + batch_size
            total += counts(
                _float32(features[start:stop]), np.asarray(labels[start:stop])
            ).numpy()
    return mean_iou(total), total


def train_proxy(
    spec,
    cache,
    *,
    steps,
    batch_size=8,
    learning_rate=0.01,
    seed=0,
    jit_compile=False,
    eval_every=0,
    on_eval=None,
    memory_limit_bytes=DEFAULT_MEMORY_LIMIT_BYTES,
    upsample_logits=True,
    compute_dtype="float32",
):
    """Trains `spec` on the cache for `steps` steps and scores it on val.

    `on_eval(step, miou)` is called every `eval_every` steps (if > 0) with an
    intermediate validation mIoU; it may raise to stop the run (pruning).
    `upsample_logits`: the loss on logits upsampled to the labels (True,
    DeepLab's default) or on labels downsampled to the logits (False).
    `compute_dtype`: "float32" or "bfloat16" (Keras mixed_bfloat16).
    Returns a dict: `miou`, `losses` (per step), `train_seconds`,
    `eval_seconds`, `seconds`, `in_memory`.
    """
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = _build_with_policy(
        compute_dtype, spec, cache.feature_channels, cache.num_classes,
        cache.output_stride, bn_momentum_for_steps(steps),
    )  # fmt: skip
    schedule = keras.optimizers.schedules.PolynomialDecay(
        learning_rate, steps, end_learning_rate=0.0, power=POLY_POWER
    )
    optimizer = keras.optimizers.SGD(schedule, momentum=MOMENTUM)
    data = _TrainData(cache, batch_size, seed, memory_limit_bytes)
    train_step = _make_train_step(
        model, optimizer, data, cache.ignore_label, jit_compile, upsample_logits
    )
    losses, eval_seconds = [], 0.0
    for step in range(1, steps + 1):
        interrupts.check()  # a safe point (the handler's raise can be swallowed)
        losses.append(train_step(*data.next_args()))
        if on_eval and eval_every > 0 and step % eval_every == 0 and step < steps:
            t = time.perf_counter()
            miou, _ = evaluate_proxy(model, cache, batch_size)
            eval_seconds += time.perf_counter() - t
            on_eval(step, miou)
    losses = np.array([float(v) for v in losses])
    train_seconds = time.perf_counter() - start - eval_seconds
    t = time.perf_counter()
    miou, confusion = evaluate_proxy(model, cache, batch_size)
    eval_seconds += time.perf_counter() - t
    return {
        "miou": miou,
        "confusion": confusion,
        "losses": losses,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "seconds": time.perf_counter() - start,
        "in_memory": data.in_memory,
        "model": model,
    }


def cell_cost(spec, feature_channels, output_stride, crop_size):
    """(params, multiply-adds) of the cell's convs for one `crop_size` image.

    Counted by `deeplab_dpc.modeling.complexity` on a stand-in model whose
    "backbone" (average pooling + a dense layer, no convs) gives features of
    the real shape, so only the cell's own units (`head/...`) are counted.
    """
    from deeplab_dpc.modeling import complexity, naming

    image = keras.Input((None, None, 3))
    x = keras.layers.AveragePooling2D(output_stride, output_stride, padding="same")(
        image
    )
    x = keras.layers.Dense(feature_channels)(x)
    x = DensePredictionCell(spec, output_stride=output_stride, name=common.HEAD)(x)
    rows = complexity.compute_stats(keras.Model(image, x), tuple(crop_size))
    rows = [r for r in rows if naming.top_level(r["name"]) == common.HEAD]
    return sum(r["params"] for r in rows), sum(r["madds"] for r in rows)
