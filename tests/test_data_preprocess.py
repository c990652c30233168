"""Each DeepLab preprocessing step on one example: values, sizes, alignment."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.core import common
from deeplab_dpc.data import preprocess, records

IGNORE = 255
COLOR_STEP = 40  # image value = label * COLOR_STEP in every channel


def block_pair(height=48, width=64, block=8, seed=0):
    """Image whose colour encodes the label, in blocks, so alignment is checkable."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 5, size=(-(-height // block), -(-width // block)))
    label = np.kron(coarse, np.ones((block, block), np.int64))[:height, :width]
    image = np.repeat((label * COLOR_STEP)[..., None], 3, axis=-1).astype(np.float32)
    return tf.constant(image), tf.constant(label[..., None].astype(np.int32))


def sample_of(image, label, name="x"):
    shape = tf.shape(image)
    return {
        common.IMAGE: image,
        common.LABEL: label,
        common.IMAGE_NAME: tf.constant(name),
        common.HEIGHT: shape[0],
        common.WIDTH: shape[1],
    }


def assert_aligned(image, label, min_fraction=0.97):
    """Where the label is known, the image colour must say the same class."""
    image = np.asarray(image)
    label = np.asarray(label)[..., 0]
    known = label != IGNORE
    decoded = np.rint(image[..., 0] / COLOR_STEP).astype(np.int64)
    agree = (decoded == label)[known].mean()
    assert agree >= min_fraction, f"only {agree:.3f} of labelled pixels agree"


def test_normalize_image_maps_0_255_to_minus1_1():
    x = tf.constant([0.0, 127.5, 255.0])
    np.testing.assert_allclose(preprocess.normalize_image(x), [-1.0, 0.0, 1.0])


@pytest.mark.parametrize(
    "size, padded",
    [(1, 1), (32, 33), (33, 33), (34, 65), (360, 385), (480, 481), (513, 513)],
)
def test_eval_pad_size_is_smallest_k32_plus_1(size, padded):
    assert preprocess.eval_pad_size(size, size) == (padded, padded)
    assert preprocess.eval_pad_size(size, 1, multiple=16)[1] == 1


def test_pad_to_size_uses_mean_pixel_and_ignore_label():
    image, label = block_pair(10, 12)
    mean = (10.0, 20.0, 30.0)
    padded, padded_label = preprocess.pad_to_size(image, label, 17, 15, IGNORE, mean)
    assert padded.shape == (17, 15, 3) and padded_label.shape == (17, 15, 1)
    np.testing.assert_array_equal(padded[:10, :12], image)
    np.testing.assert_array_equal(padded_label[:10, :12], label)
    np.testing.assert_allclose(padded[10:, :, :], np.broadcast_to(mean, (7, 15, 3)))
    np.testing.assert_allclose(padded[:, 12:, :], np.broadcast_to(mean, (17, 3, 3)))
    assert np.all(padded_label.numpy()[10:] == IGNORE)
    assert np.all(padded_label.numpy()[:, 12:] == IGNORE)


def test_pad_to_size_never_shrinks():
    image, label = block_pair(20, 20)
    padded, padded_label = preprocess.pad_to_size(image, label, 8, 8)
    assert padded.shape == (20, 20, 3) and padded_label.shape == (20, 20, 1)


def test_random_scale_picks_factors_on_the_step_grid():
    image, label = block_pair(40, 40)
    sizes = set()
    for i in range(40):
        scaled, scaled_label = preprocess.random_scale(
            image, label, 0.5, 2.0, 0.25, seed=[i, 7]
        )
        assert scaled.shape[:2] == scaled_label.shape[:2]
        sizes.add(scaled.shape[0])
    assert sizes <= {20, 30, 40, 50, 60, 70, 80}
    assert len(sizes) >= 4


def test_random_scale_fixed_factor_and_uniform():
    image, label = block_pair(40, 40)
    scaled, _ = preprocess.random_scale(image, label, 1.5, 1.5, 0.25, seed=[1, 2])
    assert scaled.shape[:2] == (60, 60)
    scale = preprocess.get_random_scale(0.5, 2.0, 0, seed=[3, 4])
    assert 0.5 <= float(scale) <= 2.0
    with pytest.raises(ValueError, match="min_scale_factor"):
        preprocess.get_random_scale(2.0, 0.5, 0.25)


@pytest.mark.parametrize("seed", range(6))
def test_random_scale_keeps_label_aligned(seed):
    image, label = block_pair(48, 64, seed=seed)
    scaled, scaled_label = preprocess.random_scale(
        image, label, 0.5, 2.0, 0.25, seed=[seed, 1]
    )
    assert scaled_label.dtype == tf.int32
    assert set(np.unique(scaled_label)) <= set(np.unique(label))  # nearest: no new ids
    assert_aligned(
        scaled, scaled_label, min_fraction=0.85
    )  # bilinear blurs block edges


def test_random_crop_same_window_for_image_and_label():
    image, label = block_pair(48, 64, block=1)  # every pixel its own class pattern
    offsets = set()
    for i in range(20):
        crop, crop_label = preprocess.random_crop(image, label, 16, 24, seed=[i, 0])
        assert crop.shape == (16, 24, 3) and crop_label.shape == (16, 24, 1)
        assert_aligned(crop, crop_label, min_fraction=1.0)
        # Locate the crop in the original label to check it is a true window.
        full = label.numpy()[..., 0]
        target = crop_label.numpy()[..., 0]
        hits = [
            (y, x)
            for y in range(48 - 16 + 1)
            for x in range(64 - 24 + 1)
            if np.array_equal(full[y : y + 16, x : x + 24], target)
        ]
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 3


def test_random_crop_rejects_too_small_images():
    image, label = block_pair(10, 10)
    with pytest.raises(tf.errors.InvalidArgumentError, match="pad first"):
        preprocess.random_crop(image, label, 12, 8, seed=[0, 0])


def test_random_flip_flips_both_or_neither():
    image, label = block_pair(16, 16, block=2)
    flipped_any = unflipped_any = False
    for i in range(16):
        out, out_label = preprocess.random_flip(image, label, seed=[i, 3])
        assert_aligned(out, out_label, min_fraction=1.0)
        if np.array_equal(out_label, label):
            unflipped_any = True
        else:
            np.testing.assert_array_equal(out_label, label[:, ::-1])
            flipped_any = True
    assert flipped_any and unflipped_any


@pytest.mark.parametrize("seed", range(8))
def test_preprocess_train_keeps_image_and_label_aligned(seed):
    image, label = block_pair(40, 56, seed=seed)
    out = preprocess.preprocess_train(
        sample_of(image, label), (48, 48), IGNORE, seed=[seed, 9]
    )
    assert out[common.IMAGE].shape == (48, 48, 3)
    assert out[common.LABEL].shape == (48, 48, 1)
    assert out[common.IMAGE].dtype == tf.float32 and out[common.LABEL].dtype == tf.int32
    assert -1.0 <= float(tf.reduce_min(out[common.IMAGE]))
    assert float(tf.reduce_max(out[common.IMAGE])) <= 1.0
    restored = (out[common.IMAGE] + 1.0) * 127.5
    assert_aligned(restored, out[common.LABEL], min_fraction=0.85)
    # Padded pixels: ignore label and the mean pixel (0 after normalisation).
    padded = out[common.LABEL].numpy()[..., 0] == IGNORE
    np.testing.assert_allclose(out[common.IMAGE].numpy()[padded], 0.0, atol=1e-5)
    assert int(out[common.HEIGHT]) == 40 and int(out[common.WIDTH]) == 56


def test_preprocess_train_same_seed_same_output():
    image, label = block_pair(40, 56)
    a = preprocess.preprocess_train(sample_of(image, label), (32, 32), seed=[5, 5])
    b = preprocess.preprocess_train(sample_of(image, label), (32, 32), seed=[5, 5])
    np.testing.assert_array_equal(a[common.IMAGE], b[common.IMAGE])
    np.testing.assert_array_equal(a[common.LABEL], b[common.LABEL])


def test_preprocess_train_resize_to_range():
    image, label = block_pair(40, 80)
    resized, resized_label = preprocess.resize_to_range(
        image, label, min_size=20, max_size=30
    )
    assert resized.shape[:2] == (15, 30) and resized_label.shape[:2] == (15, 30)
    resized, _ = preprocess.resize_to_range(image, None, min_size=60)
    assert resized.shape[:2] == (60, 120)


def test_preprocess_eval_pads_whole_image_and_reports_size():
    image, label = block_pair(40, 70)
    out = preprocess.preprocess_eval(
        sample_of(image, label), IGNORE, include_original_image=True
    )
    assert out[common.IMAGE].shape == (65, 97, 3)
    assert out[common.LABEL].shape == (65, 97, 1)
    assert int(out[common.HEIGHT]) == 40 and int(out[common.WIDTH]) == 70
    np.testing.assert_allclose(
        out[common.IMAGE][:40, :70], image / 127.5 - 1.0, atol=1e-6
    )
    np.testing.assert_array_equal(out[common.LABEL][:40, :70], label)
    assert np.all(out[common.LABEL].numpy()[40:] == IGNORE)
    np.testing.assert_allclose(out[common.IMAGE].numpy()[:, 70:], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[common.ORIGINAL_IMAGE][:40, :70], image)


def _encode(image, label=None, fmt="png"):
    image = np.asarray(image, np.uint8)
    encoded = (
        records.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image).numpy()
    )
    label_png = (
        None if label is None else records.encode_png(np.asarray(label, np.uint8))
    )
    example = records.make_example(
        encoded, fmt, "img", image.shape[0], image.shape[1], label_png
    )
    return example.SerializeToString()


def test_decode_example_round_trip_png():
    image, label = block_pair(20, 30)
    sample = preprocess.decode_example(_encode(image, label))
    np.testing.assert_array_equal(sample[common.IMAGE], image)
    np.testing.assert_array_equal(sample[common.LABEL], label)
    assert sample[common.IMAGE_NAME].numpy() == b"img"
    assert (int(sample[common.HEIGHT]), int(sample[common.WIDTH])) == (20, 30)


def test_decode_example_without_label_is_all_ignore():
    image, _ = block_pair(20, 30)
    sample = preprocess.decode_example(_encode(image, None, fmt="jpeg"), ignore_label=7)
    assert sample[common.LABEL].shape == (20, 30, 1)
    assert np.all(sample[common.LABEL].numpy() == 7)


def test_decode_example_rejects_mismatched_label():
    image, label = block_pair(20, 30)
    with pytest.raises(tf.errors.InvalidArgumentError, match="label size differs"):
        preprocess.decode_example(_encode(image, label[:10]))
    rgb_label = records.make_example(
        records.encode_png(np.asarray(image, np.uint8)), "png", "x", 20, 30,
        records.encode_png(np.asarray(image, np.uint8)),
    ).SerializeToString()  # fmt: skip
    with pytest.raises(tf.errors.InvalidArgumentError, match="single-channel"):
        preprocess.decode_example(rgb_label)
