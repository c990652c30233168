"""The eight operators of the Auto-DeepLab cell (Liu et al., CVPR 2019, Sec. 3.1).

Each operator is built as the official DeepLab's NASBaseCell builds it
(`research/deeplab/core/nas_cell.py`, `_apply_conv_operation`), so a found
network has the official parameter counts:

* ``separable_kxk_2``: twice ReLU -> depthwise kxk (stride on the first) ->
  pointwise 1x1 -> BN (NASNet's stacked separable conv; slim's
  `separable_conv2d` has no BN between depthwise and pointwise);
* ``atrous_kxk``: ReLU -> kxk conv with rate 2 -> BN; with stride 2 it is
  ReLU -> resize to half size (align_corners) -> kxk conv with rate 1 -> BN
  (the ReLU comes *before* the resize, as in every official revision; the two
  orders agree only on sizes 32k + 1, where the resize samples pixels);
* ``avg_pool_3x3`` / ``max_pool_3x3``: 3x3 pooling, SAME (strided as the
  cell asks), then 1x1 conv + BN only if the channels differ;
* ``none`` (the official name of the skip connection): identity, or ReLU ->
  1x1 conv (strided) -> BN when the stride or the channels differ;
* ``zero`` (no connection, search only): contributes nothing; a mixed
  operator simply leaves it out of the sum.

Padding: a conv with stride 2 and a kernel larger than 1x1 (the stem's
``conv0`` and ``conv2``, the first depthwise of a strided separable op)
pads explicitly and symmetrically by (k_eff - 1) // 2 before and
k_eff - 1 - (k_eff - 1) // 2 after, then runs VALID, as the last revision of
the official code does (`resnet_utils.conv2d_same` in `nas_network.py`'s
stem, `xception.separable_conv2d_same` in `nas_cell.py`; the first
revisions padded SAME, which on even sizes pads one pixel less before than
after, so the window positions differ by one pixel). We follow the last
revision: it is the code a user of the official release runs today, and its
padding does not depend on the parity of the size. Stride 1 and 1x1 convs
are SAME as in every revision (the same windows either way).

Weight decay: DeepLab's `nas_arg_scope` regularizes `slim.separable_conv2d`
and the last `nas_cell.py` asks for `regularize_depthwise=True`, so the
depthwise kernels of these operators are decayed too
(`training.losses.decayed_kernels` asks `decays_depthwise`).

Convs have no bias and the official initializer (variance scaling 1/3,
fan-in, uniform); batch norm decay 0.9997 and epsilon 1e-3 (`nas_arg_scope`).
The unit is `layers.conv.ConvBN` with these options (`NASConvBN`), as the
official code ran one slim conv under `nas_arg_scope`.
"""

import keras
import tensorflow as tf

from deeplab_dpc.formats import auto_deeplab_spec as nas_spec
from deeplab_dpc.layers.base import ConfigLayer
from deeplab_dpc.layers.conv import ConvBN
from deeplab_dpc.layers.resize import resize_bilinear

NAS_BN_MOMENTUM = 0.9997
NAS_BN_EPSILON = 1e-3


def nas_initializer():
    """The official NAS weights initializer (slim variance_scaling 1/3, FAN_IN, uniform)."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def scale_dimension(dim, scale):
    """DeepLab's `scale_dimension`: (dim - 1) * scale + 1 (align-corners sizes)."""
    return tf.cast((tf.cast(dim, tf.float32) - 1.0) * scale + 1.0, tf.int32)


def scale_resize(x, scale):
    """Bilinear resize (align_corners) of NHWC `x` by `scale`, as the official cell."""
    shape = tf.shape(x)
    return resize_bilinear(
        x,
        tf.stack([scale_dimension(shape[1], scale), scale_dimension(shape[2], scale)]),
    )


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class NASConvBN(ConvBN):
    """[ReLU ->] conv (full or depthwise, no bias) [-> BN]: one conv unit of the NAS cell.

    `layers.conv.ConvBN` with the NAS options: ReLU before the conv
    (`pre_activation`), no bias, the official initializer, batch norm
    epsilon 1e-3; strided with a kernel larger than 1: explicit symmetric
    padding, then VALID (DeepLab's `conv2d_same`), otherwise SAME. The
    variables are ConvBN's (`conv` or `depthwise_conv`, `BatchNorm`); the
    config keeps this unit's own arguments (int kernel size and rate).
    """

    # The depthwise kernels of the NAS cell are weight-decayed (DeepLab's
    # `regularize_depthwise=True` for the NAS separable convs).
    decays_depthwise = True
    # Plain convs, as the official NAS cell (no dead-tap shortcut).
    shortcuts = False

    def __init__(
        self,
        filters=None,
        kernel_size=1,
        strides=1,
        rate=1,
        depthwise=False,
        pre_activation=True,
        use_bn=True,
        bn_momentum=NAS_BN_MOMENTUM,
        bn_epsilon=NAS_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(
            filters,
            kernel_size,
            strides,
            rate,
            depthwise,
            use_bn=use_bn,
            activation="relu" if pre_activation else None,
            bn_momentum=bn_momentum,
            bn_epsilon=bn_epsilon,
            explicit_padding=int(strides) > 1 and int(kernel_size) > 1,
            use_bias=False,
            pre_activation=pre_activation,
            kernel_initializer=nas_initializer(),
            **kwargs,
        )
        self.kernel_size = int(kernel_size)
        self.rate = int(rate)


class _NASOp(ConfigLayer):
    """Common arguments of the operators: output filters, stride, batch norm.

    Each operator lists them in its own signature (they are its config).
    """

    def __init__(self, filters, strides, bn_momentum, bn_epsilon, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        if self.strides not in (1, 2):
            raise ValueError(f"{self.name}: strides must be 1 or 2, got {strides}")
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self._bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.strides, self.filters)


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class NASSeparable(_NASOp):
    """``separable_kxk_N``: N x (ReLU -> depthwise kxk -> pointwise 1x1 -> BN)."""

    def __init__(
        self,
        filters,
        kernel_size=3,
        num_layers=2,
        strides=1,
        bn_momentum=NAS_BN_MOMENTUM,
        bn_epsilon=NAS_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(filters, strides, bn_momentum, bn_epsilon, **kwargs)
        self.kernel_size = int(kernel_size)
        self.num_layers = int(num_layers)
        self.units = []
        k = self.kernel_size
        for i in range(1, self.num_layers + 1):
            depthwise = NASConvBN(
                kernel_size=k,
                strides=self.strides if i == 1 else 1,
                depthwise=True,
                use_bn=False,
                name=f"separable_{k}x{k}_{i}_depthwise",
                **self._bn,
            )
            pointwise = NASConvBN(
                self.filters,
                1,
                pre_activation=False,
                name=f"separable_{k}x{k}_{i}_pointwise",
                **self._bn,
            )
            self.units += [depthwise, pointwise]
        for unit in self.units:  # tracked by name for tf.train.Checkpoint
            setattr(self, unit.name, unit)

    def build(self, input_shape):
        channels = input_shape[-1]
        for unit in self.units:
            unit.build((None, None, None, channels))
            if not unit.depthwise:
                channels = self.filters

    def call(self, inputs, training=None):
        x = inputs
        for unit in self.units:
            x = unit(x, training=training)
        return x


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class NASAtrous(_NASOp):
    """``atrous_kxk``: ReLU -> kxk conv rate 2 -> BN.

    Stride 2: ReLU -> half-size resize -> kxk conv rate 1 -> BN. The ReLU is
    applied before the resize as the official `_apply_conv_operation` does
    (the conv unit then has no pre-activation of its own; its variables are
    the same either way, so checkpoints from before this order still load,
    with other numbers on sizes other than 32k + 1).
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        bn_momentum=NAS_BN_MOMENTUM,
        bn_epsilon=NAS_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(filters, strides, bn_momentum, bn_epsilon, **kwargs)
        self.kernel_size = int(kernel_size)
        k = self.kernel_size
        self.unit = NASConvBN(
            self.filters,
            k,
            rate=1 if self.strides == 2 else 2,
            pre_activation=self.strides == 1,
            name=f"atrous_{k}x{k}",
            **self._bn,
        )

    def build(self, input_shape):
        self.unit.build((None, None, None, input_shape[-1]))

    def call(self, inputs, training=None):
        x = inputs
        if self.strides == 2:
            x = scale_resize(tf.nn.relu(x), 0.5)
        return self.unit(x, training=training)


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class NASPool(_NASOp):
    """``avg_pool_3x3`` / ``max_pool_3x3``, then 1x1 conv + BN if the channels differ."""

    def __init__(
        self,
        filters,
        pooling="avg",
        pool_size=3,
        strides=1,
        bn_momentum=NAS_BN_MOMENTUM,
        bn_epsilon=NAS_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(filters, strides, bn_momentum, bn_epsilon, **kwargs)
        if pooling not in ("avg", "max"):
            raise ValueError(
                f"{self.name}: pooling must be 'avg' or 'max', got {pooling!r}"
            )
        self.pooling = pooling
        self.pool_size = int(pool_size)
        cls = (
            keras.layers.AveragePooling2D
            if pooling == "avg"
            else keras.layers.MaxPooling2D
        )
        self.pool = cls(
            self.pool_size, strides=self.strides, padding="same", name="pool"
        )
        self.projection = None

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            self.projection = NASConvBN(
                self.filters, 1, pre_activation=False, name="1x1", **self._bn
            )
            self.projection.build((None, None, None, input_shape[-1]))

    def call(self, inputs, training=None):
        x = self.pool(inputs)
        if self.projection is not None:
            x = self.projection(x, training=training)
        return x


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class NASSkip(_NASOp):
    """``none`` (skip connection): identity, or ReLU -> 1x1 (strided) -> BN if needed."""

    def __init__(
        self,
        filters,
        strides=1,
        bn_momentum=NAS_BN_MOMENTUM,
        bn_epsilon=NAS_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(filters, strides, bn_momentum, bn_epsilon, **kwargs)
        self.projection = None

    def build(self, input_shape):
        if self.strides > 1 or input_shape[-1] != self.filters:
            self.projection = NASConvBN(
                self.filters, 1, strides=self.strides, name="1x1", **self._bn
            )
            self.projection.build((None, None, None, input_shape[-1]))

    def call(self, inputs, training=None):
        if self.projection is None:
            return inputs
        return self.projection(inputs, training=training)


def _strided_shape(input_shape, strides, filters):
    def size(n):
        return None if n is None else -(-n // strides)

    return (input_shape[0], size(input_shape[1]), size(input_shape[2]), filters)


def build_op(op, filters, strides=1, name=None, **bn):
    """The layer of operator `op` (an official name of `nas_spec.SEARCH_OPS`).

    "zero" has no layer (it adds nothing); asking for it is an error.
    """
    kw = dict(strides=strides, name=name or op, **bn)
    if op == nas_spec.SEPARABLE_3X3:
        return NASSeparable(filters, 3, 2, **kw)
    if op == nas_spec.SEPARABLE_5X5:
        return NASSeparable(filters, 5, 2, **kw)
    if op == nas_spec.ATROUS_3X3:
        return NASAtrous(filters, 3, **kw)
    if op == nas_spec.ATROUS_5X5:
        return NASAtrous(filters, 5, **kw)
    if op == nas_spec.AVG_POOL_3X3:
        return NASPool(filters, "avg", 3, **kw)
    if op == nas_spec.MAX_POOL_3X3:
        return NASPool(filters, "max", 3, **kw)
    if op == nas_spec.SKIP:
        return NASSkip(filters, **kw)
    raise ValueError(
        f"unknown NAS operator {op!r} (one of {', '.join(nas_spec.ARCHITECTURE_OPS)};"
        " 'zero' has no layer)"
    )
