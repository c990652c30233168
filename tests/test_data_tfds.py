"""The TFDS source, on TFDS's own mock data (`tfds.testing.mock_data`), no download."""

import numpy as np
import pytest
import tensorflow as tf

tfds = pytest.importorskip("tensorflow_datasets")

from deeplab_dpc.core import common  # noqa: E402
from deeplab_dpc.data import pipeline, registry, tfds_source  # noqa: E402

LABEL_IDS = np.array([[7, 8, 26, 0], [33, 23, 1, 24]], np.uint8)  # Cityscapes labelIds
TRAIN_IDS = np.array([[0, 1, 13, 255], [18, 10, 255, 11]], np.uint8)

TFDS = registry.DataSource(dataset_source="tfds")


def _tiled(array, reps):
    return np.tile(array, reps)


def cityscapes_examples(self, split, **kwargs):
    """Replaces the builder's `_as_dataset`: two small, known Cityscapes examples."""
    assert split in ("train", "validation"), split
    label = _tiled(LABEL_IDS, (5, 4))[..., None]  # 10 x 16
    images = [np.full((10, 16, 3), 10 * (i + 1), np.uint8) for i in range(2)]
    examples = {
        "image_id": np.array([b"aachen_0", b"aachen_1"]),
        "image_left": np.stack(images),
        "segmentation_label": np.stack([label, label]),
    }
    return tf.data.Dataset.from_tensor_slices(examples)


def test_cityscapes_through_tfds_maps_label_ids_to_train_ids():
    info = registry.get_dataset_info("cityscapes")
    with tfds.testing.mock_data(as_dataset_fn=cityscapes_examples):
        ds = pipeline.build_dataset(TFDS, "val", info, is_training=False)
        batches = list(ds)
    assert [b[common.IMAGE_NAME].numpy()[0] for b in batches] == [
        b"aachen_0",
        b"aachen_1",
    ]
    for index, batch in enumerate(batches):
        assert batch[common.IMAGE].shape == (1, 33, 33, 3)
        assert (int(batch[common.HEIGHT][0]), int(batch[common.WIDTH][0])) == (10, 16)
        np.testing.assert_array_equal(
            batch[common.LABEL][0, :10, :16, 0], _tiled(TRAIN_IDS, (5, 4))
        )
        restored = (batch[common.IMAGE][0, :10, :16].numpy() + 1.0) * 127.5
        np.testing.assert_allclose(restored, 10 * (index + 1), atol=1e-3)
        assert np.all(batch[common.LABEL].numpy()[0, 10:] == 255)


def _first_training_batch(dataset, examples, batch_size, crop_size, seed):
    """The first batch of the training path over the mocked TFDS `examples`."""
    info = registry.get_dataset_info(dataset)
    with tfds.testing.mock_data(as_dataset_fn=examples):
        ds = pipeline.build_dataset(
            TFDS, "train", info, is_training=True, batch_size=batch_size,
            crop_size=crop_size, seed=seed,
        )  # fmt: skip
        return next(iter(ds))


def test_cityscapes_through_tfds_training_crops():
    batch = _first_training_batch("cityscapes", cityscapes_examples, 2, (9, 9), 0)
    assert batch[common.IMAGE].shape == (2, 9, 9, 3)
    assert set(np.unique(batch[common.LABEL]).tolist()) <= set(
        TRAIN_IDS.ravel().tolist()
    )


def ade20k_examples(self, split, read_config=None, **kwargs):
    """scene_parse150 stores its grey annotation as a 3-channel image."""
    annotation = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7) % 151
    examples = {
        "image": np.zeros((1, 6, 7, 3), np.uint8),
        "annotation": np.repeat(annotation[None, ..., None], 3, axis=-1),
        "tfds_id": np.array([b"scene_parse150-validation__0"]),
    }
    return tf.data.Dataset.from_tensor_slices(examples)


def test_ade20k_through_tfds_keeps_class_ids_and_uses_tfds_ids():
    info = registry.get_dataset_info("ade20k")
    with tfds.testing.mock_data(as_dataset_fn=ade20k_examples):
        (batch,) = list(pipeline.build_dataset(TFDS, "val", info, is_training=False))
    expected = np.arange(42).reshape(6, 7) % 151
    np.testing.assert_array_equal(batch[common.LABEL][0, :6, :7, 0], expected)
    assert np.all(batch[common.LABEL].numpy()[0, 6:] == 0)  # ADE20K ignores class 0
    assert batch[common.IMAGE_NAME].numpy()[0] == b"scene_parse150-validation__0"


def test_tfds_random_examples_through_the_training_path():
    """Random ADE20K-like examples: augmented, cropped and batched like records."""

    def random_examples(self, split, **kwargs):
        rng = np.random.default_rng(0)
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": rng.integers(0, 255, (3, 20, 24, 3), dtype=np.uint8),
                "annotation": rng.integers(0, 151, (3, 20, 24, 3), dtype=np.uint8),
                "tfds_id": np.array([b"a", b"b", b"c"]),
            }
        )

    batch = _first_training_batch("ade20k", random_examples, 3, (17, 17), 1)
    assert batch[common.LABEL].shape == (3, 17, 17, 1)


def test_tfds_label_size_mismatch_is_an_error():
    def mismatched(self, split, **kwargs):
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": np.zeros((1, 6, 7, 3), np.uint8),
                "annotation": np.zeros((1, 5, 7, 3), np.uint8),
                "tfds_id": np.array([b"x"]),
            }
        )

    info = registry.get_dataset_info("ade20k")
    with tfds.testing.mock_data(as_dataset_fn=mismatched):
        ds = pipeline.build_dataset(TFDS, "val", info, is_training=False)
        with pytest.raises(tf.errors.InvalidArgumentError, match="label size differs"):
            list(ds)


def test_tfds_voc_has_no_masks_and_says_so():
    info = registry.get_dataset_info("pascal_voc_seg")
    with tfds.testing.mock_data(num_examples=1):
        with pytest.raises(
            ValueError, match="no feature .*segmentation_mask.*build_voc2012_data"
        ):
            pipeline.build_dataset(TFDS, "val", info, is_training=False)


def test_tfds_source_errors_for_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="no TFDS source for dataset 'camvid'"):
        tfds_source.load_samples(registry.get_dataset_info("camvid"), "val")
    with pytest.raises(ValueError, match="no split 'train_aug'"):
        tfds_source.load_samples(registry.get_dataset_info("ade20k"), "train_aug")
    with pytest.raises(ValueError, match="dataset_source must be"):
        pipeline.build_dataset(
            registry.DataSource("x", dataset_source="hub"),
            "val",
            registry.get_dataset_info("camvid"),
            is_training=False,
        )
