"""The `tf.data` input pipeline: shards -> records -> samples -> batches.

Follows DeepLab's `datasets/data_generator.py`: files matching `<split>-*`,
parallel interleave of shards, shuffle and repeat for training, a parallel
map for decode and preprocessing (`preprocess.py`), batch, prefetch.

Deviations from DeepLab:
- Bad data is named: a truncated or corrupt shard and an undecodable record
  raise an error naming the shard and the record index; with
  `skip_bad_records=True` exactly the bad record is skipped, logged and
  counted (in an optional `bad_record_counter` tf.Variable) and reading goes
  on with the rest of the shard. `TFRecordDataset` reads clean shards (and
  a corrupt one up to its first bad record); it drops the rest of a shard
  after a bad record, so that rest is read by `record_reader.iter_frames`, a
  Python generator that checks both CRCs and resynchronises on the next
  valid header (one Python call per record, for corrupt shards only). Each
  record is decoded in a one-element dataset with `ignore_errors`, which is
  how a failure is turned into a flag without stopping the pipeline.
- Seeded randomness: with `seed` set, file and record shuffles and every
  augmentation are reproducible (`deterministic=True` also fixes the order
  of parallel reads).
- Evaluation yields whole images padded to `eval_pad_size` (see
  `preprocess.py`), batch size 1 by default.
- The default `synthetic` dataset is generated on first use.
"""

import os
import sys

import tensorflow as tf
from absl import logging

from deeplab_dpc.core import common
from deeplab_dpc.data import preprocess, record_reader, records, registry

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 100  # records, as in DeepLab's data_generator
DECODE_CYCLE = 16  # parallel one-record decode datasets
RECORD_BLOCK = 64  # records of a shard passed on at a time


def default_dataset_dir(info):
    """Where a dataset lives when no directory is given (synthetic: ./data/synthetic)."""
    return os.path.join(os.getcwd(), "data", info.name)


def find_shards(dataset_dir, split):
    """The sorted shard files of `split`; FileNotFoundError naming dir and glob."""
    pattern = f"{split}-*"
    if not tf.io.gfile.isdir(dataset_dir):
        problem = (
            "is not a directory"
            if tf.io.gfile.exists(dataset_dir)
            else "does not exist"
        )
        raise FileNotFoundError(
            f"dataset directory {dataset_dir} {problem} (looking for {pattern})"
        )
    files = records.list_shards(dataset_dir, split)
    if not files:
        raise FileNotFoundError(f"no shards matching {pattern} in {dataset_dir}")
    return files


def _check_shards(files, skip_bad_records):
    """Header scan of every shard: framing problems named before reading.

    Returns `(counts, broken)`: records before the first framing problem of
    each shard, and whether it has one. Strict, a broken shard is an error
    here; skipping, its rest is read by `record_reader.iter_frames`.
    """
    counts, broken = [], []
    for path in files:
        try:
            count, kind, detail = record_reader.scan_headers(path)
        except tf.errors.OpError as e:  # a directory, a broken link, no permission
            reason = (e.message or type(e).__name__).strip().splitlines()[0]
            raise ValueError(f"shard {path} cannot be read: {reason}") from None
        if kind is not None:
            text = record_reader.KIND_TEXT[kind]
            message = (
                f"bad shard {path}: record {count} is unreadable ({text}, {detail})"
            )
            if not skip_bad_records:
                raise ValueError(message + "; use --skip_bad_records to skip it")
            logging.warning("%s; skipping it and reading on", message)
        counts.append(count)
        broken.append(kind is not None)
    if files and not any(counts) and not any(broken):
        raise ValueError(
            f"no records in the {len(files)} shards {files[0]}, ... (all empty)"
            if len(files) > 1
            else f"no records in shard {files[0]} (empty file)"
        )
    return counts, broken


def _rest_of_shard(path, start_index, skip_bad_records):
    """Records of `path` from `start_index` on, read in Python (for tf.py_function).

    Returns (index, record, ok, message) arrays; strict, they end at the
    first bad record.
    """
    path = path.numpy().decode()
    rows = []
    for frame in record_reader.iter_frames(path, int(start_index.numpy())):
        if frame.kind is None:
            rows.append((frame.index, frame.data, True, b""))
        else:
            rows.append((frame.index, b"", False, record_reader.describe(path, frame)))
            if not bool(skip_bad_records.numpy()):
                break
    index, record, ok, message = zip(*rows) if rows else ([], [], [], [])
    return (
        tf.constant(index, tf.int64),
        tf.constant(record, tf.string),
        tf.constant(ok, tf.bool),
        tf.constant(message, tf.string),
    )


def _read_shard(path, expected, broken, skip_bad_records, counter):
    """(shard, index, record) of one shard; a bad record is named or skipped.

    The records are read by `TFRecordDataset` up to the first bad one (all
    of them for a clean shard), in blocks of RECORD_BLOCK (no Python and no
    dataset per record). TensorFlow drops the rest of a shard after a bad
    record, so when fewer than `expected` records came (or the header scan
    found the framing `broken`) the rest is read from there on by
    `record_reader.iter_frames` (Python, in one `tf.py_function` call that
    holds the rest of that shard in memory), which names each bad record,
    skips it and goes on.
    """
    reads = tf.data.TFRecordDataset(path).enumerate().ignore_errors()
    reads = reads.batch(RECORD_BLOCK).map(lambda i, r: (i, r, False))
    end = tf.data.Dataset.from_tensors(
        (tf.zeros([0], tf.int64), tf.zeros([0], tf.string), True)
    )

    def step(count, block):
        index, record, is_end = block
        next_count = count + tf.size(index, out_type=tf.int64)
        return next_count, (index, record, is_end, next_count)

    def read_rest(count):
        index, record, ok, message = tf.py_function(
            _rest_of_shard,
            [path, count, skip_bad_records],
            [tf.int64, tf.string, tf.bool, tf.string],
        )
        for t in (index, record, ok, message):
            t.set_shape([None])
        report = _report_bad(
            tf.reduce_all(ok),
            tf.strings.reduce_join(
                tf.boolean_mask(message, tf.logical_not(ok)), separator="; "
            ),
            skip_bad_records,
            counter,
            tf.reduce_sum(tf.cast(tf.logical_not(ok), tf.int64)),
        )
        with tf.control_dependencies([report]):
            return tf.boolean_mask(index, ok), tf.boolean_mask(record, ok)

    def with_rest(index, record, is_end, count):
        needs_rest = tf.logical_and(
            is_end, tf.logical_or(broken, tf.less(count, expected))
        )
        index, record = tf.cond(
            needs_rest, lambda: read_rest(count), lambda: (index, record)
        )
        return tf.fill(tf.shape(index), path), index, record

    blocks = reads.concatenate(end).scan(tf.constant(0, tf.int64), step)
    return blocks.map(with_rest).flat_map(
        lambda *block: tf.data.Dataset.from_tensor_slices(block)
    )


def _report_bad(ok, message, skip_bad_records, counter, num_bad=1):
    """Raises (strict) or logs and counts `num_bad` (skip) when `ok` is false."""
    if not skip_bad_records:
        return tf.debugging.Assert(ok, [message, " (use --skip_bad_records to skip)"])

    def warn():
        tf.print("WARNING: skipping", message, output_stream=sys.stderr)
        if counter is not None:
            counter.assign_add(tf.cast(num_bad, counter.dtype))
        return tf.constant(True)

    return tf.cond(ok, lambda: tf.constant(True), warn)


def _placeholder_sample():
    return {
        common.IMAGE: tf.zeros([1, 1, 3], tf.uint8),
        common.LABEL: tf.zeros([1, 1, 1], tf.int32),
        common.IMAGE_NAME: tf.constant(""),
        common.HEIGHT: tf.constant(0, tf.int32),
        common.WIDTH: tf.constant(0, tf.int32),
    }


def _decode_records(record_ds, info, deterministic, skip_bad_records, counter):
    """Decodes records in parallel; an undecodable one is named or skipped."""

    def decode_or_flag(path, index, record):
        good = tf.data.Dataset.from_tensors(record).map(
            lambda r: (
                preprocess.decode_example(r, info.ignore_label, info.num_classes),
                True,
            )
        )
        bad = tf.data.Dataset.from_tensors((_placeholder_sample(), False))
        flagged = good.ignore_errors().concatenate(bad).take(1)
        return flagged.map(lambda sample, ok: (path, index, sample, ok))

    decoded = record_ds.interleave(
        decode_or_flag,
        cycle_length=DECODE_CYCLE,
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )

    def check(path, index, sample, ok):
        message = tf.strings.join(
            [
                "bad record: shard ", path, " record ", tf.strings.as_string(index),
                ": image or label cannot be decoded, label not single-channel, "
                "label size differs from image size or class id out of range",
            ]
        )  # fmt: skip
        with tf.control_dependencies(
            [_report_bad(ok, message, skip_bad_records, counter)]
        ):
            return tf.identity(ok)

    if skip_bad_records:
        return decoded.filter(check).map(lambda p, i, sample, ok: sample)

    def assert_ok(path, index, sample, ok):
        with tf.control_dependencies([check(path, index, sample, ok)]):
            return tf.nest.map_structure(tf.identity, sample)

    return decoded.map(assert_ok)


def _record_samples(files, info, opts):
    """Decoded samples from TFRecord shards (before augmentation)."""
    counter = opts["bad_record_counter"]
    counts, broken = _check_shards(files, opts["skip_bad_records"])
    # Each record's number in the split (the shard's offset + its index in
    # the shard) decides its input pipeline when there are fewer shard
    # files than pipelines: a record belongs to the same pipeline on every
    # pass whatever the file order and the repeat (a positional
    # `Dataset.shard` after the repeat flips parity each pass on an odd
    # count, and after a file shuffle follows the order of the files).
    offsets = [sum(counts[:i]) for i in range(len(counts))]
    file_ds = tf.data.Dataset.from_tensor_slices(
        (
            files,
            tf.constant(counts, tf.int64),
            tf.constant(broken, tf.bool),
            tf.constant(offsets, tf.int64),
        )
    )
    if opts["is_training"]:
        file_ds = file_ds.shuffle(
            len(files), seed=opts["seed"], reshuffle_each_iteration=True
        )
    file_ds = _repeat(file_ds, opts["repeat"])
    record_shard = opts["record_shard"]

    def read(path, count, is_broken, offset):
        ds = _read_shard(path, count, is_broken, opts["skip_bad_records"], counter)
        if record_shard is None:
            return ds
        num, index = record_shard
        return ds.filter(lambda _p, i, _r: tf.equal((offset + i) % num, index))

    record_ds = file_ds.interleave(
        read,
        cycle_length=max(1, min(opts["num_readers"], len(files))),
        num_parallel_calls=AUTOTUNE,
        deterministic=opts["deterministic"],
    )
    if opts["is_training"]:
        record_ds = record_ds.shuffle(SHUFFLE_BUFFER, seed=opts["seed"])
    return _decode_records(
        record_ds, info, opts["deterministic"], opts["skip_bad_records"], counter
    )


def _repeat(dataset, repeat):
    if repeat is True:
        return dataset.repeat()
    if repeat is False or repeat is None:
        return dataset
    return dataset.repeat(int(repeat))


def _shard_files(files, shard):
    """Files for this input pipeline, or (files, record-level shard) if too few."""
    if shard is None:
        return files, None
    num, index = shard.num_input_pipelines, shard.input_pipeline_id
    if num <= 1:
        return files, None
    if len(files) >= num:
        return files[index::num], None
    return files, (num, index)


def _seeded(dataset, seed):
    """Pairs each sample with its own stateless seed (shape [2], int32)."""
    seeds = tf.data.Dataset.random(seed=seed).map(
        lambda r: tf.cast(
            tf.stack(
                [tf.bitwise.bitwise_and(r, 0x7FFFFFFF), tf.bitwise.right_shift(r, 33)]
            ),
            tf.int32,
        )
    )
    return tf.data.Dataset.zip((dataset, seeds))


def _batch(dataset, is_training, batch_size, ignore_label):
    if is_training:
        return dataset.batch(batch_size, drop_remainder=True)
    if batch_size == 1:
        return dataset.batch(1)
    # Eval images may differ in size: pad them to the largest (still k*32+1).
    padding = {
        common.IMAGE: tf.constant(0.0),  # the mean pixel, normalised
        common.LABEL: tf.constant(ignore_label, tf.int32),
        common.IMAGE_NAME: tf.constant(""),
        common.HEIGHT: tf.constant(0, tf.int32),
        common.WIDTH: tf.constant(0, tf.int32),
    }
    return dataset.padded_batch(batch_size, padding_values=padding)


def build_dataset(
    data,
    split,
    info,
    *,
    is_training,
    batch_size=None,
    crop_size=None,
    min_resize_value=None,
    max_resize_value=None,
    min_scale_factor=0.5,
    max_scale_factor=2.0,
    scale_factor_step_size=0.25,
    seed=None,
    deterministic=False,
    skip_bad_records=False,
    num_readers=4,
    repeat=None,
    shard=None,
    bad_record_counter=None,
    pad_multiple=common.PAD_MULTIPLE,
    include_original_image=False,
):
    """Batched samples of `split`: dicts keyed by `common.IMAGE`, `LABEL`, ...

    `data` says where they come from: a `registry.DataSource` (TFRecords or
    TFDS and their directories), or just the TFRecord directory (None: the
    dataset's default, `default_dataset_dir`).

    Training yields fixed `crop_size` crops (default `info.default_crop_size`)
    with DeepLab's augmentation and `drop_remainder=True`, repeated forever
    unless `repeat` says otherwise. Evaluation yields whole images padded to
    `eval_pad_size(h, w, pad_multiple)`, batch size 1 by default, one pass.
    `shard` is a `tf.distribute.InputContext` (or anything with
    `num_input_pipelines` and `input_pipeline_id`).
    """
    if isinstance(info, str):
        info = registry.get_dataset_info(info)
    split = registry.resolve_split(info, split)
    batch_size = 1 if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    opts = {
        "is_training": is_training,
        "seed": seed,
        "deterministic": bool(deterministic) or not is_training,
        "skip_bad_records": skip_bad_records,
        "num_readers": num_readers,
        "repeat": is_training if repeat is None else repeat,
        "bad_record_counter": bad_record_counter,
        "record_shard": None,
    }
    samples = _source_samples(registry.DataSource.of(data), split, info, opts, shard)
    if is_training:
        samples = _augment(
            samples, info, tuple(crop_size or info.default_crop_size), opts,
            (min_resize_value, max_resize_value),
            (min_scale_factor, max_scale_factor, scale_factor_step_size),
        )  # fmt: skip
    else:

        def eval_fn(sample):
            return preprocess.preprocess_eval(
                sample, info.ignore_label, min_resize_value, max_resize_value,
                pad_multiple, include_original_image=include_original_image,
            )  # fmt: skip

        samples = samples.map(eval_fn, num_parallel_calls=AUTOTUNE, deterministic=True)
    batched = _batch(samples, is_training, batch_size, info.ignore_label)
    options = tf.data.Options()
    options.deterministic = opts["deterministic"]
    return batched.with_options(options).prefetch(AUTOTUNE)


def _augment(samples, info, crop_size, opts, resize_range, scale_range):
    """DeepLab's training preprocessing, each sample with its own seed."""

    def train_fn(sample, element_seed):
        return preprocess.preprocess_train(
            sample,
            crop_size,
            info.ignore_label,
            *resize_range,
            *scale_range,
            element_seed,
        )

    return _seeded(samples, opts["seed"]).map(
        train_fn, num_parallel_calls=AUTOTUNE, deterministic=opts["deterministic"]
    )


def _source_samples(data, split, info, opts, shard):
    """Decoded samples from TFRecords (default) or TFDS, before preprocessing."""
    source, dataset_dir = data.dataset_source, data.dataset_dir
    if source == "tfds":
        from deeplab_dpc.data import tfds_source

        samples = tfds_source.load_samples(
            info, split, data_dir=data.tfds_data_dir, manual_dir=data.tfds_manual_dir,
            is_training=opts["is_training"], seed=opts["seed"], shard=shard,
        )  # fmt: skip
        samples = _repeat(samples, opts["repeat"])
        if opts["is_training"]:
            samples = samples.shuffle(SHUFFLE_BUFFER, seed=opts["seed"])
        return samples
    if source != "tfrecord":
        raise ValueError(f"dataset_source must be 'tfrecord' or 'tfds', got {source!r}")
    if dataset_dir is None:
        dataset_dir = default_dataset_dir(info)
    if info.name == registry.DEFAULT_DATASET:
        from deeplab_dpc.data import synthetic

        synthetic.ensure_synthetic_dataset(dataset_dir)
    files, opts["record_shard"] = _shard_files(find_shards(dataset_dir, split), shard)
    return _record_samples(files, info, opts)
