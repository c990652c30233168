"""The tf.data pipeline: plain-TF records, shapes, order, sharding, bad records."""

import os

import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.core import common
from deeplab_dpc.data import pipeline, records, registry

INFO = registry.custom_dataset_info("tiny", num_classes=4, default_crop_size=(33, 33))


def _scene(index, height=30, width=44):
    rng = np.random.default_rng(index)
    label = rng.integers(0, 4, size=(height, width)).astype(np.uint8)
    label[0, 0] = 255  # one ignored pixel
    image = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
    return image, label


def _plain_tf_example(image, label, name):
    """An Example written with a few lines of plain TensorFlow, not our code."""

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    feature = {
        "image/encoded": b(tf.io.encode_png(image).numpy()),
        "image/filename": b(name.encode()),
        "image/format": b(b"png"),
        "image/height": i(image.shape[0]),
        "image/width": i(image.shape[1]),
        "image/channels": i(3),
        "image/segmentation/class/encoded": b(
            tf.io.encode_png(label[..., None]).numpy()
        ),
        "image/segmentation/class/format": b(b"png"),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_plain_shards(directory, split="val", num_shards=2, per_shard=3, sizes=None):
    os.makedirs(directory, exist_ok=True)
    truth = {}
    index = 0
    for shard in range(num_shards):
        path = os.path.join(
            directory, f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"
        )
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(per_shard):
                size = sizes[index] if sizes else (30, 44)
                image, label = _scene(index, *size)
                name = f"img{index}"
                writer.write(_plain_tf_example(image, label, name).SerializeToString())
                truth[name] = (image, label)
                index += 1
    return truth


def test_reads_plain_tensorflow_records_exactly(tmp_path):
    truth = write_plain_shards(tmp_path, "val")
    ds = pipeline.build_dataset(str(tmp_path), "val", INFO, is_training=False)
    seen = set()
    for batch in ds:
        name = batch[common.IMAGE_NAME].numpy()[0].decode()
        image, label = truth[name]
        h, w = int(batch[common.HEIGHT][0]), int(batch[common.WIDTH][0])
        assert (h, w) == label.shape
        assert batch[common.IMAGE].shape == (1, 33, 65, 3)  # eval_pad_size(30, 44)
        restored = (batch[common.IMAGE][0, :h, :w].numpy() + 1.0) * 127.5
        np.testing.assert_allclose(restored, image, atol=1e-3)
        np.testing.assert_array_equal(batch[common.LABEL][0, :h, :w, 0], label)
        assert np.all(batch[common.LABEL].numpy()[0, h:] == INFO.ignore_label)
        seen.add(name)
    assert seen == set(truth)


def test_training_batches_have_fixed_crop_and_drop_remainder(tmp_path):
    write_plain_shards(tmp_path, "train", num_shards=2, per_shard=3)
    ds = pipeline.build_dataset(
        str(tmp_path), "train", INFO, is_training=True, batch_size=4, crop_size=(17, 25),
        seed=1, repeat=1,
    )  # fmt: skip
    batches = list(ds)
    assert len(batches) == 1  # 6 images, batch 4, remainder dropped
    batch = batches[0]
    assert batch[common.IMAGE].shape == (4, 17, 25, 3)
    assert batch[common.LABEL].shape == (4, 17, 25, 1)
    assert (
        batch[common.IMAGE].dtype == tf.float32
        and batch[common.LABEL].dtype == tf.int32
    )
    assert batch[common.IMAGE_NAME].shape == (4,)
    assert set(np.unique(batch[common.LABEL])) <= {0, 1, 2, 3, 255}


def test_training_repeats_forever_by_default(tmp_path):
    write_plain_shards(tmp_path, "train", num_shards=1, per_shard=2)
    ds = pipeline.build_dataset(
        str(tmp_path), "train", INFO, is_training=True, batch_size=2
    )
    assert len(list(ds.take(5))) == 5


def test_seeded_deterministic_pipeline_repeats_itself(tmp_path):
    write_plain_shards(tmp_path, "train", num_shards=3, per_shard=4)

    def run():
        ds = pipeline.build_dataset(
            str(tmp_path), "train", INFO, is_training=True, batch_size=2, crop_size=(17, 17),
            seed=123, deterministic=True,
        )  # fmt: skip
        return [
            (b[common.IMAGE_NAME].numpy().tolist(), b[common.IMAGE].numpy())
            for b in ds.take(8)
        ]

    first, second = run(), run()
    assert [n for n, _ in first] == [n for n, _ in second]
    for (_, a), (_, b) in zip(first, second):
        np.testing.assert_array_equal(a, b)
    names = [n for batch, _ in first for n in batch]
    assert names[:12] != sorted(names[:12])  # shuffled


def test_eval_batches_of_different_sizes_are_padded_together(tmp_path):
    write_plain_shards(
        tmp_path, "val", num_shards=1, per_shard=2, sizes=[(30, 44), (40, 20)]
    )
    ds = pipeline.build_dataset(
        str(tmp_path), "val", INFO, is_training=False, batch_size=2
    )
    (batch,) = list(ds)
    assert batch[common.IMAGE].shape == (2, 65, 65, 3)
    assert batch[common.HEIGHT].numpy().tolist() == [30, 40]
    assert batch[common.WIDTH].numpy().tolist() == [44, 20]
    assert np.all(batch[common.LABEL].numpy()[1, :, 20:] == 255)


class _InputContext:
    def __init__(self, num, index):
        self.num_input_pipelines = num
        self.input_pipeline_id = index


@pytest.mark.parametrize("num_shards", [4, 1])
def test_input_context_shards_disjointly(tmp_path, num_shards):
    truth = write_plain_shards(
        tmp_path, "val", num_shards=num_shards, per_shard=8 // num_shards
    )
    parts = []
    for index in range(2):
        ds = pipeline.build_dataset(
            str(tmp_path), "val", INFO, is_training=False, shard=_InputContext(2, index)
        )
        parts.append({b[common.IMAGE_NAME].numpy()[0].decode() for b in ds})
    assert parts[0].isdisjoint(parts[1])
    assert parts[0] | parts[1] == set(truth)
    assert parts[0] and parts[1]


def test_missing_directory_or_shards_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipeline.build_dataset(str(tmp_path / "nope"), "val", INFO, is_training=False)
    with pytest.raises(FileNotFoundError, match=r"val-\*"):
        pipeline.build_dataset(str(tmp_path), "val", INFO, is_training=False)


def test_split_aliases_resolve_to_file_names(tmp_path):
    write_plain_shards(tmp_path, "val_fine", num_shards=1, per_shard=1)
    cityscapes_like = registry.DATASETS["cityscapes"]._replace(name="cityscapes_like")
    ds = pipeline.build_dataset(
        str(tmp_path), "val", cityscapes_like, is_training=False
    )
    assert len(list(ds)) == 1


def _read_skipping_bad_records(directory):
    """(batches of the val split, number of bad records skipped) at batch size 1."""
    counter = tf.Variable(0, dtype=tf.int64)
    ds = pipeline.build_dataset(
        str(directory), "val", INFO, is_training=False, skip_bad_records=True,
        bad_record_counter=counter,
    )  # fmt: skip
    batches = list(ds)
    return batches, int(counter.numpy())


def _truncate(path, nbytes):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-nbytes])


def test_truncated_shard_is_named_with_record_index(tmp_path):
    write_plain_shards(tmp_path, "val", num_shards=2, per_shard=3)
    bad = os.path.join(tmp_path, "val-00001-of-00002.tfrecord")
    _truncate(bad, 100)
    with pytest.raises(ValueError, match=r"val-00001-of-00002\.tfrecord: record 2 "):
        pipeline.build_dataset(str(tmp_path), "val", INFO, is_training=False)
    batches, skipped = _read_skipping_bad_records(tmp_path)
    assert len(batches) == 5
    assert skipped == 1


def test_corrupt_record_payload_is_named(tmp_path):
    write_plain_shards(tmp_path, "val", num_shards=1, per_shard=3)
    path = os.path.join(tmp_path, "val-00000-of-00001.tfrecord")
    data = bytearray(open(path, "rb").read())
    count, _ = records.scan_shard(path)
    assert count == 3
    data[len(data) - 50] ^= 0xFF  # inside the last record's payload: CRC mismatch
    open(path, "wb").write(bytes(data))
    ds = pipeline.build_dataset(str(tmp_path), "val", INFO, is_training=False)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"val-00000-of-00001\.tfrecord record 2"
    ):
        list(ds)
    batches, skipped = _read_skipping_bad_records(tmp_path)
    assert len(batches) == 2
    assert skipped == 1


def _write_with_bad_image(directory, bad_index=1):
    path = os.path.join(directory, "val-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for index in range(3):
            image, label = _scene(index)
            example = _plain_tf_example(image, label, f"img{index}")
            if index == bad_index:
                feature = example.features.feature["image/encoded"]
                feature.bytes_list.value[0] = b"\x89PNG\r\n\x1a\n this is not a png"
            writer.write(example.SerializeToString())
    return path


@pytest.mark.parametrize("is_training", [False, True])
def test_undecodable_image_names_shard_and_index(tmp_path, is_training):
    _write_with_bad_image(tmp_path)
    ds = pipeline.build_dataset(
        str(tmp_path),
        "val",
        INFO,
        is_training=is_training,
        repeat=1,
        deterministic=True,
    )
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"val-00000-of-00001\.tfrecord record 1: image",
    ):
        list(ds)


def test_undecodable_image_skipped_and_counted(tmp_path):
    _write_with_bad_image(tmp_path)
    batches, skipped = _read_skipping_bad_records(tmp_path)
    names = [b[common.IMAGE_NAME].numpy()[0] for b in batches]
    assert names == [b"img0", b"img2"]
    assert skipped == 1


def test_label_size_mismatch_in_record_is_a_bad_record(tmp_path):
    path = os.path.join(tmp_path, "val-00000-of-00001.tfrecord")
    image, label = _scene(0)
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(_plain_tf_example(image, label[:10], "short").SerializeToString())
    ds = pipeline.build_dataset(str(tmp_path), "val", INFO, is_training=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="record 0"):
        list(ds)


def test_records_without_label_give_ignore_everywhere(tmp_path):
    image, _ = _scene(0)
    example = records.make_example(
        tf.io.encode_jpeg(image).numpy(), "jpeg", "t0", 30, 44
    )
    records.write_shards([example], str(tmp_path), "test", 1)
    (batch,) = list(
        pipeline.build_dataset(str(tmp_path), "test", INFO, is_training=False)
    )
    assert np.all(batch[common.LABEL].numpy() == INFO.ignore_label)


def test_write_shards_is_atomic_and_replaces_stale_shards(tmp_path):
    records.write_shards([b"a", b"b", b"c"], str(tmp_path), "train", 3)
    records.write_shards([b"a", b"b", b"c"], str(tmp_path), "train", 2)
    names = sorted(os.listdir(tmp_path))
    assert names == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    counts = [records.scan_shard(os.path.join(tmp_path, n))[0] for n in names]
    assert counts == [1, 2]  # sizes differ by at most one
    assert [len(c) for c in records.split_evenly(list(range(5)), 4)] == [1, 1, 1, 2]


@pytest.mark.parametrize("num_shards,per_shard", [(1, 5), (1, 4), (3, 3), (2, 3)])
def test_training_halves_stay_disjoint_over_passes(tmp_path, num_shards, per_shard):
    # Fewer shard files than halves (1), or a few files shuffled each pass
    # with an odd total: each record must stay in its half on every pass
    # (Auto-DeepLab's trainA / trainB). A positional shard after the repeat
    # gave records 0 and 2 to both halves within 10 batches on (1, 5).
    truth = write_plain_shards(
        tmp_path, "train", num_shards=num_shards, per_shard=per_shard
    )
    parts = []
    for index in range(2):
        ds = pipeline.build_dataset(
            str(tmp_path), "train", INFO, is_training=True, batch_size=1,
            crop_size=(17, 17), seed=7, shard=_InputContext(2, index),
        )  # fmt: skip
        parts.append(
            {b[common.IMAGE_NAME].numpy()[0].decode() for b in ds.take(4 * len(truth))}
        )
    assert parts[0].isdisjoint(parts[1]), parts
    assert parts[0] | parts[1] == set(truth)
