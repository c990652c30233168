"""Modified aligned Xception-65 / Xception-71 of DeepLab v3+ (Chen et al., ECCV 2018).

Entry, middle (16 units) and exit flows of separable convs with no max-pooling
(strided separable convs instead), BN after every depthwise and pointwise conv.
Units of the entry and middle flows are pre-activated (ReLU before each
separable conv, none inside); the last exit block has ReLU inside and no
shortcut; strided convs use DeepLab's `fixed_padding` + VALID. BN: decay
0.9997, epsilon 1e-3 (DeepLab's `xception_arg_scope`). Multi-grid is not
exposed (DeepLab's default is none). Low-level features for the decoder are
the unit's second separable conv before the stride-8 block, as DeepLab's
`DECODER_END_POINTS`.

Keras 3 forbids "/" in layer names: a unit is named `entry_flow_block1_unit_1`
and carries its DeepLab scope (`entry_flow/block1/unit_1/xception_module`) in
its `deeplab_scope` attribute for the weight importer.
"""

import keras
import tensorflow as tf

from deeplab_dpc.backbones.stride import StrideTracker
from deeplab_dpc.core import common
from deeplab_dpc.layers.base import ConfigLayer
from deeplab_dpc.layers.conv import ConvBN, SeparableConvBN

BN_MOMENTUM = 0.9997
BN_EPSILON = 1e-3

# === Config ===
# (scope, depth_list, skip connection, activation inside sep convs, units, stride)
_ENTRY_65 = (
    ("entry_flow/block1", (128, 128, 128), "conv", False, 1, 2),
    ("entry_flow/block2", (256, 256, 256), "conv", False, 1, 2),
    ("entry_flow/block3", (728, 728, 728), "conv", False, 1, 2),
)
_ENTRY_71 = (
    ("entry_flow/block1", (128, 128, 128), "conv", False, 1, 2),
    ("entry_flow/block2", (256, 256, 256), "conv", False, 1, 1),
    ("entry_flow/block3", (256, 256, 256), "conv", False, 1, 2),
    ("entry_flow/block4", (728, 728, 728), "conv", False, 1, 1),
    ("entry_flow/block5", (728, 728, 728), "conv", False, 1, 2),
)
_MIDDLE_EXIT = (
    ("middle_flow/block1", (728, 728, 728), "sum", False, 16, 1),
    ("exit_flow/block1", (728, 1024, 1024), "conv", False, 1, 2),
    ("exit_flow/block2", (1536, 1536, 2048), "none", True, 1, 1),
)
# The root convs: Keras layer name -> DeepLab scope (Keras forbids "/").
ROOT_SCOPES = {
    "entry_flow_conv1_1": "entry_flow/conv1_1",
    "entry_flow_conv1_2": "entry_flow/conv1_2",
}
ROOT_NAMES = tuple(ROOT_SCOPES)
VARIANTS = {
    "xception_65": (_ENTRY_65 + _MIDDLE_EXIT, "entry_flow/block2/unit_1"),
    "xception_71": (_ENTRY_71 + _MIDDLE_EXIT, "entry_flow/block3/unit_1"),
}


# === Layers ===
@keras.saving.register_keras_serializable(package="deeplab_dpc")
class XceptionModule(ConfigLayer):
    """Three separable convs (the last one strided) plus a shortcut.

    Returns [output, second separable conv's output] (the decoder endpoint).
    """

    def __init__(
        self,
        depth_list,
        skip_connection="conv",
        activation_in_separable=False,
        strides=1,
        rate=1,
        deeplab_scope=None,
        bn_momentum=BN_MOMENTUM,
        bn_epsilon=BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if skip_connection not in ("conv", "sum", "none"):
            raise ValueError(
                f"{self.name}: unknown skip connection {skip_connection!r}"
            )
        self.depth_list = [int(d) for d in depth_list]
        self.skip_connection = skip_connection
        self.activation_in_separable = bool(activation_in_separable)
        self.strides = int(strides)
        self.rate = int(rate)
        self.deeplab_scope = deeplab_scope
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        activation = "relu" if self.activation_in_separable else None
        self.separable_convs = [
            SeparableConvBN(
                depth,
                3,
                rate=self.rate,
                strides=self.strides if i == 2 else 1,
                activation=activation,
                explicit_padding=True,
                name=f"separable_conv{i + 1}",
                **bn,
            )
            for i, depth in enumerate(self.depth_list)
        ]
        # tf.train.Checkpoint does not see layers held only in a list.
        for conv in self.separable_convs:
            setattr(self, conv.name, conv)
        self.shortcut = None
        if skip_connection == "conv":
            self.shortcut = ConvBN(
                self.depth_list[-1],
                1,
                strides=self.strides,
                activation=None,
                name="shortcut",
                **bn,
            )

    def build(self, input_shape):
        shape = input_shape
        for conv, depth in zip(self.separable_convs, self.depth_list):
            conv.build(shape)
            shape = (None, None, None, depth)
        if self.shortcut is not None:
            self.shortcut.build(input_shape)

    def call(self, inputs, training=None):
        x, mid = inputs, None
        for i, conv in enumerate(self.separable_convs):
            if not self.activation_in_separable:
                x = tf.nn.relu(x)
            x = conv(x, training=training)
            if i == 1:
                mid = x
        if self.skip_connection == "conv":
            x = x + self.shortcut(inputs, training=training)
        elif self.skip_connection == "sum":
            x = x + inputs
        return [x, mid]

    def compute_output_shape(self, input_shape):
        mid = tuple(input_shape[:-1]) + (self.depth_list[1],)
        out = self.separable_convs[2].compute_output_shape(mid)
        return [tuple(out[:-1]) + (self.depth_list[2],), mid]


# === Functional Model ===
def xception(variant="xception_65", output_stride=16, bn_momentum=BN_MOMENTUM):
    """Returns a Keras model: image [-1, 1] -> {common.FEATURES, common.LOW_LEVEL}."""
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown Xception variant {variant!r}; known: {sorted(VARIANTS)}"
        )
    blocks, low_level_unit = VARIANTS[variant]
    tracker = StrideTracker(output_stride)
    bn = dict(bn_momentum=bn_momentum, bn_epsilon=BN_EPSILON)
    image = keras.Input(shape=(None, None, 3), name="image")
    strides, rate = tracker.next(2)
    root = ConvBN(
        32,
        3,
        strides=strides,
        rate=rate,
        explicit_padding=True,
        name=ROOT_NAMES[0],
        **bn,
    )
    root.deeplab_scope = ROOT_SCOPES[ROOT_NAMES[0]]
    x = root(image)
    strides, rate = tracker.next(1)
    root = ConvBN(64, 3, strides=strides, rate=rate, name=ROOT_NAMES[1], **bn)
    root.deeplab_scope = ROOT_SCOPES[ROOT_NAMES[1]]
    x = root(x)
    low_level = None
    for scope, depths, skip, act, units, stride in blocks:
        for u in range(units):
            unit_scope = f"{scope}/unit_{u + 1}"
            strides, rate = tracker.next(stride)
            x, mid = XceptionModule(
                depths,
                skip,
                act,
                strides=strides,
                rate=rate,
                deeplab_scope=unit_scope + "/xception_module",
                name=unit_scope.replace("/", "_"),
                **bn,
            )(x)
            if unit_scope == low_level_unit:
                low_level = mid
    model = keras.Model(
        image, {common.FEATURES: x, common.LOW_LEVEL: low_level}, name=common.BACKBONE
    )
    model.deeplab_scope = variant  # DeepLab's scope is the variant's name
    return model


def build(model_variant, output_stride, depth_multiplier, bn):
    """The `backbones.build_backbone` entry of the Xception variants."""
    if depth_multiplier != 1.0:
        raise ValueError(
            f"{model_variant} has no depth multiplier (got {depth_multiplier})"
        )
    return xception(model_variant, output_stride, **bn)
