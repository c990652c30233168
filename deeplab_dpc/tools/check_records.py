r"""Checks every record of a TFRecord dataset before a long run.

    python -m deeplab_dpc.tools.check_records --dataset_dir=data/camvid \
        --dataset=camvid

Scans every shard of `--dataset_dir` (files named `<split>-NNNNN-of-NNNNN`,
optionally `.tfrecord`; `--split` keeps one split) and prints one line per
bad record, `<shard> record <index>: <kind>: <detail>`, then a summary with
the count of each kind. Kinds:

- `truncated`: the file ends inside a record (or leaves stray bytes);
- `bad_length_crc`: the length header fails its CRC (reading resynchronises
  on the next valid header; the bytes in between count as one record);
- `bad_data_crc`: the record's data fails its CRC;
- `unparsable_example`: the data is not a `tf.train.Example`;
- `undecodable_image` / `undecodable_label`: TensorFlow cannot decode them;
- `wrong_label_size`: the label is not single-channel or its height/width
  differ from the image's;
- `wrong_header_size`: `image/height` / `image/width` differ from the image;
- `class_out_of_range`: a label pixel is neither in [0, num_classes) nor the
  ignore label (checked when `--dataset` or `--dataset_info_json` is given).

Exit code 0 when every record is good, 1 when bad records were found, 2 on
bad input (missing or unreadable folder or shard, no shards, bad flags).
The training pipeline reads the same framing (`data/record_reader.py`);
`--skip_bad_records` skips exactly the records listed here.
"""

import collections
import os
import re
import sys

import numpy as np
import tensorflow as tf
from absl import flags

from deeplab_dpc import command_line
from deeplab_dpc.core import common, errors
from deeplab_dpc.core.option_table import Option
from deeplab_dpc.data import record_reader, registry

UNPARSABLE = "unparsable_example"
UNDECODABLE_IMAGE = "undecodable_image"
UNDECODABLE_LABEL = "undecodable_label"
WRONG_LABEL_SIZE = "wrong_label_size"
WRONG_HEADER_SIZE = "wrong_header_size"
CLASS_OUT_OF_RANGE = "class_out_of_range"
KINDS = (
    record_reader.TRUNCATED,
    record_reader.BAD_LENGTH_CRC,
    record_reader.BAD_DATA_CRC,
    UNPARSABLE,
    UNDECODABLE_IMAGE,
    UNDECODABLE_LABEL,
    WRONG_LABEL_SIZE,
    WRONG_HEADER_SIZE,
    CLASS_OUT_OF_RANGE,
)
SHARD_NAME = re.compile(r"^(?P<split>[^.].*)-\d+-of-\d+(\.tfrecord)?$")

BadRecord = collections.namedtuple("BadRecord", "shard index kind detail")


def find_shards(dataset_dir, split=None):
    """Sorted shard paths of `dataset_dir`; ValueError/FileNotFoundError on bad input."""
    if not os.path.exists(dataset_dir):
        raise FileNotFoundError(f"dataset directory {dataset_dir} does not exist")
    if not os.path.isdir(dataset_dir):
        raise ValueError(f"dataset directory {dataset_dir} is not a directory")
    try:
        names = os.listdir(dataset_dir)
    except OSError as e:
        raise ValueError(f"dataset directory {dataset_dir}: {e.strerror}") from None
    shards = []
    for name in names:
        match = SHARD_NAME.match(name)
        path = os.path.join(dataset_dir, name)
        if match and os.path.isfile(path) and split in (None, match["split"]):
            shards.append(path)
    if not shards:
        which = f"{split}-NNNNN-of-NNNNN" if split else "<split>-NNNNN-of-NNNNN"
        raise FileNotFoundError(f"no shards named {which} in {dataset_dir}")
    for path in shards:
        if not os.access(path, os.R_OK):
            raise ValueError(f"shard {path} is not readable")
    return sorted(shards)


def _tf_reason(error):
    """TensorFlow's message without its function-node prefix and op suffix."""
    text = (getattr(error, "message", None) or str(error)).strip().split("\n")[0]
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:\w+\]$", "", text) or type(error).__name__


def _feature(example, key, kind):
    feature = example.features.feature.get(key)
    if feature is None:
        return None
    values = getattr(feature, kind).value
    return values[0] if len(values) else None


def check_example(data, num_classes=None, ignore_label=common.DEFAULT_IGNORE_LABEL):
    """`(kind, detail)` of what is wrong with one serialized Example, or None."""
    example = tf.train.Example()
    try:
        example.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError, whatever the backend
        return UNPARSABLE, str(e).splitlines()[0] if str(e) else type(e).__name__
    encoded = _feature(example, common.KEY_IMAGE_ENCODED, "bytes_list")
    if encoded is None:
        return UNPARSABLE, f"no {common.KEY_IMAGE_ENCODED}"
    try:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as e:
        return UNDECODABLE_IMAGE, _tf_reason(e)
    height, width = int(image.shape[0]), int(image.shape[1])
    for key, size in (
        (common.KEY_IMAGE_HEIGHT, height),
        (common.KEY_IMAGE_WIDTH, width),
    ):
        stated = _feature(example, key, "int64_list")
        if stated not in (None, 0, size):
            return WRONG_HEADER_SIZE, f"{key} is {stated}, the image has {size}"
    label_bytes = _feature(example, common.KEY_LABEL_ENCODED, "bytes_list")
    if not label_bytes:
        return None
    try:
        label = tf.io.decode_png(label_bytes, channels=0).numpy()
    except (tf.errors.OpError, ValueError) as e:
        return UNDECODABLE_LABEL, _tf_reason(e)
    if label.shape != (height, width, 1):
        return WRONG_LABEL_SIZE, f"label {label.shape}, image {height}x{width}"
    if num_classes is not None:
        ids = np.unique(label)
        bad = ids[(ids >= num_classes) & (ids != ignore_label)]
        if bad.size:
            shown = ", ".join(str(int(v)) for v in bad[:5])
            more = f" and {bad.size - 5} more" if bad.size > 5 else ""
            return CLASS_OUT_OF_RANGE, (
                f"class ids {shown}{more} not in [0, {num_classes}) "
                f"nor the ignore label {ignore_label}"
            )
    return None


def check_shard(path, num_classes=None, ignore_label=common.DEFAULT_IGNORE_LABEL):
    """`(num_records, [BadRecord, ...])` for one shard."""
    bad = []
    count = 0
    for frame in record_reader.iter_frames(path):
        count += 1
        if frame.kind is not None:
            bad.append(BadRecord(path, frame.index, frame.kind, frame.detail))
            continue
        problem = check_example(frame.data, num_classes, ignore_label)
        if problem is not None:
            bad.append(BadRecord(path, frame.index, *problem))
    return count, bad


def check_dataset(dataset_dir, split=None, info=None):
    """`(num_shards, num_records, [BadRecord, ...])` for every shard of a folder."""
    shards = find_shards(dataset_dir, split)
    num_classes = None if info is None else info.num_classes
    ignore = common.DEFAULT_IGNORE_LABEL if info is None else info.ignore_label
    total, bad = 0, []
    for path in shards:
        count, found = check_shard(path, num_classes, ignore)
        total += count
        bad.extend(found)
    return len(shards), total, bad


def summary(num_shards, num_records, bad):
    """The last line: counts per kind of bad record."""
    if not bad:
        return f"checked {num_shards} shards, {num_records} records: all good"
    counts = collections.Counter(b.kind for b in bad)
    kinds = ", ".join(f"{kind}: {counts[kind]}" for kind in KINDS if counts[kind])
    return (
        f"checked {num_shards} shards, {num_records} records: {len(bad)} bad ({kinds})"
    )


FLAGS = flags.FLAGS


OPTIONS = (
    Option("dataset_dir", "string", None, "Folder of TFRecord shards.", required=True),
    Option("dataset", "string", None,
           "Registry name; gives num_classes and the ignore label for the "
           "class-id check (skipped when neither this nor --dataset_info_json)."),
    Option("dataset_info_json", "string", None, "Dataset facts (file or JSON)."),
    Option("split", "string", None, "Check only this split's shards."),
)  # fmt: skip


def define_flags():
    command_line.define_options(OPTIONS)


def _dataset_info():
    """The DatasetInfo of --dataset / --dataset_info_json, or None; errors name the flag."""
    if not (FLAGS.dataset or FLAGS.dataset_info_json):
        return None
    name = FLAGS.dataset or "custom"
    flag = "dataset_info_json" if FLAGS.dataset_info_json else "dataset"
    try:
        return registry.get_dataset_info(name, FLAGS.dataset_info_json)
    except (ValueError, OSError) as e:
        raise ValueError(f"--{flag}: {errors.one_line(e)}") from None


def _shards():
    """Checks --dataset_dir and --split before any record is read."""
    try:
        shards = find_shards(FLAGS.dataset_dir)
    except (ValueError, OSError) as e:
        raise ValueError(f"--dataset_dir: {errors.one_line(e)}") from None
    if FLAGS.split is not None:
        splits = sorted(
            {SHARD_NAME.match(os.path.basename(p))["split"] for p in shards}
        )
        if FLAGS.split not in splits:
            raise ValueError(
                f"--split: no shards of split {FLAGS.split!r} in {FLAGS.dataset_dir}"
                f" (it has: {', '.join(splits)})"
            )
    return shards


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}")
    command_line.option_values(OPTIONS)
    info = _dataset_info()
    _shards()
    num_shards, num_records, bad = check_dataset(FLAGS.dataset_dir, FLAGS.split, info)
    for b in bad:
        print(f"{b.shard} record {b.index}: {b.kind}: {b.detail}")
    if info is None:
        print("class ids not checked (give --dataset or --dataset_info_json)")
    print(summary(num_shards, num_records, bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    define_flags()
    command_line.run(main, "check_records")
