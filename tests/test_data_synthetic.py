"""The built-in synthetic dataset: deterministic, context-dependent, read by default."""

import os

import numpy as np
import pytest

from deeplab_dpc import common
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
    heights = []
    for index in range(40):
        _, label = synthetic.generate_scene(np.random.default_rng([0, 0, index]))
        counts += np.bincount(label.ravel(), minlength=5)
        for cls in range(1, 5):
            rows = np.nonzero((label == cls).any(axis=1))[0]
            if rows.size:
                heights.append(rows.max() - rows.min() + 1)
    assert np.all(counts > 0), counts
    assert min(heights) <= 10 and max(heights) >= 40  # small and large objects


def test_object_class_is_decided_by_the_surface_around_it():
    """Same draws, same pixels: only the band an object stands on changes its class."""
    size = 129
    yy, xx = np.mgrid[0:size, 0:size]
    for seed in range(10):
        drawn = {}
        for surface in (synthetic.ROAD, synthetic.FIELD):
            image = np.zeros((size, size, 3))
            label = np.zeros((size, size), np.uint8)
            band = (0, size, surface)
            synthetic._draw_object(
                np.random.default_rng(seed), image, label, band, 40, yy, xx
            )
            drawn[surface] = (image, label)
        road_image, road_label = drawn[synthetic.ROAD]
        field_image, field_label = drawn[synthetic.FIELD]
        np.testing.assert_array_equal(road_image, field_image)
        assert set(np.unique(road_label).tolist()) <= {0, 1, 3}  # car, pedestrian
        assert set(np.unique(field_label).tolist()) <= {0, 2, 4}  # tractor, farmer
        objects = road_label > 0
        assert objects.any()
        np.testing.assert_array_equal(field_label[objects], road_label[objects] + 1)


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
