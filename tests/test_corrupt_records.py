"""Corrupt shards: the reader skips exactly the bad records, the checker lists them.

The expected answers come from the records as written: frame offsets are
summed from the serialized lengths here, not read back with our code.
"""

import os
import struct

import numpy as np
import pytest
import tensorflow as tf
from cli_runner import run_module

from deeplab_dpc.core import common
from deeplab_dpc.data import pipeline, record_reader, registry
from deeplab_dpc.tools import check_records

INFO = registry.custom_dataset_info("tiny", num_classes=4, default_crop_size=(9, 9))
PER_SHARD = 5


def _frame_offsets(serialized):
    offsets, offset = [], 0
    for data in serialized:
        offsets.append(offset)
        offset += 12 + len(data) + 4
    return offsets


def _example(name, seed, label_size=(6, 8), image_bytes=None, class_id=None):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(6, 8, 3)).astype(np.uint8)
    label = rng.integers(0, 4, size=label_size).astype(np.uint8)
    label[0, 0] = 255
    if class_id is not None:
        label[1, 1] = class_id

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    feature = {
        "image/encoded": b(image_bytes or tf.io.encode_png(image).numpy()),
        "image/filename": b(name.encode()),
        "image/format": b(b"png"),
        "image/height": i(6),
        "image/width": i(8),
        "image/channels": i(3),
        "image/segmentation/class/encoded": b(
            tf.io.encode_png(label[..., None]).numpy()
        ),
        "image/segmentation/class/format": b(b"png"),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(), image


# shard -> {record index: (kind, how to make it)}; start, middle and end of shards.
CORRUPTIONS = {
    0: {0: "bad_data_crc"},
    1: {2: "bad_length_crc"},
    2: {4: "truncated"},
    3: {1: "undecodable_image", 3: "wrong_label_size"},
    4: {4: "class_out_of_range", 0: "bad_footer_crc"},
    5: {0: "bad_length_crc", 2: "bad_length_crc_field", 4: "bad_data_crc"},
}
KIND_OF = {"bad_footer_crc": "bad_data_crc", "bad_length_crc_field": "bad_length_crc"}


def write_corrupt_dataset(directory, num_shards=len(CORRUPTIONS)):
    """Writes the shards of CORRUPTIONS; returns ({good name: image}, [(shard, index, kind)])."""
    good, bad = {}, []
    for shard in range(num_shards):
        plan = CORRUPTIONS.get(shard, {})
        path = os.path.join(directory, f"val-{shard:05d}-of-{num_shards:05d}.tfrecord")
        serialized = []
        for index in range(PER_SHARD):
            name, how = f"s{shard}r{index}", plan.get(index)
            kwargs = {}
            if how == "undecodable_image":
                kwargs["image_bytes"] = b"\x89PNG\r\n\x1a\n not a png at all"
            elif how == "wrong_label_size":
                kwargs["label_size"] = (6, 7)
            elif how == "class_out_of_range":
                kwargs["class_id"] = 7
            data, image = _example(name, shard * 100 + index, **kwargs)
            serialized.append(data)
            if how is None:
                good[name] = image
            else:
                bad.append((path, index, KIND_OF.get(how, how)))
        with tf.io.TFRecordWriter(path) as writer:
            for data in serialized:
                writer.write(data)
        raw = bytearray(open(path, "rb").read())
        offsets = _frame_offsets(serialized)
        for index, how in plan.items():
            start, length = offsets[index], len(serialized[index])
            if how == "bad_data_crc":
                raw[start + 12 + length // 2] ^= 0x5A
            elif how == "bad_footer_crc":
                raw[start + 12 + length] ^= 0x01
            elif how == "bad_length_crc":
                raw[start] ^= 0x04  # the length itself: framing after it is lost
            elif how == "bad_length_crc_field":
                raw[start + 9] ^= 0x80  # the CRC of the length
            elif how == "truncated":
                raw = raw[: start + 12 + length // 3]
        open(path, "wb").write(bytes(raw))
    return good, sorted(bad)


def test_skip_bad_records_yields_exactly_the_good_records(tmp_path):
    good, bad = write_corrupt_dataset(tmp_path)
    counter = tf.Variable(0, dtype=tf.int64)
    ds = pipeline.build_dataset(
        str(tmp_path), "val", INFO, is_training=False, skip_bad_records=True,
        bad_record_counter=counter,
    )  # fmt: skip
    seen = []
    for batch in ds:
        name = batch[common.IMAGE_NAME].numpy()[0].decode()
        restored = (batch[common.IMAGE][0, :6, :8].numpy() + 1.0) * 127.5
        np.testing.assert_allclose(restored, good[name], atol=1e-3)
        seen.append(name)
    assert sorted(seen) == sorted(good)
    assert int(counter.numpy()) == len(bad)


def test_checker_lists_exactly_the_bad_records_with_their_kind(tmp_path):
    good, bad = write_corrupt_dataset(tmp_path)
    num_shards, num_records, found = check_records.check_dataset(
        str(tmp_path), info=INFO
    )
    assert num_shards == len(CORRUPTIONS)
    assert num_records == len(good) + len(bad)
    assert sorted((b.shard, b.index, b.kind) for b in found) == bad
    line = check_records.summary(num_shards, num_records, found)
    assert f"{len(bad)} bad (truncated: 1, bad_length_crc: 3, bad_data_crc: 3," in line


def test_strict_reading_stops_at_the_first_bad_record_named(tmp_path):
    write_corrupt_dataset(tmp_path, num_shards=2)  # shard 1: record 2's length
    with pytest.raises(
        ValueError,
        match=r"val-00001-of-00002\.tfrecord: record 2 is unreadable \(bad CRC of "
        r"the length header",
    ):
        pipeline.build_dataset(str(tmp_path), "val", INFO, is_training=False)
    os.remove(tmp_path / "val-00001-of-00002.tfrecord")  # shard 0: record 0's data
    ds = pipeline.build_dataset(str(tmp_path), "val", INFO, is_training=False)
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"val-00000-of-00002\.tfrecord record 0: bad CRC of the data",
    ):
        list(ds)


def _random_frames(rng, n):
    return [rng.bytes(int(rng.integers(0, 300))) for _ in range(n)]


def _frames_file(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for data in records:
            writer.write(data)
    return bytearray(open(path, "rb").read())


def test_frame_reader_on_seeded_random_corruptions(tmp_path):
    """300 shards of random records, 1-3 damaged frames each (header, CRC, data, end)."""
    rng = np.random.default_rng(14)
    for case in range(300):
        records = _random_frames(rng, int(rng.integers(3, 12)))
        path = tmp_path / f"c{case}"
        raw = _frames_file(path, records)
        offsets = _frame_offsets(records)
        chosen = sorted(
            rng.choice(len(records), size=int(rng.integers(1, 4)), replace=False)
        )
        expected = {}
        for index in chosen:
            if index > 0 and expected.get(index - 1) == "bad_length_crc":
                continue  # two adjacent broken headers merge into one bad record
            start, length = offsets[index], len(records[index])
            where = rng.choice(["length", "length_crc", "data", "data_crc"])
            if where == "data" and length == 0:
                where = "data_crc"
            if where == "length":
                raw[start + int(rng.integers(0, 8))] ^= 1 << int(rng.integers(0, 8))
            elif where == "length_crc":
                raw[start + 8 + int(rng.integers(0, 4))] ^= 0xFF
            elif where == "data":
                raw[start + 12 + int(rng.integers(0, length))] ^= 0x10
            else:
                raw[start + 12 + length + int(rng.integers(0, 4))] ^= 0x01
            kind = "bad_length_crc" if where.startswith("length") else "bad_data_crc"
            expected[index] = kind
        if rng.random() < 0.3:  # and truncate the last record
            last = len(records) - 1
            if expected.get(last - 1) != "bad_length_crc" and last not in expected:
                cut = int(rng.integers(1, 12 + len(records[last]) + 4))
                raw = raw[: offsets[last] + cut]
                expected[last] = "truncated"
        open(path, "wb").write(bytes(raw))
        frames = list(record_reader.iter_frames(str(path)))
        got_bad = {f.index: f.kind for f in frames if f.kind is not None}
        assert got_bad == expected, (case, chosen)
        for frame in frames:
            if frame.kind is None:
                assert frame.data == records[frame.index], case
        assert len(frames) == len(records), case
        count, kind, _ = record_reader.scan_headers(str(path))
        first_framing = min(
            (i for i, k in expected.items() if k != "bad_data_crc"), default=None
        )
        assert kind == (None if first_framing is None else expected[first_framing])
        assert count == (len(records) if first_framing is None else first_framing)


def test_masked_crc_matches_tensorflow_framing(tmp_path):
    raw = _frames_file(tmp_path / "one", [b"hello deeplab"])
    (length,) = struct.unpack_from("<Q", raw)
    assert length == 13
    assert struct.unpack_from("<I", raw, 8)[0] == record_reader.masked_crc32c(raw[:8])
    assert struct.unpack_from("<I", raw, 12 + 13)[0] == record_reader.masked_crc32c(
        b"hello deeplab"
    )


def _cli(*args):
    return run_module("deeplab_dpc.tools.check_records", *args, timeout=120)


def test_check_records_cli_exit_codes(tmp_path):
    _, bad = write_corrupt_dataset(tmp_path, num_shards=3)
    result = _cli(f"--dataset_dir={tmp_path}", '--dataset_info_json={"num_classes": 4}')
    assert result.returncode == 1, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[:-1] == [f"{s} record {i}: {k}: " + lines[n].split(": ", 2)[2]
                          for n, (s, i, k) in enumerate(bad)]  # fmt: skip
    assert lines[-1].endswith(
        "3 bad (truncated: 1, bad_length_crc: 1, bad_data_crc: 1)"
    )


@pytest.mark.slow
def test_check_records_cli_bad_input_exits_2(tmp_path):
    missing = _cli(f"--dataset_dir={tmp_path / 'nope'}")
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0
    assert "nope does not exist" in missing.stderr


def test_checker_bad_input_and_clean_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shards named"):
        check_records.find_shards(str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        check_records.find_shards(str(tmp_path / "file"))
    clean = tmp_path / "clean"
    clean.mkdir()
    _, _ = write_corrupt_dataset(clean, num_shards=1)
    os.remove(clean / "val-00000-of-00001.tfrecord")
    data, _ = _example("ok", 1)
    _frames_file(clean / "train-00000-of-00001.tfrecord", [data, data])
    result = check_records.check_dataset(str(clean), split="train", info=INFO)
    assert result == (1, 2, [])
    assert check_records.summary(*result).endswith("2 records: all good")
