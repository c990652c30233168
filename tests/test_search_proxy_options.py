"""Proxy options: --proxy_upsample_logits (DeepLab's semantics) and bfloat16."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_search_cache_proxy import _learnable_cache

from deeplab_dpc.search import proxy


def _cross_entropy(logits, label):
    return np.log(np.exp(logits).sum()) - logits[label]


def test_labels_downsampled_by_nearest_neighbour_known_answer():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 2, 2, 3)).astype(np.float32)
    labels = np.array([[[0, 1, 2], [1, 255, 0], [2, 0, 1]]], np.uint8)
    # align_corners nearest from 3x3 to 2x2 keeps the corners of the labels.
    corners = {(0, 0): 0, (0, 1): 2, (1, 0): 2, (1, 1): 1}
    expected = np.mean(
        [_cross_entropy(logits[0, i, j], c) for (i, j), c in corners.items()]
    )
    down = proxy.segmentation_loss(logits, labels, 255, upsample_logits=False)
    assert float(down) == pytest.approx(expected, rel=1e-5)
    # Upsampled, the loss averages over the 8 labelled pixels of the full map.
    up = proxy.segmentation_loss(logits, labels, 255, upsample_logits=True)
    full = tf.compat.v1.image.resize_bilinear(logits, [3, 3], align_corners=True)[0]
    pixels = [(i, j) for i in range(3) for j in range(3) if labels[0, i, j] != 255]
    expected_up = np.mean(
        [_cross_entropy(full[i, j].numpy(), labels[0, i, j]) for i, j in pixels]
    )
    assert float(up) == pytest.approx(expected_up, rel=1e-5)


def test_bfloat16_proxy_keeps_float32_weights_and_restores_the_policy():
    spec = [{"op": "conv", "kernel": 1, "input": -1}]
    before = keras.config.dtype_policy().name
    model = proxy._build_with_policy("bfloat16", spec, 16, 3, 16, 0.9)
    assert keras.config.dtype_policy().name == before
    assert {w.dtype for w in model.weights} == {"float32"}
    assert model(np.zeros((1, 5, 5, 16), np.float32)).dtype == "bfloat16"
    with pytest.raises(ValueError, match="compute dtype must be one of"):
        proxy._build_with_policy("float8", spec, 16, 3, 16, 0.9)


@pytest.mark.parametrize("upsample_logits, compute_dtype", [(False, "bfloat16")])
def test_proxy_learns_with_labels_downsampled_in_bfloat16(
    tmp_path, upsample_logits, compute_dtype
):
    cache = _learnable_cache(tmp_path / "c")
    spec = [{"op": "conv", "kernel": 1, "input": -1}]
    out = proxy.train_proxy(
        spec, cache, steps=60, batch_size=8, learning_rate=0.05,
        upsample_logits=upsample_logits, compute_dtype=compute_dtype,
    )  # fmt: skip
    losses = out["losses"]
    assert np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()
    assert out["miou"] > 0.45  # scored at the label size; chance is about 0.2
