"""ASPP, the human-designed baseline head (DeepLab v3, Chen et al. 2017).

Branches, in DeepLab's concatenation order: image pooling (`image_pooling`),
a 1x1 conv (`aspp0`), then one 3x3 atrous conv per rate (`aspp1`, `aspp2`,
...), separable by default as DeepLab's `aspp_with_separable_conv`; 256 filters
with BN + ReLU each; concat -> 1x1 projection (`concat_projection`) -> dropout
(keep 0.9), as DeepLab's `model.py`. With no rates it is "ASPP-lite", the
MobileNetV2 head of the DeepLab model zoo (1x1 conv + image pooling).
Rates are written for output stride 16 and scaled by `scale_rate`.
"""

import keras
import tensorflow as tf

from deeplab_dpc.layers.base import ConfigLayer
from deeplab_dpc.layers.conv import (
    HEAD_BN_EPSILON,
    HEAD_BN_MOMENTUM,
    ConvBN,
    SeparableConvBN,
    scale_rate,
)
from deeplab_dpc.layers.pooling import PyramidPooling

DEFAULT_ATROUS_RATES = (6, 12, 18)


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class ASPP(ConfigLayer):
    """Atrous spatial pyramid pooling.

    Args:
      atrous_rates: rates at output stride 16; empty for ASPP-lite.
      output_stride: the backbone's output stride.
      filters: channels of every branch and of the projection.
      separable: separable 3x3 atrous convs (DeepLab's default with Xception
        and in the DPC paper); a full 3x3 conv otherwise.
      add_image_level_feature: add the image-level pooling branch (DeepLab flag name).
      dropout_rate: dropout after the projection.
    """

    def __init__(
        self,
        atrous_rates=DEFAULT_ATROUS_RATES,
        output_stride=16,
        filters=256,
        separable=True,
        add_image_level_feature=True,
        dropout_rate=0.1,
        bn_momentum=HEAD_BN_MOMENTUM,
        bn_epsilon=HEAD_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.atrous_rates = [int(r) for r in atrous_rates]
        self.output_stride = int(output_stride)
        self.filters = int(filters)
        self.separable = bool(separable)
        self.add_image_level_feature = bool(add_image_level_feature)
        self.dropout_rate = float(dropout_rate)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        self.branches = []
        if self.add_image_level_feature:
            self.branches.append(
                PyramidPooling(self.filters, (1, 1), name="image_pooling", **bn)
            )
        self.branches.append(ConvBN(self.filters, 1, name="aspp0", **bn))
        for i, rate in enumerate(self.atrous_rates, start=1):
            r = scale_rate(rate, self.output_stride)
            if self.separable:
                op = SeparableConvBN(self.filters, 3, rate=r, name=f"aspp{i}", **bn)
            else:
                op = ConvBN(self.filters, 3, rate=r, name=f"aspp{i}", **bn)
            self.branches.append(op)
        # tf.train.Checkpoint does not see layers held only in a list: bind each
        # branch to its scope name too (checkpoint key `.../aspp1/...`).
        for op in self.branches:
            setattr(self, op.name, op)
        self.concat_projection = ConvBN(self.filters, 1, name="concat_projection", **bn)
        self.dropout = keras.layers.Dropout(
            self.dropout_rate, name="projection_dropout"
        )

    def build(self, input_shape):
        for op in self.branches:
            op.build(input_shape)
        self.concat_projection.build(
            (None, None, None, self.filters * len(self.branches))
        )

    def call(self, inputs, training=None):
        x = tf.concat([op(inputs, training=training) for op in self.branches], axis=-1)
        x = self.concat_projection(x, training=training)
        return self.dropout(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)
