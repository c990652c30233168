"""Convolution units of DeepLab: conv + batch norm + activation, and split separable conv.

Each unit is one "row" of `model_stats` and one scope of the original DeepLab:
`ConvBN(name="aspp0")` owns `conv` and `BatchNorm`, as slim's
`conv2d(..., scope="aspp0")` owned `aspp0/weights` and `aspp0/BatchNorm/*`.
`SeparableConvBN(name="branch0")` owns `depthwise` and `pointwise` units, which
the original DeepLab called `branch0_depthwise` and `branch0_pointwise`
(`split_separable_conv2d`); Keras 3 forbids "/" in layer names, so the scope
is spelled by nesting and `deeplab_dpc.modeling.naming` maps between the two.

Weight decay is not attached to layers (no kernel regularizers): the trainer
adds L2 over conv kernels, as DeepLab's slim arg_scope did, so layer configs
stay free of training hyper-parameters.

Exact shortcuts for degenerate atrous convs (not in DeepLab): with SAME
padding and stride 1, a tap at offset `o = (j - c) * rate` from the centre
reads only padding when `|o| >= size` of the feature map in that direction
(e.g. rate 18 on 11x16 features: every non-centre row tap). When the static
shape proves it, the conv runs on the live slice of its kernel (down to the
centre tap alone: a 1x1 conv, a per-channel scale for depthwise) with rate 1
along the dead axes. The output is the same sum without the zero terms and
the gradients of the dead taps are zero either way; the variables are the
same (`kernel`, `bias` of `conv` / `depthwise_conv`), so checkpoints,
`get_config` and `model_stats` (which counts the nominal kernel) are
unchanged. Dynamic shapes (None) run the plain conv. `no_shortcuts()`
switches them off while tracing (benchmarks and tests of the plain path).
"""

import contextlib

import keras
import tensorflow as tf

from deeplab_dpc.core import common
from deeplab_dpc.layers.base import ConfigLayer

# DeepLab's head batch norm (the paper's cell): decay 0.9997, epsilon 1e-5.
HEAD_BN_MOMENTUM = 0.9997
HEAD_BN_EPSILON = 1e-5

_ACTIVATIONS = {None: None, "relu": tf.nn.relu, "relu6": tf.nn.relu6}


def scale_rate(rate, output_stride):
    """Scales an atrous rate written for output stride 16 to `output_stride`.

    The one place where rates follow the output stride (x2 at 8, x1 at 16).
    At output stride 32, which DeepLab never used with atrous heads, rates are
    halved and rounded, never below 1.
    """
    if output_stride not in common.OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    return max(1, int(round(rate * 16 / output_stride)))


def _pair(value):
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def fixed_padding(x, kernel_size, rate):
    """Pads like DeepLab's `fixed_padding`, so a VALID strided conv aligns corners."""
    pads = []
    for k, r in zip(_pair(kernel_size), _pair(rate)):
        total = (k - 1) * r
        pads.append([total // 2, total - total // 2])
    return tf.pad(x, [[0, 0], pads[0], pads[1], [0, 0]])


_SHORTCUTS = {"enabled": True}


@contextlib.contextmanager
def no_shortcuts():
    """Convs traced inside run as plain (dilated) convs, never shortcut."""
    previous = _SHORTCUTS["enabled"]
    _SHORTCUTS["enabled"] = False
    try:
        yield
    finally:
        _SHORTCUTS["enabled"] = previous


def live_taps(kernel_size, rate, size):
    """(first tap, taps, rate) of one axis that can read inside a map of `size`.

    SAME padding, stride 1, odd kernel: tap j sits at (j - c) * rate from the
    output pixel (c the centre); it reads only padding when that offset is
    >= size. None when every tap is live or the size is unknown.
    """
    if size is None or kernel_size % 2 == 0 or rate <= 1 or kernel_size == 1:
        return None
    centre = kernel_size // 2
    half = min(centre, (size - 1) // rate)
    if half == centre:
        return None
    return centre - half, 2 * half + 1, rate if half > 0 else 1


def _shortcut(kernel_size, rate, strides, padding, shape):
    """(kernel slices, rates) of a degenerate conv on `shape`, or None."""
    if not _SHORTCUTS["enabled"] or strides != (1, 1) or padding != "same":
        return None
    axes = [live_taps(k, r, n) for k, r, n in zip(kernel_size, rate, shape[1:3])]
    if all(a is None for a in axes):
        return None
    slices, rates = [], []
    for k, r, a in zip(kernel_size, rate, axes):
        start, taps, new_rate = (0, k, r) if a is None else a
        slices.append(slice(start, start + taps))
        rates.append(new_rate)
    return tuple(slices), rates


class ShortcutConv2D(keras.layers.Conv2D):
    """keras Conv2D that runs degenerate atrous convs exactly on their live taps."""

    def call(self, inputs):
        cut = _shortcut(
            self.kernel_size, self.dilation_rate, self.strides, self.padding,
            inputs.shape,
        )  # fmt: skip
        if cut is None or self.data_format != "channels_last" or self.groups != 1:
            return super().call(inputs)
        (rows, cols), rates = cut
        kernel = tf.cast(self.kernel, inputs.dtype)[rows, cols]
        if kernel.shape[0] == kernel.shape[1] == 1:
            x = tf.tensordot(inputs, kernel[0, 0], axes=[[3], [0]])
        else:
            x = tf.nn.convolution(inputs, kernel, padding="SAME", dilations=rates)
        if self.use_bias:
            x = x + tf.cast(self.bias, x.dtype)
        return self.activation(x)


class ShortcutDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """keras DepthwiseConv2D, with the shortcut of `ShortcutConv2D` (multiplier 1)."""

    def call(self, inputs):
        cut = _shortcut(
            self.kernel_size, self.dilation_rate, self.strides, self.padding,
            inputs.shape,
        )  # fmt: skip
        if cut is None or self.data_format != "channels_last":
            return super().call(inputs)
        (rows, cols), rates = cut
        kernel = tf.cast(self.kernel, inputs.dtype)[rows, cols]
        if kernel.shape[0] == kernel.shape[1] == 1 and kernel.shape[3] == 1:
            x = inputs * kernel[0, 0, :, 0]
        else:
            x = tf.nn.depthwise_conv2d(
                inputs, kernel, [1, 1, 1, 1], "SAME", dilations=rates
            )
        if self.use_bias:
            x = x + tf.cast(self.bias, x.dtype)
        return self.activation(x)


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class ConvBN(ConfigLayer):
    """Conv2D (or DepthwiseConv2D) -> BatchNorm -> activation: the conv unit of the package.

    One unit for the DeepLab heads and backbones and for the Auto-DeepLab
    operators (`auto_deeplab_ops.NASConvBN` is this unit with the NAS options), as
    the original DeepLab served both with one slim conv under an arg scope.

    Args:
      filters: output channels (ignored when `depthwise`).
      kernel_size: int or (h, w).
      strides: int.
      rate: atrous rate, int or (r_h, r_w).
      depthwise: depthwise conv (depth multiplier 1) instead of a full conv.
      use_bn: batch norm after the conv.
      activation: None, "relu" or "relu6".
      bn_momentum, bn_epsilon: batch-norm decay and epsilon.
      explicit_padding: pad like DeepLab's `fixed_padding` / `conv2d_same`
        (symmetric, (k_eff - 1) // 2 before) and use VALID (for strided
        convs of Xception and of the NAS network); otherwise SAME padding.
      use_bias: a bias on the conv; None: exactly when there is no batch
        norm (DeepLab's heads).
      pre_activation: apply `activation` to the input, before the conv (the
        NAS cell's ReLU -> conv -> BN), instead of after the batch norm.
      kernel_initializer: the conv kernel's initializer (Keras's default;
        the NAS ops take slim's variance scaling, `auto_deeplab_ops.nas_initializer`).
    """

    # Degenerate atrous convs run on their live taps (module docstring).
    shortcuts = True

    def __init__(
        self,
        filters=None,
        kernel_size=1,
        strides=1,
        rate=1,
        depthwise=False,
        use_bn=True,
        activation="relu",
        bn_momentum=HEAD_BN_MOMENTUM,
        bn_epsilon=HEAD_BN_EPSILON,
        explicit_padding=False,
        use_bias=None,
        pre_activation=False,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"{self.name}: unknown activation {activation!r}")
        if not depthwise and filters is None:
            raise ValueError(f"{self.name}: a full conv needs `filters`")
        self.filters = None if filters is None else int(filters)
        self._kernel_size = _pair(kernel_size)
        self._rate = _pair(rate)
        self.kernel_size = self._kernel_size
        self.rate = self._rate
        self.strides = int(strides)
        self.depthwise = bool(depthwise)
        self.use_bn = bool(use_bn)
        self.activation = activation
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.explicit_padding = bool(explicit_padding)
        self.use_bias = None if use_bias is None else bool(use_bias)
        self.pre_activation = bool(pre_activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        conv_args = dict(
            kernel_size=self._kernel_size,
            strides=self.strides,
            dilation_rate=self._rate,
            padding="valid" if self.explicit_padding else "same",
            use_bias=not self.use_bn if self.use_bias is None else self.use_bias,
            name="depthwise_conv" if self.depthwise else "conv",
        )
        if self.depthwise:
            conv = (
                ShortcutDepthwiseConv2D
                if self.shortcuts
                else keras.layers.DepthwiseConv2D
            )
            self.conv = conv(depthwise_initializer=self.kernel_initializer, **conv_args)
        else:
            conv = ShortcutConv2D if self.shortcuts else keras.layers.Conv2D
            self.conv = conv(
                self.filters, kernel_initializer=self.kernel_initializer, **conv_args
            )
        self.bn = None
        if self.use_bn:
            self.bn = keras.layers.BatchNormalization(
                momentum=bn_momentum, epsilon=bn_epsilon, name="BatchNorm"
            )

    def build(self, input_shape):
        conv_shape = input_shape
        if self.explicit_padding:
            conv_shape = (input_shape[0], None, None, input_shape[-1])
        self.conv.build(conv_shape)
        if self.bn is not None:
            channels = input_shape[-1] if self.depthwise else self.filters
            self.bn.build((None, None, None, channels))

    def call(self, inputs, training=None):
        fn = _ACTIVATIONS[self.activation]
        x = inputs
        if self.pre_activation and fn is not None:
            x = fn(x)
        if self.explicit_padding:
            x = fixed_padding(x, self._kernel_size, self._rate)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        if not self.pre_activation and fn is not None:
            x = fn(x)
        return x

    def compute_output_shape(self, input_shape):
        if self.explicit_padding:
            padded = list(input_shape)
            for i, (k, r) in enumerate(zip(self._kernel_size, self._rate), start=1):
                if padded[i] is not None:
                    padded[i] += (k - 1) * r
            return tuple(self.conv.compute_output_shape(tuple(padded)))
        return tuple(self.conv.compute_output_shape(input_shape))


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class SeparableConvBN(ConfigLayer):
    """DeepLab's split separable conv: depthwise -> BN -> act -> 1x1 -> BN -> act.

    The paper's cell operation "3x3 atrous separable conv with rate r_h x r_w"
    (and ASPP's `aspp_with_separable_conv`, the decoder's convs, and Xception's
    units, which run with `activation=None` after a pre-activation ReLU).
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        rate=1,
        strides=1,
        activation="relu",
        bn_momentum=HEAD_BN_MOMENTUM,
        bn_epsilon=HEAD_BN_EPSILON,
        explicit_padding=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size)
        self.rate = _pair(rate)
        self.strides = int(strides)
        self.activation = activation
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.explicit_padding = bool(explicit_padding)
        bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
        self.depthwise = ConvBN(
            kernel_size=self.kernel_size,
            strides=self.strides,
            rate=self.rate,
            depthwise=True,
            activation=activation,
            explicit_padding=self.explicit_padding and self.strides > 1,
            name="depthwise",
            **bn,
        )
        self.pointwise = ConvBN(
            self.filters, 1, activation=activation, name="pointwise", **bn
        )

    def build(self, input_shape):
        self.depthwise.build(input_shape)
        self.pointwise.build((None, None, None, input_shape[-1]))

    def call(self, inputs, training=None):
        return self.pointwise(
            self.depthwise(inputs, training=training), training=training
        )

    def compute_output_shape(self, input_shape):
        shape = self.depthwise.compute_output_shape(input_shape)
        return tuple(shape[:-1]) + (self.filters,)


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class Logits(ConfigLayer):
    """DeepLab's `logits/semantic`: a 1x1 conv with bias, no BN, no activation.

    Initialised with a truncated normal of stddev 0.01 as DeepLab's
    `get_branch_logits`.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.semantic = keras.layers.Conv2D(
            self.num_classes,
            1,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
            name="semantic",
        )

    def build(self, input_shape):
        self.semantic.build(input_shape)

    def call(self, inputs):
        return self.semantic(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)
