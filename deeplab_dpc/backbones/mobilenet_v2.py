"""MobileNetV2 (Sandler et al., 2018) as DeepLab's feature extractor.

Layer names follow the original scopes (`Conv`, `expanded_conv`,
`expanded_conv_1` ... `expanded_conv_16`, each with `expand`, `depthwise`,
`project`), so official weights map by name. Channel counts follow DeepLab's
released models: `round(c * depth_multiplier)`, at least 8, with no rounding
to multiples of 8 (the released depth-multiplier-0.5 model has 12-channel
layers). Features are taken after `expanded_conv_16` (DeepLab's `layer_18`),
without the final 1x1 conv of the classifier; low-level features for the
decoder are `expanded_conv_2`'s depthwise output (DeepLab's
`layer_4/depthwise_output`, stride 4). BN: decay 0.997, epsilon 1e-3, ReLU6,
SAME padding, as slim's MobileNetV2 training scope.
"""

import keras

from deeplab_dpc.backbones.stride import StrideTracker
from deeplab_dpc.core import common
from deeplab_dpc.layers.base import ConfigLayer
from deeplab_dpc.layers.conv import ConvBN

BN_MOMENTUM = 0.997
BN_EPSILON = 1e-3

# === Config ===
# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2.
BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LOW_LEVEL_BLOCK = "expanded_conv_2"
DEEPLAB_SCOPE = "MobilenetV2"  # the variable scope of DeepLab's MobileNetV2


def scaled_depth(channels, depth_multiplier, min_depth=8):
    return max(min_depth, int(channels * depth_multiplier + 0.5))


# === Layers ===
@keras.saving.register_keras_serializable(package="deeplab_dpc")
class InvertedResidual(ConfigLayer):
    """expand 1x1 (if t > 1) -> depthwise 3x3 (stride, rate) -> project 1x1 (linear).

    Returns [output, depthwise_output]; the second is DeepLab's
    `layer_N/depthwise_output` endpoint.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        expansion,
        strides=1,
        rate=1,
        bn_momentum=BN_MOMENTUM,
        bn_epsilon=BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.expansion = int(expansion)
        self.strides = int(strides)
        self.rate = int(rate)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        hidden = self.in_channels * self.expansion
        self.expand = None
        if self.expansion > 1:
            self.expand = ConvBN(hidden, 1, activation="relu6", name="expand", **bn)
        self.depthwise = ConvBN(
            kernel_size=3,
            strides=self.strides,
            rate=self.rate,
            depthwise=True,
            activation="relu6",
            name="depthwise",
            **bn,
        )
        self.project = ConvBN(
            self.out_channels, 1, activation=None, name="project", **bn
        )
        self.residual = self.strides == 1 and self.in_channels == self.out_channels

    def build(self, input_shape):
        hidden = self.in_channels * self.expansion
        if self.expand is not None:
            self.expand.build(input_shape)
        self.depthwise.build((None, None, None, hidden))
        self.project.build((None, None, None, hidden))

    def call(self, inputs, training=None):
        x = inputs
        if self.expand is not None:
            x = self.expand(x, training=training)
        depthwise = self.depthwise(x, training=training)
        x = self.project(depthwise, training=training)
        if self.residual:
            x = x + inputs
        return [x, depthwise]

    def compute_output_shape(self, input_shape):
        hidden = self.in_channels * self.expansion
        shape = self.depthwise.compute_output_shape(tuple(input_shape[:-1]) + (hidden,))
        return [tuple(shape[:-1]) + (self.out_channels,), tuple(shape)]


# === Functional Model ===
def mobilenet_v2(output_stride=16, depth_multiplier=1.0, bn_momentum=BN_MOMENTUM):
    """Returns a Keras model: image [-1, 1] -> {common.FEATURES, common.LOW_LEVEL}."""
    tracker = StrideTracker(output_stride)
    bn = dict(bn_momentum=bn_momentum, bn_epsilon=BN_EPSILON)
    image = keras.Input(shape=(None, None, 3), name="image")
    stem = scaled_depth(STEM_CHANNELS, depth_multiplier)
    strides, rate = tracker.next(2)
    x = ConvBN(
        stem, 3, strides=strides, rate=rate, activation="relu6", name="Conv", **bn
    )(image)
    channels, index, low_level = stem, 0, None
    for t, c, n, s in BLOCKS:
        out = scaled_depth(c, depth_multiplier)
        for i in range(n):
            strides, rate = tracker.next(s if i == 0 else 1)
            name = "expanded_conv" if index == 0 else f"expanded_conv_{index}"
            x, depthwise = InvertedResidual(
                channels, out, t, strides=strides, rate=rate, name=name, **bn
            )(x)
            if name == LOW_LEVEL_BLOCK:
                low_level = depthwise
            channels, index = out, index + 1
    model = keras.Model(
        image, {common.FEATURES: x, common.LOW_LEVEL: low_level}, name=common.BACKBONE
    )
    model.deeplab_scope = DEEPLAB_SCOPE
    return model


def build(model_variant, output_stride, depth_multiplier, bn):
    """The `backbones.build_backbone` entry of this network."""
    return mobilenet_v2(output_stride, depth_multiplier, **bn)
