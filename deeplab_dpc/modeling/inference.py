"""Single-, multi-scale and flipped inference shared by eval, vis and export.

As DeepLab's `predict_labels_multi_scale`: for each scale the image is resized
(bilinear, align_corners=True) to scale x size, the logits are resized back to
the input size, softmax probabilities are averaged over scales and, with
`add_flipped_images`, over left-right flips. The model must output logits at
its input size (`upsample_logits=True`, the default).

A scaled image is resized to DeepLab's `scale_dimension(n, s) =
int((n - 1) * s + 1)`, so that align_corners sizes stay aligned.
"""

import tensorflow as tf

from deeplab_dpc.core import common
from deeplab_dpc.layers.resize import resize_bilinear


def scale_dimension(size, scale):
    """DeepLab's scaled size: (size - 1) * scale + 1, for align_corners grids."""
    return tf.cast(tf.cast(size - 1, tf.float32) * scale + 1.0, tf.int32)


def _logits(model, images, training=False):
    outputs = model(images, training=training)
    return outputs[common.SEMANTIC_LOGITS] if isinstance(outputs, dict) else outputs


def _resize_to(logits, size):
    """Resizes logits to `size` unless they already have it (scale 1, upsampled)."""
    same = tf.reduce_all(tf.equal(tf.shape(logits)[1:3], size))
    return tf.cond(same, lambda: logits, lambda: resize_bilinear(logits, size))


def predict_probabilities(model, images, scales=(1.0,), add_flipped_images=False):
    """Average softmax probabilities [B, H, W, C] over scales (and flips)."""
    size = tf.shape(images)[1:3]
    total, count = None, 0
    for scale in scales:
        if float(scale) == 1.0:
            scaled = images
        else:
            scaled = resize_bilinear(images, scale_dimension(size, float(scale)))
        variants = (
            [scaled, tf.reverse(scaled, axis=[2])] if add_flipped_images else [scaled]
        )
        for flipped, batch in enumerate(variants):
            logits = _resize_to(_logits(model, batch), size)
            if flipped:
                logits = tf.reverse(logits, axis=[2])
            probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
            total = probs if total is None else total + probs
            count += 1
    return total / float(count)


def predict_labels(model, images, scales=(1.0,), add_flipped_images=False):
    """Argmax class ids [B, H, W] (int32) of `predict_probabilities`."""
    probs = predict_probabilities(model, images, scales, add_flipped_images)
    return tf.argmax(probs, axis=-1, output_type=tf.int32)
