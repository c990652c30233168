"""Test-only reference of the relaxed cell: one `MixedOp` per edge.

`MixedOp` applies the stride-1 operators of `auto_deeplab_ops` (Keras layers) with raw
TF ops on their variables (`_fast_*`); `RelaxedCell` (the batched cell the
search uses) must compute the sum of the cell's `MixedOp`s with the same
weights (tests/test_auto_deeplab_layers.py). Moved here from `layers/auto_deeplab_cell.py`:
the package itself never used it.
"""

import keras
import tensorflow as tf

from deeplab_dpc.formats import auto_deeplab_spec as nas_spec
from deeplab_dpc.layers.auto_deeplab_ops import (
    NAS_BN_EPSILON,
    NAS_BN_MOMENTUM,
    NASAtrous,
    NASPool,
    NASSeparable,
    NASSkip,
    build_op,
)


def _raw(variable):
    """The backend variable behind a Keras variable (read without Keras's wrappers)."""
    return getattr(variable, "value", variable)


def _fast_bn(bn, x, training):
    """`bn` (a Keras BatchNormalization) as one fused op, moving averages updated.

    Deviation: the fused op's batch variance, which enters the moving
    average, has Bessel's correction (n / (n - 1)); Keras's has not.
    """
    args = (x, _raw(bn.gamma), _raw(bn.beta), _raw(bn.moving_mean))
    if not training:
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            *args, _raw(bn.moving_variance), epsilon=bn.epsilon, is_training=False
        )
        return y
    y, mean, var = tf.compat.v1.nn.fused_batch_norm(
        *args,
        _raw(bn.moving_variance),
        epsilon=bn.epsilon,
        is_training=True,
        exponential_avg_factor=1.0 - bn.momentum,
    )
    bn.moving_mean.assign(mean)
    bn.moving_variance.assign(var)
    return y


def _fast_conv_bn(unit, x, training, activated=None):
    """A `NASConvBN` at stride 1 with raw TF ops; `activated` is relu(x) if known."""
    if unit.pre_activation:
        x = tf.nn.relu(x) if activated is None else activated
    kernel = _raw(unit.conv.kernel)
    rate = [unit.rate, unit.rate]
    if unit.depthwise:
        x = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", dilations=rate)
    else:
        x = tf.nn.convolution(x, kernel, padding="SAME", dilations=rate)
    return _fast_bn(unit.bn, x, training) if unit.bn is not None else x


def _fast_op(layer, x, relu_x, training):
    """One stride-1 operator of `auto_deeplab_ops` with raw TF ops (same weights)."""
    if isinstance(layer, NASSeparable):
        h = x
        for i, unit in enumerate(layer.units):
            h = _fast_conv_bn(unit, h, training, relu_x if i == 0 else None)
        return h
    if isinstance(layer, NASAtrous):
        return _fast_conv_bn(layer.unit, x, training, relu_x)
    if isinstance(layer, NASPool) and layer.projection is None:
        pool = tf.nn.avg_pool2d if layer.pooling == "avg" else tf.nn.max_pool2d
        return pool(x, layer.pool_size, 1, "SAME")
    if isinstance(layer, NASSkip) and layer.projection is None:
        return x
    return layer(x, training=training)


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class MixedOp(keras.layers.Layer):
    """Sum over operators of weight_k * op_k(x); inputs [x, weights (num_ops,)].

    "zero" gets a weight (it takes part in the softmax) but no layer: its term
    is zero. All operators run at stride 1 with `filters` in and out.

    The operators are Keras layers (their weights, names and checkpoints are
    those of `auto_deeplab_ops`), but `call` applies them with raw TF ops on their
    variables, one fused batch norm each and one ReLU shared by the convs:
    a supernet has thousands of operators, and tracing each through Keras's
    layer machinery made the search's graph construction take most of its
    time (issue 13: a 2-cell supernet took 100 s to trace; see
    g3doc/auto_deeplab.md).
    """

    def __init__(
        self,
        filters,
        ops=nas_spec.SEARCH_OPS,
        bn_momentum=NAS_BN_MOMENTUM,
        bn_epsilon=NAS_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.op_names = [str(op) for op in ops]
        unknown = [op for op in self.op_names if op not in nas_spec.SEARCH_OPS]
        if unknown:
            raise ValueError(f"{self.name}: unknown operators {unknown}")
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        self.ops = {}
        for op in self.op_names:
            if op != nas_spec.ZERO:
                self.ops[op] = build_op(op, self.filters, 1, name=op, **bn)
                setattr(self, f"op_{op}", self.ops[op])

    def build(self, input_shape):
        for layer in self.ops.values():
            layer.build((None, None, None, self.filters))

    def call(self, inputs, training=None):
        x, weights = inputs
        total = None
        relu_x = tf.nn.relu(x)
        for k, op in enumerate(self.op_names):
            if op == nas_spec.ZERO:
                continue
            h = _fast_op(self.ops[op], x, relu_x, training)
            term = tf.cast(weights[k], x.dtype) * h
            total = term if total is None else total + term
        return tf.zeros_like(x) if total is None else total

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            ops=self.op_names,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
        )
        return config
