"""Bilinear resizing with align_corners=True, as the original DeepLab does.

DeepLab resizes with `tf.image.resize_bilinear(..., align_corners=True)`, so
that sizes of the form k * output_stride + 1 (257, 513, 769) align exactly with
the feature grid. TF2's `tf.image.resize` dropped `align_corners`, so we call
the `ResizeBilinear` kernel directly (it also converts to TFLite as-is).
"""

import keras
import tensorflow as tf

from deeplab_dpc.layers.base import ConfigLayer


def resize_bilinear(images, size, align_corners=True):
    """Resizes NHWC `images` to `size` (a 2-vector, static or dynamic)."""
    dtype = images.dtype
    out = tf.raw_ops.ResizeBilinear(
        images=images,
        size=tf.cast(size, tf.int32),
        align_corners=align_corners,
        half_pixel_centers=False,
    )
    return tf.cast(out, dtype)


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class ResizeLike(ConfigLayer):
    """Resizes `inputs[0]` to the spatial size of `inputs[1]` (align_corners=True)."""

    def call(self, inputs):
        x, reference = inputs
        return resize_bilinear(x, tf.shape(reference)[1:3])

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])
