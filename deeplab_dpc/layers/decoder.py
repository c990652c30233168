"""The DeepLab v3+ decoder (Chen et al., ECCV 2018).

Low-level backbone features (stride 4) -> 1x1 conv to 48 channels
(`feature_projection0`); the head output is resized to their size
(align_corners=True) and concatenated with them; two 3x3 separable convs with
256 filters (`decoder_conv0`, `decoder_conv1`), as DeepLab's `refine_by_decoder`;
`separable=False` makes them full 3x3 convs (DeepLab's
`decoder_use_separable_conv=False`, as Auto-DeepLab's Table 2 counts).
"""

import keras
import tensorflow as tf

from deeplab_dpc.layers.base import ConfigLayer
from deeplab_dpc.layers.conv import (
    HEAD_BN_EPSILON,
    HEAD_BN_MOMENTUM,
    ConvBN,
    SeparableConvBN,
)
from deeplab_dpc.layers.resize import resize_bilinear


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class Decoder(ConfigLayer):
    """Refines head features with low-level features. Inputs: [head, low_level]."""

    def __init__(
        self,
        filters=256,
        low_level_filters=48,
        separable=True,
        bn_momentum=HEAD_BN_MOMENTUM,
        bn_epsilon=HEAD_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.low_level_filters = int(low_level_filters)
        self.separable = bool(separable)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        self.feature_projection0 = ConvBN(
            self.low_level_filters, 1, name="feature_projection0", **bn
        )
        conv = SeparableConvBN if self.separable else ConvBN
        self.decoder_conv0 = conv(self.filters, 3, name="decoder_conv0", **bn)
        self.decoder_conv1 = conv(self.filters, 3, name="decoder_conv1", **bn)

    def build(self, input_shapes):
        head_shape, low_shape = input_shapes
        self.feature_projection0.build(low_shape)
        concat = (None, None, None, head_shape[-1] + self.low_level_filters)
        self.decoder_conv0.build(concat)
        self.decoder_conv1.build((None, None, None, self.filters))

    def call(self, inputs, training=None):
        head, low_level = inputs
        low = self.feature_projection0(low_level, training=training)
        head = resize_bilinear(head, tf.shape(low)[1:3])
        x = tf.concat([head, low], axis=-1)
        x = self.decoder_conv0(x, training=training)
        return self.decoder_conv1(x, training=training)

    def compute_output_shape(self, input_shapes):
        _, low_shape = input_shapes
        return tuple(low_shape[:-1]) + (self.filters,)
