"""The Auto-DeepLab cell of a found network, and the cell base the search shares.

`NASCell` is the official DeepLab's NASBaseCell (`core/nas_cell.py`) for one
cell of an architecture in the `nas_spec` format. Inputs ``[net, prev]``:
``net`` is H^{l-1} (already upsampled by the network when the path goes to a
finer level), ``prev`` is H^{l-2}. As the official `_cell_base`: ``prev`` is
resized (bilinear, align_corners) to ``net``'s size and, when its channels
differ from the cell's filters, ReLU -> 1x1 -> BN (``prev_1x1``); ``net``
always goes through ReLU -> 1x1 -> BN (``1x1``). Block i then sums its two
branches (``comb_iter_i_left`` / ``_right``); branches reading H^{l-1} or
H^{l-2} carry the cell's stride (2 when the path goes to a coarser level),
the others stride 1. The output concatenates all blocks. The search's relaxed cell
(`search/auto_deeplab/relaxed_cell.py`) shares the cell base (`CellBase`).

Drop path (official `_apply_drop_path`, the paper's Scheduled Drop Path): the
keep probability is scaled by the cell's depth, ``1 - (cell_num + 1) / total
* (1 - keep)``. Deviation: the official code also ramps it with the training
step; here nothing ramps it (neither the trainer nor the search has a drop-path
schedule), the layer applies the depth-scaled probability in training only.
The default keep probability 1.0 (the official default) disables it, and
`model_config` does not expose it, so every model the package builds runs
without drop path.
"""

import keras
import tensorflow as tf

from deeplab_dpc.formats import auto_deeplab_spec as nas_spec
from deeplab_dpc.layers.auto_deeplab_ops import (
    NAS_BN_EPSILON,
    NAS_BN_MOMENTUM,
    NASConvBN,
    build_op,
)
from deeplab_dpc.layers.base import ConfigLayer
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


class CellBase(ConfigLayer):
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


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class NASCell(CellBase):
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
        bn_momentum=NAS_BN_MOMENTUM,
        bn_epsilon=NAS_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(filters, bn_momentum, bn_epsilon, **kwargs)
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
