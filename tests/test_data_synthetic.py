"""The built-in synthetic dataset: deterministic, classes decided by scale and by
context at a distance, read by default."""

import json
import os

import numpy as np
import pytest

from deeplab_dpc.core import common
from deeplab_dpc.data import pipeline, records, registry, synthetic


def test_same_seed_same_scene_other_seed_other_scene():
    a_image, a_label = synthetic.generate_scene(np.random.default_rng([0, 0, 5]))
    b_image, b_label = synthetic.generate_scene(np.random.default_rng([0, 0, 5]))
    c_image, _ = synthetic.generate_scene(np.random.default_rng([1, 0, 5]))
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_label, b_label)
    assert not np.array_equal(a_image, c_image)
    assert a_image.shape == (129, 129, 3) and a_image.dtype == np.uint8
    assert a_label.shape == (129, 129)


def test_scenes_use_every_class_at_several_scales():
    counts = np.zeros(5, np.int64)
    for index in range(40):
        _, label = synthetic.generate_scene(np.random.default_rng([0, 0, index]))
        counts += np.bincount(label.ravel(), minlength=5)
        present = set(np.unique(label).tolist())
        # Small discs, lines and one of the two large-disc classes in every image.
        assert {synthetic.SMALL_DISC, synthetic.LINE} <= present, present
        large = {synthetic.DISC_RED_BAND, synthetic.DISC_BLUE_BAND}
        assert len(present & large) == 1, present
    assert np.all(counts > 0), counts
    assert counts[0] / counts.sum() < 0.8  # background does not swamp the rest


def _band_color(image, rows=2):
    red, _, blue = image[:rows].reshape(-1, 3).mean(axis=0)
    return synthetic.RED if red > blue else synthetic.BLUE


def test_a_large_discs_class_is_the_colour_of_a_band_far_above_it():
    """Context at a distance: the band decides, and no object comes near it."""
    size = 129
    for index in range(40):
        image, label = synthetic.generate_scene(np.random.default_rng([0, 1, index]))
        band = _band_color(image)
        other = synthetic.LARGE_DISC_CLASS[1 - band]
        assert not (label == other).any()
        assert (label == synthetic.LARGE_DISC_CLASS[band]).any()
        rows = np.nonzero((label > 0).any(axis=1))[0]
        band_bottom = round(synthetic.BAND_HEIGHT[1] * size)
        assert rows.min() - band_bottom >= 14  # about a stride-16 cell away, or more


def test_small_and_large_discs_differ_only_in_size():
    """Scale: the same draws make the same colours and outline at either size."""
    size = 129
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    fills = []
    for cls, radius in ((synthetic.SMALL_DISC, 8.0), (synthetic.DISC_RED_BAND, 24.0)):
        image = np.zeros((size, size, 3))
        label = np.zeros((size, size), np.uint8)
        synthetic._draw_disc(
            np.random.default_rng(3), image, label, cls, radius, 50, yy, xx, 120.0
        )
        assert set(np.unique(label).tolist()) == {0, cls}
        area = (label == cls).sum()
        assert (
            abs(area - np.pi * radius**2) < 2 * np.pi * radius
        )  # a disc of that radius
        inside = image[label == cls]
        fills.append(np.median(inside, axis=0))
    np.testing.assert_allclose(fills[0], fills[1], atol=6.0)  # speckle: sigma 12
    low, high = synthetic.SMALL_RADIUS[1], synthetic.LARGE_RADIUS[0]
    assert high >= 1.6 * low  # a gap between the sizes: never ambiguous


def test_generate_writes_shards_and_meta_deterministically(tmp_path):
    for name in ("a", "b"):
        synthetic.generate_synthetic_dataset(
            str(tmp_path / name), num_train=6, num_val=3, image_size=(65, 97)
        )
    for split in ("train", "val"):
        a = records.list_shards(str(tmp_path / "a"), split)
        b = records.list_shards(str(tmp_path / "b"), split)
        assert [os.path.basename(p) for p in a] == [os.path.basename(p) for p in b]
        for pa, pb in zip(a, b):
            assert open(pa, "rb").read() == open(pb, "rb").read()
    assert os.path.isfile(tmp_path / "a" / synthetic.META_FILENAME)


def test_data_of_an_older_generator_version_is_replaced(tmp_path):
    target = tmp_path / "syn"
    synthetic.ensure_synthetic_dataset(
        str(target), num_train=2, num_val=1, image_size=(33, 33)
    )
    meta_path = target / synthetic.META_FILENAME
    meta = json.loads(meta_path.read_text())
    assert meta["version"] == synthetic.GENERATOR_VERSION
    meta["version"] = 1  # street scenes: other classes under the same names' count
    meta_path.write_text(json.dumps(meta))
    stale = target / "train-00001-of-00002.tfrecord"
    assert stale.exists()
    synthetic.ensure_synthetic_dataset(
        str(target), num_train=3, num_val=1, image_size=(33, 33)
    )
    assert json.loads(meta_path.read_text())["version"] == synthetic.GENERATOR_VERSION
    assert json.loads(meta_path.read_text())["splits"]["train"] == 3


def test_ensure_is_idempotent_and_atomic(tmp_path):
    target = tmp_path / "syn"
    synthetic.ensure_synthetic_dataset(
        str(target), num_train=4, num_val=2, image_size=(33, 33)
    )
    stamp = {n: os.stat(target / n).st_mtime_ns for n in os.listdir(target)}
    synthetic.ensure_synthetic_dataset(
        str(target), num_train=4, num_val=2, image_size=(33, 33)
    )
    assert {n: os.stat(target / n).st_mtime_ns for n in os.listdir(target)} == stamp
    assert [
        n for n in os.listdir(tmp_path) if n.startswith(".")
    ] == []  # no temporaries left
    # A half-present dataset (meta file missing) is completed.
    os.remove(target / synthetic.META_FILENAME)
    synthetic.ensure_synthetic_dataset(
        str(target), num_train=4, num_val=2, image_size=(33, 33)
    )
    assert os.path.isfile(target / synthetic.META_FILENAME)


def test_too_small_image_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 33x33"):
        synthetic.generate_synthetic_dataset(
            str(tmp_path), num_train=1, num_val=1, image_size=(16, 16)
        )


def test_default_dataset_is_generated_and_read_without_any_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    info = registry.get_dataset_info(registry.DEFAULT_DATASET)
    ds = pipeline.build_dataset(
        None, "train", info, is_training=True, batch_size=4, seed=0
    )
    batch = next(iter(ds))
    assert batch[common.IMAGE].shape == (4, *info.default_crop_size, 3)
    assert os.path.isfile(tmp_path / "data" / "synthetic" / synthetic.META_FILENAME)
    val = pipeline.build_dataset(None, "val", info, is_training=False)
    assert sum(1 for _ in val) == info.splits["val"]
    labels = np.concatenate([b[common.LABEL].numpy().ravel() for b in val.take(20)])
    assert set(np.unique(labels).tolist()) <= set(range(info.num_classes)) | {255}
