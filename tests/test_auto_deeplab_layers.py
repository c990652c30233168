"""Tests for the Auto-DeepLab operators and cells (layers/auto_deeplab_ops.py, auto_deeplab_cell.py,
search/auto_deeplab/relaxed_cell.py); their layer contract is
tests/test_layer_contract.py."""

import numpy as np
import pytest
import tensorflow as tf
from auto_deeplab_reference import MixedOp

from deeplab_dpc.formats import auto_deeplab_spec as nas_spec
from deeplab_dpc.layers.auto_deeplab_cell import NASCell
from deeplab_dpc.layers.auto_deeplab_ops import build_op
from deeplab_dpc.search.auto_deeplab.relaxed_cell import RelaxedCell


def counts(layer):
    trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    return trainable, sum(int(np.prod(w.shape)) for w in layer.weights)


@pytest.mark.parametrize(
    "op, c_in, c_out, strides, trainable, total",
    [
        # 2 x (depthwise 3x3 x c + pointwise c x c' + BN gamma/beta (mean/var))
        ("separable_3x3_2", 8, 8, 1, 2 * (9 * 8 + 8 * 8 + 2 * 8), 2 * (9 * 8 + 64 + 4 * 8)),
        ("separable_5x5_2", 4, 6, 2, (25 * 4 + 4 * 6 + 12) + (25 * 6 + 36 + 12),
         (25 * 4 + 24 + 24) + (150 + 36 + 24)),
        ("atrous_3x3", 8, 8, 1, 9 * 64 + 16, 9 * 64 + 32),
        ("atrous_5x5", 8, 8, 2, 25 * 64 + 16, 25 * 64 + 32),
        ("avg_pool_3x3", 8, 8, 1, 0, 0),
        ("max_pool_3x3", 4, 8, 1, 4 * 8 + 16, 4 * 8 + 32),  # 1x1 to the filters
        ("none", 8, 8, 1, 0, 0),
        ("none", 8, 8, 2, 64 + 16, 64 + 32),  # strided: 1x1 conv + BN
    ],
)  # fmt: skip
def test_operator_weight_counts_by_hand(op, c_in, c_out, strides, trainable, total):
    layer = build_op(op, c_out, strides)
    y = layer(tf.random.normal((1, 9, 9, c_in)))
    assert counts(layer) == (trainable, total)
    size = 5 if strides == 2 else 9  # ceil(9 / stride), explicit padding or SAME
    assert tuple(y.shape) == (1, size, size, c_out)


def test_strided_atrous_resizes_then_convolves_at_rate_1():
    layer = build_op("atrous_3x3", 4, 2)
    assert layer.unit.rate == 1
    assert build_op("atrous_3x3", 4, 1).unit.rate == 2
    assert tuple(layer(tf.zeros((1, 17, 17, 4))).shape) == (1, 9, 9, 4)


def test_unknown_and_zero_ops_have_no_layer():
    with pytest.raises(ValueError, match="'zero' has no layer"):
        build_op("zero", 4)
    with pytest.raises(ValueError, match="unknown NAS operator"):
        build_op("sep_conv_3x3", 4)


def test_discrete_cell_output_and_resizing():
    cell = NASCell(4, nas_spec.HNASNET["cell"], strides=2)
    net, prev = tf.random.normal((2, 17, 17, 8)), tf.random.normal((2, 33, 33, 3))
    y = cell([net, prev])  # prev is resized to net's size, then projected
    assert tuple(y.shape) == (2, 9, 9, 20)
    assert cell.prev_1x1 is not None


def _one_hot_alpha(cell_spec, ops):
    weights = np.zeros((nas_spec.num_cell_edges(len(cell_spec)), len(ops)), np.float32)
    weights[:, ops.index("zero")] = 1.0
    for b, block in enumerate(cell_spec):
        for branch in block:
            row = nas_spec.edge_index(b, branch["input"])
            weights[row] = 0.0
            weights[row, ops.index(branch["op"])] = 1.0
    return weights


def test_relaxed_cell_with_one_hot_alpha_is_the_discrete_cell():
    spec = nas_spec.HNASNET["cell"][:3]  # 3 of its blocks keep the test cheap
    # The operators of the hnasnet cell and "zero" (the full set only adds
    # layers that get weight 0, and time).
    ops = ["separable_3x3_2", "separable_5x5_2", "atrous_3x3", "atrous_5x5", "zero"]
    net, prev = tf.random.normal((2, 11, 11, 12)), tf.random.normal((2, 11, 11, 7))
    discrete = NASCell(4, spec, strides=1)
    relaxed = RelaxedCell(4, len(spec), ops)
    weights = tf.constant(_one_hot_alpha(spec, ops))
    discrete([net, prev])
    relaxed([net, prev, weights])
    # Give the relaxed cell every weight of the discrete one.
    relaxed.conv_1x1.set_weights(discrete.conv_1x1.get_weights())
    relaxed.prev_1x1.set_weights(discrete.prev_1x1.get_weights())
    branches = [br for blk in spec for br in blk]
    for k, branch in enumerate(branches):
        relaxed.load_op(k // 2, branch["input"], discrete.ops[k])
    for training in (False, True):  # moving statistics and batch statistics
        want = discrete([net, prev], training=training)
        got = relaxed([net, prev, weights], training=training)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # and a different alpha gives a different output
    other = relaxed([net, prev, tf.roll(weights, 1, axis=1)], training=False)
    assert np.abs(other.numpy() - discrete([net, prev]).numpy()).max() > 1e-3


def test_relaxed_cell_is_the_sum_of_mixed_ops():
    """The batched cell (stacked weights) against one MixedOp per edge, same weights."""
    ops = list(nas_spec.SEARCH_OPS)
    num_blocks, c = 3, 3
    net, prev = tf.random.normal((2, 9, 9, 5)), tf.random.normal((2, 9, 9, 4))
    alpha = tf.nn.softmax(
        tf.random.normal((nas_spec.num_cell_edges(num_blocks), len(ops)))
    )
    cell = RelaxedCell(c, num_blocks, ops, bn_momentum=0.5)
    cell([net, prev, alpha])
    mixed = {}
    for b in range(num_blocks):
        for source in range(b + 2):
            m = MixedOp(c, ops, bn_momentum=0.5)
            m.build([(None, None, None, c), (len(ops),)])
            for layer in m.ops.values():  # random BN state, so that it matters
                for w in layer.weights:
                    w.assign(tf.random.uniform(w.shape, 0.5, 1.5))
                cell.load_op(b, source, layer)
            mixed[b, source] = m

    def reference(training):
        states = cell._base(net, prev, training)
        for b in range(num_blocks):
            states.append(
                tf.add_n(
                    [
                        mixed[b, s](
                            [states[s], alpha[nas_spec.edge_index(b, s)]],
                            training=training,
                        )
                        for s in range(b + 2)
                    ]
                )
            )
        return tf.concat(states[2:], -1)

    for training in (False, True):
        want = reference(training)
        got = cell([net, prev, alpha], training=training)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Training updated the moving statistics of every edge as the MixedOps did.
    probe = tf.random.normal((2, 9, 9, 5))
    assert cell._op_weights["atrous_3x3"]["moving_mean"].numpy().std() > 0
    for b in range(num_blocks):
        for s in range(b + 2):
            row = cell._row[nas_spec.edge_index(b, s)]
            layer = mixed[b, s].ops["separable_5x5_2"].units[3].bn
            np.testing.assert_allclose(
                cell._op_weights["separable_5x5_2"][1]["moving_variance"][row],
                layer.moving_variance, rtol=1e-5,
            )  # fmt: skip
    del probe
    # 34 stacked variables (2 x 12 separable, 2 x 5 atrous) + the cell base.
    assert len(cell.stacked) == 34
    assert len(cell.weights) == 34 + 5 + 5


def test_mixed_op_is_the_weighted_sum():
    x = tf.random.normal((1, 7, 7, 3))
    mixed = MixedOp(3, ops=("avg_pool_3x3", "none", "zero"))
    w = tf.constant([0.2, 0.5, 0.3])
    want = 0.2 * tf.nn.avg_pool2d(x, 3, 1, "SAME") + 0.5 * x
    np.testing.assert_allclose(mixed([x, w]), want, atol=1e-6)


# --- Issue 24: the official padding and ReLU order, derived by hand ------------


def _identity_bn(unit):
    """Batch norm that passes values through (inference): var = 1 - eps."""
    bn = unit.bn
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, 1.0 - bn.epsilon))


def test_strided_3x3_conv_pads_one_pixel_each_side_on_even_sizes():
    # DeepLab's conv2d_same: pad (k - 1) // 2 = 1 before and 1 after, VALID,
    # stride 2. On a 4x4 map x = arange(16) with an all-ones 3x3 kernel the
    # windows cover rows/columns {-1, 0, 1} and {1, 2, 3}:
    #   [[0+1+4+5, 1+2+3+5+6+7], [4+5+8+9+12+13, 5+6+7+9+10+11+13+14+15]].
    # (SAME would pad 0 before and 1 after: windows {0, 1, 2} and {2, 3},
    # first value 0+1+2+4+5+6+8+9+10 = 45.)
    from deeplab_dpc.layers.auto_deeplab_ops import NASConvBN

    unit = NASConvBN(1, 3, strides=2, pre_activation=False, use_bn=False)
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    unit.build(x.shape)
    unit.conv.kernel.assign(np.ones((3, 3, 1, 1), "float32"))
    y = unit(x).numpy()[0, :, :, 0]
    np.testing.assert_allclose(y, [[10, 24], [51, 90]])
    assert unit.compute_output_shape((1, 4, 4, 1)) == (1, 2, 2, 1)


def test_strided_5x5_depthwise_of_a_separable_op_pads_two_each_side():
    # The first depthwise of a strided separable op (separable_conv2d_same):
    # pad 2 and 2 on a 6x6 map of ones, VALID stride 2: windows over rows
    # {-2..2}, {0..4}, {2..6} hold 3, 5 and 4 real pixels, so with an all-ones
    # kernel the output is the outer product [3, 5, 4] x [3, 5, 4].
    # (SAME pads 1 before and 2 after: [4, 5, 3].)
    layer = build_op("separable_5x5_2", 2, 2)
    x = np.ones((1, 6, 6, 2), "float32")
    layer.build(x.shape)
    depthwise = layer.units[0]
    assert depthwise.depthwise and depthwise.strides == 2
    depthwise.conv.kernel.assign(np.ones((5, 5, 2, 1), "float32"))
    y = depthwise(x).numpy()[0, :, :, 0]
    np.testing.assert_allclose(y, np.outer([3, 5, 4], [3, 5, 4]))
    assert tuple(layer(x).shape) == (1, 3, 3, 2)


def test_strided_atrous_applies_relu_before_the_half_size_resize():
    # 1 x 6 map x = [1, -1, 1, -1, 1, 1]; half size is scale_dimension(6, 0.5)
    # = 3 samples at 0, 2.5, 5 (align_corners). ReLU first: relu(x) =
    # [1, 0, 1, 0, 1, 1] -> [1, (1 + 0) / 2, 1] = [1, 0.5, 1]. (Resize first:
    # [1, (1 - 1) / 2, 1] -> ReLU -> [1, 0, 1].) The 3x3 kernel is the
    # identity (centre tap 1) and batch norm passes values through.
    layer = build_op("atrous_3x3", 1, 2)
    x = np.array([1, -1, 1, -1, 1, 1], "float32").reshape(1, 1, 6, 1)
    layer.build(x.shape)
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[1, 1] = 1.0
    layer.unit.conv.kernel.assign(kernel)
    _identity_bn(layer.unit)
    y = layer(x, training=False).numpy().ravel()
    np.testing.assert_allclose(y, [1.0, 0.5, 1.0], atol=1e-6)


def test_relaxed_cell_decays_separable_depthwise_kernels_like_the_network():
    # Stacked kernels of a relaxed cell with both separable ops (2 layers of
    # depthwise + pointwise each: 8) and both atrous ops (2): 10, four of
    # them depthwise [E, k, k, C, 1], as the official NAS cell decays them.
    ops = ["separable_3x3_2", "separable_5x5_2", "atrous_3x3", "atrous_5x5", "zero"]
    relaxed = RelaxedCell(4, 2, ops)
    relaxed([tf.zeros((1, 5, 5, 8)), tf.zeros((1, 5, 5, 8)), tf.zeros((5, 5))])
    kernels = relaxed.stacked_kernels()
    assert len(kernels) == 10
    assert sum(int(k.shape[-1]) == 1 and len(k.shape) == 5 for k in kernels) == 4
