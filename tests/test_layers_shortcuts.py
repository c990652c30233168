"""Exact shortcuts of degenerate atrous convs (layers/conv.py): same outputs,
same gradients, same variables as the stock Keras convs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.layers import DensePredictionCell
from deeplab_dpc.layers import conv as conv_lib
from deeplab_dpc.modeling import complexity


def test_live_taps_known_answers():
    # 3x3, rate 18 on 11 rows: the taps at -18 and +18 read only padding.
    assert conv_lib.live_taps(3, 18, 11) == (1, 1, 1)
    # rate 15 on 16 columns: output 0 reads input 15, so every tap is live.
    assert conv_lib.live_taps(3, 15, 16) is None
    assert conv_lib.live_taps(3, 16, 16) == (1, 1, 1)
    # 5 taps at rate 4 on 7: offsets +-8 are dead, +-4 live -> 3 taps, rate 4.
    assert conv_lib.live_taps(5, 4, 7) == (1, 3, 4)
    assert (
        conv_lib.live_taps(3, 1, 2) is None and conv_lib.live_taps(3, 6, None) is None
    )


CASES = [  # (kernel, rate, feature h x w): fully and partly degenerate
    (3, (18, 18), (11, 16)),
    (3, (18, 15), (11, 16)),
    (3, (6, 21), (11, 16)),
    (5, (4, 9), (7, 9)),
]


@pytest.mark.parametrize("depthwise", [True, False])
@pytest.mark.parametrize("kernel, rate, hw", CASES)
def test_shortcut_equals_the_stock_keras_conv(depthwise, kernel, rate, hw):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, *hw, 6)).astype(np.float32))
    options = dict(
        kernel_size=kernel, dilation_rate=rate, padding="same", use_bias=True
    )
    if depthwise:
        ours, stock = (
            conv_lib.ShortcutDepthwiseConv2D(**options),
            keras.layers.DepthwiseConv2D(**options),
        )
    else:
        ours, stock = (
            conv_lib.ShortcutConv2D(5, **options),
            keras.layers.Conv2D(5, **options),
        )
    ours.build(x.shape)
    stock.build(x.shape)
    weights = [rng.normal(size=w.shape).astype(np.float32) for w in ours.weights]
    ours.set_weights(weights)
    stock.set_weights(weights)
    assert conv_lib._shortcut(ours.kernel_size, rate, (1, 1), "same", x.shape)
    assert [w.path.split("/")[-1] for w in ours.weights] == ["kernel", "bias"]
    assert [w.shape for w in ours.weights] == [w.shape for w in stock.weights]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        got, want = ours(x), stock(x)
        loss_got, loss_want = tf.reduce_sum(got * got), tf.reduce_sum(want * want)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(
        tape.gradient(loss_got, [x, *ours.weights]),
        tape.gradient(loss_want, [x, *stock.weights]),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_top1_cell_on_camvid_cache_shapes_is_unchanged():
    """The paper's top-1 cell on 11x16 features (CamVid 161x241 at stride 16)."""
    features = keras.Input((11, 16, 32))
    cell = DensePredictionCell(spec_lib.TOP1, output_stride=16, filters=16)
    model = keras.Model(features, cell(features))
    x = np.random.default_rng(1).normal(size=(2, 11, 16, 32)).astype(np.float32)
    fast = model(x, training=False)
    with conv_lib.no_shortcuts():
        plain = model(x, training=False)
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)
    image = keras.Input((None, None, 3))
    y = keras.layers.AveragePooling2D(16, 16, padding="same")(image)
    y = keras.layers.Dense(32)(y)
    stats_model = keras.Model(
        image, DensePredictionCell(spec_lib.TOP1, 16, filters=16)(y)
    )
    rows = complexity.compute_stats(stats_model, (161, 241))
    with conv_lib.no_shortcuts():
        assert complexity.compute_stats(stats_model, (161, 241)) == rows
