"""Average spatial pyramid pooling: the paper's pooling operation of the DPC space.

"Average-pool the input into a g_h x g_w grid, 1x1 conv, bilinear resize back
to the input size; grid 1x1 is image-level pooling" (Chen et al. 2018, Sec. 3.1).

Deviation from the original DeepLab: `dense_prediction_cell.py` computed a
fixed pooling kernel from the training crop size (and needed the crop size
again at inference). Here the grid is exact for the actual input size: bin i
along an axis of length n covers [floor(i * n / g), ceil((i + 1) * n / g)),
as adaptive average pooling does, so any input size works and nothing has to
be set after build. For grid 1x1 this is the global mean, identical to
DeepLab's image pooling.
"""

import keras
import tensorflow as tf

from deeplab_dpc.layers.conv import HEAD_BN_EPSILON, HEAD_BN_MOMENTUM
from deeplab_dpc.layers.resize import resize_bilinear


def _bin_edges(length, bins):
    """Start and end indices of `bins` adaptive bins over `length` (int32 tensors)."""
    i = tf.range(bins, dtype=tf.int32)
    start = (i * length) // bins
    end = ((i + 1) * length + bins - 1) // bins
    return start, end


def adaptive_average_pool(x, grid_size):
    """Averages NHWC `x` into a [g_h, g_w] grid of bins covering the whole input.

    Uses a summed-area table so the cost does not depend on the grid, in float32
    whatever the input dtype.
    """
    g_h, g_w = grid_size
    dtype = x.dtype
    x32 = tf.cast(x, tf.float32)
    if (g_h, g_w) == (1, 1):
        return tf.cast(tf.reduce_mean(x32, axis=[1, 2], keepdims=True), dtype)
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    table = tf.cumsum(tf.cumsum(x32, axis=1), axis=2)
    table = tf.pad(table, [[0, 0], [1, 0], [1, 0], [0, 0]])
    h0, h1 = _bin_edges(h, g_h)
    w0, w1 = _bin_edges(w, g_w)

    def corner(rows, cols):
        return tf.gather(tf.gather(table, rows, axis=1), cols, axis=2)

    sums = corner(h1, w1) - corner(h0, w1) - corner(h1, w0) + corner(h0, w0)
    area = tf.cast(h1 - h0, tf.float32)[:, None] * tf.cast(w1 - w0, tf.float32)[None]
    return tf.cast(sums / area[None, :, :, None], dtype)


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class PyramidPooling(keras.layers.Layer):
    """Pool into a grid -> 1x1 conv + BN + ReLU -> bilinear resize to the input size."""

    def __init__(
        self,
        filters=256,
        grid_size=(1, 1),
        bn_momentum=HEAD_BN_MOMENTUM,
        bn_epsilon=HEAD_BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.grid_size = tuple(int(g) for g in grid_size)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.conv = keras.layers.Conv2D(self.filters, 1, use_bias=False, name="conv")
        self.bn = keras.layers.BatchNormalization(
            momentum=bn_momentum, epsilon=bn_epsilon, name="BatchNorm"
        )

    def build(self, input_shape):
        self.conv.build((None, None, None, input_shape[-1]))
        self.bn.build((None, None, None, self.filters))

    def call(self, inputs, training=None):
        pooled = adaptive_average_pool(inputs, self.grid_size)
        y = tf.nn.relu(self.bn(self.conv(pooled), training=training))
        return resize_bilinear(y, tf.shape(inputs)[1:3])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            grid_size=list(self.grid_size),
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
        )
        return config
