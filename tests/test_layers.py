"""Pooling/resize values, hand-counted weights, DPC wiring (the layer contract:
tests/test_layer_contract.py)."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.layers import (
    Decoder,
    DensePredictionCell,
    PyramidPooling,
    pyramid_average_pool,
    resize_bilinear,
    scale_rate,
)

RNG = np.random.default_rng(0)
POOL_SPEC = [
    {"op": "pyramid_pooling", "grid_size": [2, 4], "input": -1},
    {"op": "conv", "kernel": 1, "input": 0},
    {"op": "conv", "kernel": 3, "rate": [3, 21], "input": -1},
]


def _randomize(layer):
    for w in layer.weights:
        value = RNG.normal(size=w.shape).astype("float32") * 0.3
        if "variance" in w.path:
            value = np.abs(value) + 0.5
        w.assign(value)


def test_decoder_outputs_at_the_low_level_size():
    layer = Decoder(filters=8, low_level_filters=4, name="decoder")
    head, low = np.ones((1, 5, 5, 6), "float32"), np.ones((1, 17, 17, 3), "float32")
    assert layer([head, low]).shape == (1, 17, 17, 8)


# --- DPC pyramid pooling as DeepLab's dense_prediction_cell (issue 24) -------


def test_pyramid_pool_5x5_grid_2x2_is_a_3x3_sliding_mean():
    # Kernel (5 - 1) // 2 + 1 = 3, stride 1, VALID: 3 x 3 window means. On
    # x = arange(25) laid out 5 x 5 a 3x3 window's mean is its centre value,
    # 5 * (a + 1) + (b + 1) for the window starting at (a, b).
    x = np.arange(25, dtype="float32").reshape(1, 5, 5, 1)
    got = pyramid_average_pool(tf.constant(x), (2, 2)).numpy()[0, :, :, 0]
    np.testing.assert_allclose(got, [[6, 7, 8], [11, 12, 13], [16, 17, 18]])


@pytest.mark.parametrize("hw, out", [((33, 33), (17, 25)), ((33, 65), (17, 49))])
def test_pyramid_pool_grid_2x4_on_33_maps_known_and_unknown_size(hw, out):
    # Grid 2 x 4 on 33 x 33: kernel (32 // 2 + 1, 32 // 4 + 1) = (17, 9), so
    # 17 x 25 windows; on 33 x 65: (17, 17), 17 x 49 windows. On x[i, j] =
    # 100 i + j the window from (a, b) has mean 100 (a + 8) + (b + kw // 2).
    h, w = hw
    kh, kw = 17, (w - 1) // 4 + 1
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x = (100.0 * i + j).astype("float32")[None, :, :, None]
    a, b = np.meshgrid(np.arange(out[0]), np.arange(out[1]), indexing="ij")
    expected = 100.0 * (a + kh // 2) + (b + kw // 2)
    known = pyramid_average_pool(tf.constant(x), (2, 4)).numpy()[0, :, :, 0]
    np.testing.assert_allclose(known, expected, rtol=1e-6)
    unknown = tf.function(
        lambda t: pyramid_average_pool(t, (2, 4)),
        input_signature=[tf.TensorSpec([None, None, None, 1])],
    )
    got = unknown(tf.constant(x)).numpy()[0, :, :, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_pyramid_pooling_layer_is_deeplabs_branch_on_a_33x33_map():
    # dense_prediction_cell's branch: 17 x 9 window means (stride 1, VALID),
    # 1x1 conv, BN, ReLU, bilinear resize (align_corners) back to 33 x 33.
    x = RNG.normal(size=(1, 33, 33, 3)).astype("float32")
    layer = PyramidPooling(2, (2, 4))
    layer.build(x.shape)
    kernel = RNG.normal(size=(1, 1, 3, 2)).astype("float32")
    layer.conv.kernel.assign(kernel)
    layer.bn.moving_variance.assign(np.full((2,), 1.0 - layer.bn.epsilon))
    means = np.array(
        [[x[0, a : a + 17, b : b + 9].mean(axis=(0, 1)) for b in range(25)]
         for a in range(17)]
    )  # fmt: skip
    pooled = np.maximum(means @ kernel[0, 0], 0.0)[None].astype("float32")
    expected = resize_bilinear(tf.constant(pooled), [33, 33]).numpy()
    got = layer(x, training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_pyramid_pool_grid_1x1_is_the_global_mean():
    x = RNG.normal(size=(2, 7, 9, 3)).astype("float32")
    got = pyramid_average_pool(tf.constant(x), (1, 1)).numpy()
    np.testing.assert_allclose(got, x.mean(axis=(1, 2), keepdims=True), atol=1e-6)


def test_resize_align_corners_keeps_corners_and_midpoints():
    x = tf.constant(np.array([[0.0, 10.0], [20.0, 30.0]], "float32")[None, :, :, None])
    y = resize_bilinear(x, [3, 3]).numpy()[0, :, :, 0]
    np.testing.assert_allclose(y, [[0, 5, 10], [10, 15, 20], [20, 25, 30]])


def test_scale_rate():
    assert [scale_rate(r, 8) for r in (1, 6, 21)] == [2, 12, 42]
    assert [scale_rate(r, 16) for r in (1, 6, 21)] == [1, 6, 21]
    assert [scale_rate(r, 32) for r in (1, 6, 21)] == [1, 3, 10]
    with pytest.raises(ValueError, match="output_stride"):
        scale_rate(6, 4)


def _count(layer):
    return sum(int(w.numpy().size) for w in layer.weights)


@pytest.mark.parametrize(
    "branch, expected",
    [
        # 3x3 separable: depthwise 9*160 + BN 4*160, pointwise 160*256 + BN 4*256.
        (
            {"op": "conv", "kernel": 3, "rate": [1, 6], "input": -1},
            9 * 160 + 4 * 160 + 160 * 256 + 4 * 256,
        ),
        ({"op": "conv", "kernel": 1, "input": -1}, 160 * 256 + 4 * 256),
        (
            {"op": "pyramid_pooling", "grid_size": [2, 4], "input": -1},
            160 * 256 + 4 * 256,
        ),
    ],
)
def test_single_branch_cell_weight_count(branch, expected):
    cell = DensePredictionCell([branch], name="head")
    cell(np.zeros((1, 9, 9, 160), "float32"))
    projection = 256 * 256 + 4 * 256
    assert _count(cell) == expected + projection


def test_cell_rates_follow_output_stride():
    cell = DensePredictionCell(spec_lib.TOP1, output_stride=8, filters=8, name="head")
    cell(np.zeros((1, 9, 9, 4), "float32"))
    rates = [tuple(op.depthwise.conv.dilation_rate) for op in cell.ops]
    assert rates == [(2, 12), (36, 30), (12, 6), (2, 2), (12, 42)]


def test_cell_rejects_bad_spec_with_branch_and_field():
    bad = [{"op": "conv", "kernel": 3, "rate": [1, 6], "input": 0}]
    with pytest.raises(spec_lib.SpecError, match=r"branch 0.*input"):
        DensePredictionCell(bad)


def test_cell_output_is_concat_projection_of_branches():
    """Feeding branch outputs by hand reproduces the cell (graph wiring is right)."""
    cell = DensePredictionCell(POOL_SPEC, filters=4, name="head")
    x = RNG.normal(size=(1, 7, 9, 3)).astype("float32")
    cell(x)
    _randomize(cell)
    y0 = cell.ops[0](x)
    y1 = cell.ops[1](y0)
    y2 = cell.ops[2](x)
    expected = cell.concat_projection(tf.concat([y0, y1, y2], -1))
    np.testing.assert_allclose(cell(x), expected, rtol=1e-5, atol=1e-5)
