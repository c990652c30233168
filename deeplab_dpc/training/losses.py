"""Segmentation loss and weight decay, as DeepLab's `train_utils` computes them.

`softmax_cross_entropy` follows `add_softmax_cross_entropy_loss_for_each_scale`
of the original DeepLab: pixels whose label is the ignore label get weight 0,
the others weight 1 (or their class weight from `label_weights`), and the loss
is the weighted sum divided by the number of pixels with non-zero weight
(TF1's `SUM_BY_NONZERO_WEIGHTS`). With `upsample_logits=True` the logits are
bilinearly resized to the label size (align_corners=True); otherwise the labels
are resized to the logits size with nearest neighbour, as DeepLab does.

`weight_decay_loss` is slim's `l2_regularizer(weight_decay)` summed over conv
kernels: `weight_decay * sum(w**2) / 2`. As in DeepLab, batch-norm parameters
and biases are not decayed, nor are the depthwise kernels of the DPC head,
ASPP, decoder, Xception and MobileNetV2 (DeepLab's `regularize_depthwise=False`
there); the depthwise kernels of the NAS cells' separable ops are decayed
(the official `nas_arg_scope` puts its regularizer on `slim.separable_conv2d`
and `nas_cell.py` uses `regularize_depthwise=True`): a unit whose layer says
`decays_depthwise` has its depthwise kernel decayed.

Deviations from DeepLab:
- A label that is neither a class id nor the ignore label makes the loss NaN
  (DeepLab crashes on CPU and silently trains on garbage on GPU), so that the
  trainer's non-finite-loss check stops with a message that names labels.
- Under `tf.distribute` each replica's loss is divided by the number of
  replicas, so the summed gradient is the mean over replicas (DeepLab's clone
  losses are averaged the same way).
"""

import keras
import tensorflow as tf
from tensorflow.python.util import deprecation

from deeplab_dpc.layers.resize import resize_bilinear
from deeplab_dpc.modeling import naming


def _resize_labels_nearest(labels, size):
    """Nearest-neighbour label resize with DeepLab's align_corners=True."""
    # The v1 op is the one with align_corners=True; TF's "is deprecated" line
    # about it (once per process, in every search trial's console) is noise.
    with deprecation.silence():
        return tf.compat.v1.image.resize_nearest_neighbor(
            labels, size, align_corners=True
        )


def pixel_weights(labels, num_classes, ignore_label, label_weights=None):
    """Per-pixel loss weights [B, H, W]: 0 for ignored pixels, else 1 or a class weight."""
    labels = tf.squeeze(labels, axis=-1)
    valid = tf.not_equal(labels, ignore_label)
    if label_weights is None:
        weights = tf.ones_like(labels, tf.float32)
    else:
        table = tf.constant(label_weights, tf.float32)
        if table.shape[0] != num_classes:
            raise ValueError(
                f"label_weights: {table.shape[0]} weights for {num_classes} classes"
            )
        safe = tf.clip_by_value(labels, 0, num_classes - 1)
        weights = tf.gather(table, safe)
    return tf.where(valid, weights, 0.0)


def softmax_cross_entropy(
    logits,
    labels,
    num_classes,
    ignore_label,
    label_weights=None,
    upsample_logits=True,
):
    """Mean cross-entropy over pixels with non-zero weight; a scalar (float32).

    Args:
      logits: [B, h, w, C] (any float dtype; computed in float32).
      labels: int32 [B, H, W, 1].
      num_classes: C.
      ignore_label: label value excluded from the loss.
      label_weights: None or a list of C class weights.
      upsample_logits: resize logits to the label size (True) or labels to
        the logits size (False).
    """
    logits = tf.cast(logits, tf.float32)
    label_hw = tuple(labels.shape[1:3])
    same_size = tuple(logits.shape[1:3]) == label_hw and None not in label_hw
    if upsample_logits and not same_size:
        logits = resize_bilinear(logits, tf.shape(labels)[1:3])
    elif not upsample_logits:
        labels = _resize_labels_nearest(labels, tf.shape(logits)[1:3])
    weights = pixel_weights(labels, num_classes, ignore_label, label_weights)
    flat_labels = tf.squeeze(labels, axis=-1)
    valid = tf.not_equal(flat_labels, ignore_label)
    in_range = tf.logical_and(flat_labels >= 0, flat_labels < num_classes)
    bad = tf.reduce_any(tf.logical_and(valid, tf.logical_not(in_range)))
    safe_labels = tf.where(in_range, flat_labels, 0)
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=safe_labels, logits=logits
    )
    total = tf.reduce_sum(per_pixel * weights)
    count = tf.reduce_sum(tf.cast(weights > 0, tf.float32))
    loss = tf.math.divide_no_nan(total, count)
    return tf.where(bad, tf.constant(float("nan")), loss)


def decayed_kernels(model):
    """The conv kernels DeepLab decays: every Conv2D kernel, and the depthwise
    kernels of layers that say `decays_depthwise` (the NAS cells' units)."""
    kernels = []
    for unit in naming.iter_units(model):
        depthwise = isinstance(unit.conv, keras.layers.DepthwiseConv2D)
        if depthwise and not getattr(unit.layer, "decays_depthwise", False):
            continue
        kernels.append(unit.conv.kernel)
    return kernels


def weight_decay_loss(kernels, weight_decay):
    """slim's L2 regulariser: weight_decay * sum(w**2) / 2 over `kernels`."""
    if not weight_decay or not kernels:
        return tf.constant(0.0)
    return weight_decay * tf.add_n(
        [tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels]
    )
