"""Average spatial pyramid pooling: the pooling operation of the DPC space.

The paper describes the operation as "average-pool the input into a
g_h x g_w grid, 1x1 conv, bilinear resize back to the input size; grid 1x1
is image-level pooling" (Chen et al. 2018, Sec. 3.1). What the official
DeepLab computes (`dense_prediction_cell.py`, the pyramid-pooling branch
and its `_get_pyramid_pooling_arguments`), and what a spec means here, is
a *sliding* average:

* kernel along an axis of n feature pixels: k = (n - 1) // g + 1 (DeepLab's
  `scale_dimension(crop, 1 / (output_stride * g))`, which is that number
  whenever the features have DeepLab's `scale_dimension(crop, 1 /
  output_stride)` pixels, i.e. always for a backbone with SAME strided
  convs: ceil(c / s) = (c - 1) // s + 1, and floors nest);
* stride 1, VALID: n - k + 1 window means along the axis;
* then 1x1 conv, BN, ReLU, and a bilinear resize (align_corners) back to n.

On a 33 x 33 map a 2 x 4 grid is a 17 x 9 kernel giving 17 x 25 window
means, not 2 x 4 bins. Grid 1 x 1 is a kernel as large as the map: the
global mean, DeepLab's image pooling.

The official code takes the kernel from the training crop size (a build-time
number, needed again at inference). Here it follows the feature map's size at
run time: the same number when the model is built for a known size, and a
correct one for any size when it is built with an unknown one (a static size
runs TensorFlow's average pool; an unknown one a summed-area table in float64,
the same window means).
"""

import keras
import tensorflow as tf

from deeplab_dpc.layers.base import ConfigLayer
from deeplab_dpc.layers.conv import HEAD_BN_EPSILON, HEAD_BN_MOMENTUM
from deeplab_dpc.layers.resize import resize_bilinear


def pooling_kernel(length, grid):
    """DeepLab's pyramid-pooling kernel along an axis of `length` features: (n - 1) // g + 1."""
    return (length - 1) // grid + 1


def _window_means(x, kh, kw):
    """Means of every kh x kw window of NHWC `x` (stride 1, VALID), any sizes at run time."""
    x64 = tf.cast(x, tf.float64)
    # Summed-area table with a zero row and column in front: table[i, j] is the
    # sum of x[:i, :j].
    table = tf.cumsum(tf.cumsum(x64, axis=1), axis=2)
    table = tf.pad(table, [[0, 0], [1, 0], [1, 0], [0, 0]])
    h, w = tf.shape(table)[1], tf.shape(table)[2]
    below, right = table[:, kh:, :, :], table[:, : h - kh, :, :]
    rows = below - right  # sums of kh rows, [N, H - kh + 1, W + 1, C]
    sums = rows[:, :, kw:, :] - rows[:, :, : w - kw, :]
    return tf.cast(sums / tf.cast(kh * kw, tf.float64), x.dtype)


def pyramid_average_pool(x, grid_size):
    """DeepLab's pyramid pooling of NHWC `x` for grid [g_h, g_w] (before the 1x1 conv).

    An average pool with kernel ((h - 1) // g_h + 1, (w - 1) // g_w + 1),
    stride 1, VALID; h and w are the map's sizes, static or known at run time.
    """
    g_h, g_w = grid_size
    h, w = x.shape[1], x.shape[2]
    if (g_h, g_w) == (1, 1):
        mean = tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2], keepdims=True)
        return tf.cast(mean, x.dtype)
    if h is not None and w is not None:
        kernel = [pooling_kernel(h, g_h), pooling_kernel(w, g_w)]
        return tf.nn.avg_pool2d(x, kernel, strides=1, padding="VALID")
    shape = tf.shape(x)
    return _window_means(
        x, pooling_kernel(shape[1], g_h), pooling_kernel(shape[2], g_w)
    )


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class PyramidPooling(ConfigLayer):
    """DeepLab's pyramid pooling -> 1x1 conv + BN + ReLU -> bilinear resize to the input size."""

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
        pooled = pyramid_average_pool(inputs, self.grid_size)
        y = tf.nn.relu(self.bn(self.conv(pooled), training=training))
        return resize_bilinear(y, tf.shape(inputs)[1:3])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)
