"""The synthetic dataset rewards multi-scale context (slow: trains two small nets).

Same small backbone (output stride 4), two heads: a 3x3 convolution (the
whole net sees about 27 pixels) and ASPP-like branches (dilated rates 2, 4,
8, about 80 pixels, and ASPP's image pooling, which sees the whole crop). If the labels could be decided locally, both would do
equally well; the dataset is designed so that the second wins clearly.
A one-off run of the same nets for 400 steps (batch 16, 2026-11-23) gave
mIoU 0.50 against 0.68 (object classes 0.30-0.49 against 0.42-0.75) on
version 1 of the dataset (street scenes); not re-measured on version 2
(the large discs' class is the colour of a band 15-90 px above their
pixels: beyond the dilated branches' reach from a disc's centre, within the
image pooling's; version 2 needed that branch, the test failed without it). This test trains 300 steps and asks for a margin of 0.05 (about 5 minutes on 2
loaded CPU cores: run with `pytest -m slow`).
"""

import numpy as np
import pytest

from deeplab_dpc.core import common
from deeplab_dpc.data import pipeline, registry, synthetic

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
layers = keras.layers

pytestmark = pytest.mark.slow
INFO = registry.get_dataset_info("synthetic")
SIZE = 128  # a multiple of the output stride, cut from the 129x129 crops


def _net(multi_scale):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    if multi_scale:
        pooled = layers.GlobalAveragePooling2D(keepdims=True)(x)  # ASPP's image pooling
        pooled = layers.Conv2D(32, 1, activation="relu")(pooled)
        pooled = layers.UpSampling2D(SIZE // 4)(pooled)
        branches = [layers.Conv2D(32, 1, activation="relu")(x), pooled] + [
            layers.Conv2D(32, 3, padding="same", dilation_rate=r, activation="relu")(x)
            for r in (2, 4, 8)
        ]
        x = layers.Conv2D(64, 1, activation="relu")(layers.Concatenate()(branches))
    else:
        x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(INFO.num_classes, 1)(x)
    return keras.Model(inputs, layers.UpSampling2D(4, interpolation="bilinear")(x))


def _train_data(dataset_dir):
    ds = pipeline.build_dataset(
        dataset_dir, "train", INFO, is_training=True, batch_size=16, seed=0,
        min_scale_factor=0.75, max_scale_factor=1.25, deterministic=True,
    )  # fmt: skip

    def to_xyw(sample):
        label = sample[common.LABEL][:, :SIZE, :SIZE]
        weight = tf.cast(label != INFO.ignore_label, tf.float32)
        label = tf.where(label == INFO.ignore_label, 0, label)
        return sample[common.IMAGE][:, :SIZE, :SIZE], label, weight

    return ds.map(to_xyw)


def _miou(model, dataset_dir):
    n = INFO.num_classes
    confusion = np.zeros((n, n), np.int64)
    for sample in pipeline.build_dataset(dataset_dir, "val", INFO, is_training=False):
        logits = model(sample[common.IMAGE][:, :SIZE, :SIZE], training=False)
        pred = np.argmax(logits[0].numpy(), -1)
        label = sample[common.LABEL][0, :SIZE, :SIZE, 0].numpy()
        known = label != INFO.ignore_label
        confusion += np.bincount(
            label[known] * n + pred[known], minlength=n * n
        ).reshape(n, n)
    inter = np.diag(confusion)
    return inter / np.maximum(confusion.sum(0) + confusion.sum(1) - inter, 1)


def test_multi_scale_head_beats_local_head(tmp_path):
    dataset_dir = synthetic.ensure_synthetic_dataset(str(tmp_path / "synthetic"))
    results = {}
    for multi_scale in (False, True):
        keras.utils.set_random_seed(0)
        model = _net(multi_scale)
        model.compile(
            keras.optimizers.Adam(2e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(_train_data(dataset_dir), steps_per_epoch=100, epochs=3, verbose=0)
        results[multi_scale] = _miou(model, dataset_dir)
    local, multi = results[False], results[True]
    assert multi.mean() > local.mean() + 0.05, (local, multi)
    assert multi[1:].mean() > local[1:].mean() + 0.05, (local, multi)
