"""The Auto-DeepLab cell: discrete (found network) and relaxed (search).

`NASCell` is the official DeepLab's NASBaseCell (`core/nas_cell.py`) for one
cell of an architecture in the `nas_spec` format. Inputs ``[net, prev]``:
``net`` is H^{l-1} (already upsampled by the network when the path goes to a
finer level), ``prev`` is H^{l-2}. As the official `_cell_base`: ``prev`` is
resized (bilinear, align_corners) to ``net``'s size and, when its channels
differ from the cell's filters, ReLU -> 1x1 -> BN (``prev_1x1``); ``net``
always goes through ReLU -> 1x1 -> BN (``1x1``). Block i then sums its two
branches (``comb_iter_i_left`` / ``_right``); branches reading H^{l-1} or
H^{l-2} carry the cell's stride (2 when the path goes to a coarser level),
the others stride 1. The output concatenates all blocks.

`RelaxedCell` is the continuous relaxation (Sec. 4.1.1, as DARTS): the same
cell base, then every block sums a `MixedOp` over every one of its inputs,
each a softmax(alpha)-weighted sum of all operators. Alpha is not a weight of
the cell: the caller passes the [num_edges, num_ops] softmax weights as the
third input, so one alpha is shared by every cell of the supernet and stays
apart from the network weights. Relaxed cells always run at stride 1 (the
supernet changes resolution before the cell, Sec. 5.1).

Drop path (official `_apply_drop_path`, the paper's Scheduled Drop Path): the
keep probability is scaled by the cell's depth, ``1 - (cell_num + 1) / total
* (1 - keep)``. Deviation: the official code also ramps it with the training
step; here the ramp is left to the trainer (phase 2), the layer applies the
depth-scaled probability in training only. The default keep probability 1.0
(the official default) disables it.
"""

import keras
import tensorflow as tf

from deeplab_dpc import nas_spec
from deeplab_dpc.layers.nas_ops import (
    NAS_BN_EPSILON,
    NAS_BN_MOMENTUM,
    NASAtrous,
    NASConvBN,
    NASPool,
    NASSeparable,
    NASSkip,
    build_op,
)
from deeplab_dpc.layers.resize import resize_bilinear


def resize_to(x, reference):
    """`x` resized (align_corners) to `reference`'s spatial size unless already equal."""
    if (
        x.shape[1] is not None
        and x.shape[1] == reference.shape[1]
        and x.shape[2] == reference.shape[2]
    ):
        return x
    return resize_bilinear(x, tf.shape(reference)[1:3])


class _CellBase(keras.layers.Layer):
    """The beginning of a cell: ``1x1`` on H^{l-1}, ``prev_1x1`` on H^{l-2} if needed."""

    def __init__(
        self, filters, bn_momentum=NAS_BN_MOMENTUM, bn_epsilon=NAS_BN_EPSILON, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self._bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        self.conv_1x1 = NASConvBN(self.filters, 1, name="1x1", **self._bn)
        self.prev_1x1 = None

    def _build_base(self, net_shape, prev_shape):
        self.conv_1x1.build((None, None, None, net_shape[-1]))
        if prev_shape[-1] != self.filters:
            self.prev_1x1 = NASConvBN(self.filters, 1, name="prev_1x1", **self._bn)
            self.prev_1x1.build((None, None, None, prev_shape[-1]))

    def _base(self, net, prev, training):
        prev = resize_to(prev, net)
        if self.prev_1x1 is not None:
            prev = self.prev_1x1(prev, training=training)
        return [self.conv_1x1(net, training=training), prev]

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class NASCell(_CellBase):
    """One cell of a found architecture. Inputs [H^{l-1}, H^{l-2}]; 5 x filters out.

    Args:
      filters: the cell's filter size (F times the level's filter scaling).
      cell: the blocks, in the `nas_spec` format (validated).
      strides: 2 when this cell goes to a coarser level, else 1.
      drop_path_keep_prob, cell_num, total_num_cells: drop path, see the module.
    """

    def __init__(
        self,
        filters,
        cell=None,
        strides=1,
        drop_path_keep_prob=1.0,
        cell_num=0,
        total_num_cells=1,
        **kwargs,
    ):
        super().__init__(filters, **kwargs)
        self.cell = nas_spec.parse_cell(
            nas_spec.HNASNET[nas_spec.CELL] if cell is None else cell, source=self.name
        )
        self.strides = int(strides)
        self.drop_path_keep_prob = float(drop_path_keep_prob)
        self.cell_num = int(cell_num)
        self.total_num_cells = int(total_num_cells)
        self.ops = []
        for b, block in enumerate(self.cell):
            for side, branch in zip(("left", "right"), block):
                stride = self.strides if branch[nas_spec.INPUT] < 2 else 1
                op = build_op(
                    branch[nas_spec.OP],
                    self.filters,
                    stride,
                    name=f"comb_iter_{b}_{side}",
                    **self._bn,
                )
                self.ops.append(op)
                setattr(self, op.name, op)

    def build(self, input_shape):
        net_shape, prev_shape = input_shape
        self._build_base(net_shape, prev_shape)
        for op, branch in zip(self.ops, (br for blk in self.cell for br in blk)):
            del branch
            op.build((None, None, None, self.filters))

    def _drop_path(self, x, training):
        keep = self.drop_path_keep_prob
        if not training or keep >= 1.0:
            return x
        ratio = (self.cell_num + 1) / float(self.total_num_cells)
        keep = 1.0 - ratio * (1.0 - keep)
        noise = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], dtype=tf.float32)
        mask = tf.cast(tf.floor(keep + noise), x.dtype)
        return x * tf.cast(1.0 / keep, x.dtype) * mask

    def call(self, inputs, training=None):
        net, prev = inputs
        states = self._base(net, prev, training)
        branches = [br for blk in self.cell for br in blk]
        for b in range(len(self.cell)):
            outs = []
            for k in (2 * b, 2 * b + 1):
                op, branch = self.ops[k], branches[k]
                h = op(states[branch[nas_spec.INPUT]], training=training)
                if branch[nas_spec.OP] != nas_spec.SKIP:
                    h = self._drop_path(h, training)
                outs.append(h)
            states.append(outs[0] + outs[1])
        return tf.concat(states[2:], axis=-1)

    def compute_output_shape(self, input_shape):
        net_shape = input_shape[0]

        def size(n):
            return None if n is None else -(-n // self.strides)

        return (
            net_shape[0],
            size(net_shape[1]),
            size(net_shape[2]),
            self.filters * len(self.cell),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            cell=self.cell,
            strides=self.strides,
            drop_path_keep_prob=self.drop_path_keep_prob,
            cell_num=self.cell_num,
            total_num_cells=self.total_num_cells,
        )
        return config


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
    """One stride-1 operator of `nas_ops` with raw TF ops (same weights)."""
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
    those of `nas_ops`), but `call` applies them with raw TF ops on their
    variables, one fused batch norm each and one ReLU shared by the convs:
    a supernet has thousands of operators, and tracing each through Keras's
    layer machinery made the search's graph construction take most of its
    time (issue 13: a 2-cell supernet took 100 s to trace; see
    g3doc/autodeeplab.md).
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


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class RelaxedCell(_CellBase):
    """The search cell. Inputs [H^{l-1}, H^{l-2}, softmax(alpha)]; B x filters out.

    softmax(alpha) has shape [num_edges, len(ops)], rows ordered as
    `nas_spec.edge_index` (block-major, then input 0, 1, blocks 0..i-1).
    """

    def __init__(self, filters, num_blocks=5, ops=nas_spec.SEARCH_OPS, **kwargs):
        super().__init__(filters, **kwargs)
        self.num_blocks = int(num_blocks)
        self.op_names = [str(op) for op in ops]
        self.mixed = []
        for b in range(self.num_blocks):
            for source in range(b + 2):
                op = MixedOp(
                    self.filters, self.op_names, name=f"mixed_{b}_{source}", **self._bn
                )
                self.mixed.append(op)
                setattr(self, op.name, op)

    def build(self, input_shape):
        net_shape, prev_shape = input_shape[0], input_shape[1]
        self._build_base(net_shape, prev_shape)
        for op in self.mixed:
            op.build([(None, None, None, self.filters), (len(self.op_names),)])

    def call(self, inputs, training=None):
        net, prev, weights = inputs
        states = self._base(net, prev, training)
        for b in range(self.num_blocks):
            total = None
            for source in range(b + 2):
                e = nas_spec.edge_index(b, source)
                h = self.mixed[e]([states[source], weights[e]], training=training)
                total = h if total is None else total + h
            states.append(total)
        return tf.concat(states[2:], axis=-1)

    def compute_output_shape(self, input_shape):
        net_shape = input_shape[0]
        return tuple(net_shape[:-1]) + (self.filters * self.num_blocks,)

    def get_config(self):
        config = super().get_config()
        config.update(num_blocks=self.num_blocks, ops=self.op_names)
        return config
