"""DeepLab preprocessing as pure functions on one example.

Follows DeepLab's `input_preprocess.preprocess_image_and_label` and
`core/preprocess_utils.py`: decode, optional resize to range, random scale in
[min_scale_factor, max_scale_factor] by `scale_factor_step_size` (training),
pad bottom/right to the crop size with the mean pixel (image) and the ignore
label (label), random crop and random left-right flip (training), then
normalise with x / 127.5 - 1.

Deviations from DeepLab:
- Randomness is stateless: every random step takes an explicit `seed` (a
  shape-[2] integer tensor), so a seeded pipeline is reproducible even with
  parallel map calls. `seed=None` draws a fresh seed.
- Resizing uses TF2's `tf.image.resize` (half-pixel centres) instead of TF1's
  `align_corners=True`; image (bilinear) and label (nearest) use the same
  convention, so they stay aligned.
- Evaluation keeps whole images and pads them bottom/right to the smallest
  `k * 32 + 1` at least as large (`eval_pad_size`), instead of a fixed eval
  crop size that the user has to guess; HEIGHT/WIDTH give the size before
  padding so predictions can be cropped back.
"""

import tensorflow as tf

from deeplab_dpc.core import common

_FEATURES = {
    common.KEY_IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    common.KEY_IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
    common.KEY_IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="jpeg"),
    common.KEY_IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    common.KEY_IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    common.KEY_LABEL_ENCODED: tf.io.FixedLenFeature([], tf.string, default_value=""),
    common.KEY_LABEL_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="png"),
}


def normalize_image(image):
    """DeepLab's input normalisation: [0, 255] -> [-1, 1]."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def eval_pad_size(height, width, multiple=common.PAD_MULTIPLE):
    """Smallest `k * multiple + 1` >= each side (DeepLab's 513/769-style sizes)."""

    def pad(size):
        return ((size - 1 + multiple - 1) // multiple) * multiple + 1

    return pad(height), pad(width)


def _check_decoded(image, label, header_h, header_w):
    shape = tf.shape(image)
    checks = [
        tf.debugging.assert_equal(
            tf.shape(label)[2], 1, message="label is not single-channel"
        ),
        tf.debugging.assert_equal(
            tf.shape(label)[:2], shape[:2], message="label size differs from image size"
        ),
        tf.debugging.assert_equal(
            tf.logical_or(
                tf.equal(header_h, 0), tf.equal(header_h, tf.cast(shape[0], tf.int64))
            ),
            True,
            message="image/height differs from the decoded image",
        ),
        tf.debugging.assert_equal(
            tf.logical_or(
                tf.equal(header_w, 0), tf.equal(header_w, tf.cast(shape[1], tf.int64))
            ),
            True,
            message="image/width differs from the decoded image",
        ),
    ]
    return checks


def decode_example(
    serialized, ignore_label=common.DEFAULT_IGNORE_LABEL, num_classes=None
):
    """Parses one serialized Example into a sample dict (image uint8 [H, W, 3]).

    An image without a label (a test split) gets a label full of `ignore_label`.
    Raises `InvalidArgumentError` for an undecodable image or label, a label
    that is not single-channel or whose size differs from the image, and,
    with `num_classes` given, a label pixel neither in [0, num_classes) nor
    `ignore_label`.
    """
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    image = tf.io.decode_image(
        parsed[common.KEY_IMAGE_ENCODED], channels=3, expand_animations=False
    )
    image.set_shape([None, None, 3])
    shape = tf.shape(image)
    label_bytes = parsed[common.KEY_LABEL_ENCODED]
    label = tf.cond(
        tf.strings.length(label_bytes) > 0,
        lambda: tf.io.decode_png(label_bytes, channels=0),
        lambda: tf.fill([shape[0], shape[1], 1], tf.cast(ignore_label, tf.uint8)),
    )
    label.set_shape([None, None, None])
    checks = _check_decoded(
        image, label, parsed[common.KEY_IMAGE_HEIGHT], parsed[common.KEY_IMAGE_WIDTH]
    )
    if num_classes is not None:
        in_range = tf.logical_or(
            tf.less(tf.cast(label, tf.int32), num_classes),
            tf.equal(tf.cast(label, tf.int32), ignore_label),
        )
        checks.append(
            tf.debugging.assert_equal(
                tf.reduce_all(in_range),
                True,
                message="label has class ids outside [0, num_classes)",
            )
        )
    with tf.control_dependencies(checks):
        label = tf.identity(label)
    label.set_shape([None, None, 1])
    return {
        common.IMAGE: image,  # uint8 until preprocessing: 4x less buffer memory
        common.LABEL: tf.cast(label, tf.int32),
        common.IMAGE_NAME: parsed[common.KEY_IMAGE_FILENAME],
        common.HEIGHT: shape[0],
        common.WIDTH: shape[1],
    }


def _resize_pair(image, label, new_h, new_w):
    size = tf.stack([new_h, new_w])
    image = tf.image.resize(image, size, method="bilinear")
    if label is not None:
        label = tf.image.resize(label, size, method="nearest")
        label = tf.cast(label, tf.int32)
    return image, label


def resize_to_range(image, label=None, min_size=None, max_size=None):
    """DeepLab's resize_to_range: shorter side to `min_size`, longer side <= `max_size`."""
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32)
    w = tf.cast(shape[1], tf.float32)
    scale = tf.constant(1.0)
    if min_size is not None:
        scale = float(min_size) / tf.minimum(h, w)
    if max_size is not None:
        scale = tf.minimum(scale, float(max_size) / tf.maximum(h, w))
    new_h = tf.cast(tf.round(h * scale), tf.int32)
    new_w = tf.cast(tf.round(w * scale), tf.int32)
    return _resize_pair(image, label, tf.maximum(new_h, 1), tf.maximum(new_w, 1))


def _fresh_seed(seed):
    if seed is None:
        return tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)
    return tf.cast(seed, tf.int32)


def get_random_scale(min_scale_factor, max_scale_factor, step_size, seed=None):
    """A scale from [min, max]: uniform when `step_size` is 0, else on the step grid."""
    if min_scale_factor > max_scale_factor:
        raise ValueError(
            f"min_scale_factor {min_scale_factor} > max_scale_factor {max_scale_factor}"
        )
    if min_scale_factor == max_scale_factor:
        return tf.constant(float(min_scale_factor))
    seed = _fresh_seed(seed)
    if step_size == 0:
        return tf.random.stateless_uniform(
            [], seed, minval=min_scale_factor, maxval=max_scale_factor
        )
    num_steps = int(round((max_scale_factor - min_scale_factor) / step_size)) + 1
    factors = tf.linspace(float(min_scale_factor), float(max_scale_factor), num_steps)
    index = tf.random.stateless_uniform([], seed, maxval=num_steps, dtype=tf.int32)
    return tf.gather(factors, index)


def random_scale(
    image,
    label=None,
    min_scale_factor=0.5,
    max_scale_factor=2.0,
    step_size=0.25,
    seed=None,
):
    """Rescales image (bilinear) and label (nearest) by one random factor."""
    scale = get_random_scale(min_scale_factor, max_scale_factor, step_size, seed)
    shape = tf.shape(image)
    new_h = tf.cast(tf.floor(tf.cast(shape[0], tf.float32) * scale), tf.int32)
    new_w = tf.cast(tf.floor(tf.cast(shape[1], tf.float32) * scale), tf.int32)
    return _resize_pair(image, label, tf.maximum(new_h, 1), tf.maximum(new_w, 1))


def pad_to_size(
    image,
    label=None,
    target_height=None,
    target_width=None,
    ignore_label=common.DEFAULT_IGNORE_LABEL,
    mean_pixel=common.MEAN_PIXEL,
):
    """Pads bottom/right to at least the target size: mean pixel / ignore label."""
    shape = tf.shape(image)
    pad_h = tf.maximum(target_height - shape[0], 0)
    pad_w = tf.maximum(target_width - shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    mean = tf.constant(mean_pixel, tf.float32)
    image = tf.pad(tf.cast(image, tf.float32) - mean, paddings) + mean
    if label is not None:
        label = tf.pad(
            label, paddings, constant_values=tf.cast(ignore_label, label.dtype)
        )
    return image, label


def random_crop(image, label=None, crop_height=None, crop_width=None, seed=None):
    """Crops image and label at the same random offset; they must be large enough."""
    seed = _fresh_seed(seed)
    shape = tf.shape(image)
    checks = [
        tf.debugging.assert_greater_equal(
            shape[0], crop_height, message="image shorter than the crop; pad first"
        ),
        tf.debugging.assert_greater_equal(
            shape[1], crop_width, message="image narrower than the crop; pad first"
        ),
    ]
    with tf.control_dependencies(checks):
        offset = tf.random.stateless_uniform(
            [2], seed, maxval=tf.int32.max, dtype=tf.int32
        ) % (tf.stack([shape[0] - crop_height, shape[1] - crop_width]) + 1)
    image = tf.slice(image, [offset[0], offset[1], 0], [crop_height, crop_width, -1])
    if label is not None:
        label = tf.slice(
            label, [offset[0], offset[1], 0], [crop_height, crop_width, -1]
        )
    return image, label


def random_flip(image, label=None, seed=None, prob=0.5):
    """Flips image and label left-right together with probability `prob`."""
    seed = _fresh_seed(seed)
    flip = tf.random.stateless_uniform([], seed) < prob

    def maybe_flip(x):
        return tf.cond(flip, lambda: tf.reverse(x, axis=[1]), lambda: x)

    image = maybe_flip(image)
    if label is not None:
        label = maybe_flip(label)
    return image, label


def preprocess_train(
    sample,
    crop_size,
    ignore_label=common.DEFAULT_IGNORE_LABEL,
    min_resize_value=None,
    max_resize_value=None,
    min_scale_factor=0.5,
    max_scale_factor=2.0,
    scale_factor_step_size=0.25,
    seed=None,
    mean_pixel=common.MEAN_PIXEL,
):
    """Training augmentation of one decoded sample to a fixed `crop_size` (h, w)."""
    crop_h, crop_w = (int(v) for v in crop_size)
    scale_seed, crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(_fresh_seed(seed), 3)
    )
    image, label = sample[common.IMAGE], sample[common.LABEL]
    if min_resize_value is not None or max_resize_value is not None:
        image, label = resize_to_range(image, label, min_resize_value, max_resize_value)
    if not min_scale_factor == max_scale_factor == 1.0:  # scale 1: skip the resize
        image, label = random_scale(
            image, label, min_scale_factor, max_scale_factor, scale_factor_step_size,
            scale_seed,
        )  # fmt: skip
    image, label = pad_to_size(image, label, crop_h, crop_w, ignore_label, mean_pixel)
    image, label = random_crop(image, label, crop_h, crop_w, crop_seed)
    image, label = random_flip(image, label, flip_seed)
    image = tf.ensure_shape(image, [crop_h, crop_w, 3])
    label = tf.ensure_shape(label, [crop_h, crop_w, 1])
    return {
        common.IMAGE: normalize_image(image),
        common.LABEL: tf.cast(label, tf.int32),
        common.IMAGE_NAME: sample[common.IMAGE_NAME],
        common.HEIGHT: sample[common.HEIGHT],
        common.WIDTH: sample[common.WIDTH],
    }


def preprocess_eval(
    sample,
    ignore_label=common.DEFAULT_IGNORE_LABEL,
    min_resize_value=None,
    max_resize_value=None,
    pad_multiple=common.PAD_MULTIPLE,
    mean_pixel=common.MEAN_PIXEL,
    include_original_image=False,
):
    """Whole-image evaluation: optional resize to range, then pad to `eval_pad_size`.

    HEIGHT/WIDTH are the size before padding (after the optional resize), so a
    caller crops predictions back with `pred[:height, :width]`.
    """
    image, label = sample[common.IMAGE], sample[common.LABEL]
    if min_resize_value is not None or max_resize_value is not None:
        image, label = resize_to_range(image, label, min_resize_value, max_resize_value)
    shape = tf.shape(image)
    target_h, target_w = eval_pad_size(shape[0], shape[1], pad_multiple)
    padded, label = pad_to_size(
        image, label, target_h, target_w, ignore_label, mean_pixel
    )
    out = {
        common.IMAGE: normalize_image(padded),
        common.LABEL: tf.cast(label, tf.int32),
        common.IMAGE_NAME: sample[common.IMAGE_NAME],
        common.HEIGHT: shape[0],
        common.WIDTH: shape[1],
    }
    if include_original_image:
        out[common.ORIGINAL_IMAGE] = padded
    return out
