"""The Dense Prediction Cell (Chen et al., NeurIPS 2018, Sec. 3.1, Fig. 2).

A DPC is a DAG of B branches; branch i applies one operation (1x1 conv, 3x3
atrous separable conv with rate r_h x r_w, or average spatial pyramid pooling
with grid g_h x g_w; 256 filters each) to the backbone features or to an
earlier branch's output. The cell output is concat(Y_1..Y_B) -> dropout (keep
0.9, training only) -> 1x1 projection to 256 with BN and ReLU, as in
DeepLab's `dense_prediction_cell.py` (`dropout_on_concat_features=True`).

The layer's config is the spec itself (the original JSON branch list), plus
the output stride that scales its rates (`scale_rate`, x2 at output stride 8).
"""

import keras
import tensorflow as tf

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.layers.base import ConfigLayer
from deeplab_dpc.layers.conv import (
    HEAD_BN_EPSILON,
    HEAD_BN_MOMENTUM,
    ConvBN,
    SeparableConvBN,
    scale_rate,
)
from deeplab_dpc.layers.pooling import PyramidPooling


def build_branch_op(branch, name, filters, output_stride, bn):
    """The Keras layer for one normalised spec branch."""
    if branch[spec_lib.OP] == spec_lib.PYRAMID_POOLING:
        return PyramidPooling(filters, branch[spec_lib.GRID_SIZE], name=name, **bn)
    kernel = branch[spec_lib.KERNEL]
    if list(kernel) == [1, 1]:
        return ConvBN(filters, 1, name=name, **bn)
    rate = [scale_rate(r, output_stride) for r in branch[spec_lib.RATE]]
    return SeparableConvBN(filters, kernel, rate=rate, name=name, **bn)


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class DensePredictionCell(ConfigLayer):
    """Keras layer for a DPC spec.

    Args:
      spec: list of branch dicts in the DeepLab JSON format (validated here:
        a bad spec raises `deeplab_dpc.formats.dpc_spec.SpecError` naming branch and field).
      output_stride: the backbone's output stride; spec rates are written for 16.
      filters: channels of every op and of the projection (256 in the paper).
      dropout_rate: dropout on the concatenated features (1 - keep_prob 0.9).
      allow_outside_space: accept rates / grids outside the paper's lists.
    """

    def __init__(
        self,
        spec,
        output_stride=16,
        filters=256,
        dropout_rate=0.1,
        allow_outside_space=False,
        bn_momentum=HEAD_BN_MOMENTUM,
        bn_epsilon=HEAD_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.branches = spec_lib.parse_spec(
            spec, allow_outside_space=allow_outside_space
        )
        self.spec = [dict(b) for b in self.branches]
        self.output_stride = int(output_stride)
        self.filters = int(filters)
        self.dropout_rate = float(dropout_rate)
        self.allow_outside_space = bool(allow_outside_space)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        self.ops = [
            build_branch_op(b, f"branch{i}", self.filters, self.output_stride, bn)
            for i, b in enumerate(self.branches)
        ]
        # tf.train.Checkpoint does not see layers held only in a list: bind each
        # op to its scope name too (checkpoint key `.../branch0/...`).
        for op in self.ops:
            setattr(self, op.name, op)
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="concat_dropout")
        self.concat_projection = ConvBN(self.filters, 1, name="concat_projection", **bn)

    def build(self, input_shape):
        branch_shape = (None, None, None, self.filters)
        for op, b in zip(self.ops, self.branches):
            op.build(input_shape if b[spec_lib.INPUT] < 0 else branch_shape)
        self.concat_projection.build(
            (None, None, None, self.filters * len(self.branches))
        )

    def call(self, inputs, training=None):
        outputs = []
        for op, b in zip(self.ops, self.branches):
            source = inputs if b[spec_lib.INPUT] < 0 else outputs[b[spec_lib.INPUT]]
            outputs.append(op(source, training=training))
        x = tf.concat(outputs, axis=-1)
        x = self.dropout(x, training=training)
        return self.concat_projection(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)
