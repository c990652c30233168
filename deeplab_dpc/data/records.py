"""The TFRecord format: one `tf.train.Example` per image, DeepLab's keys unchanged.

Keys (see `deeplab_dpc.core.common`): `image/encoded` (JPEG or PNG bytes),
`image/filename`, `image/format` (`jpeg`/`png`), `image/height`,
`image/width`, `image/channels` (3), `image/segmentation/class/encoded`
(single-channel PNG, one class id per pixel) and
`image/segmentation/class/format` (`png`). The two label keys are left out
for unlabelled (test) images. Shards are named
`<split>-00000-of-0000N.tfrecord` and found with the glob `<split>-*`, as in
DeepLab's `build_data.py`.

Deviation: shards are first written under a hidden temporary name (which the
`<split>-*` glob cannot match) and renamed when complete, so an interrupted
run never leaves a half-written shard under a final name.
"""

import glob
import io
import os
import struct

import numpy as np
import tensorflow as tf
from PIL import Image

from deeplab_dpc.core import artefacts, common

SHARD_TEMPLATE = "{split}-{index:05d}-of-{num_shards:05d}.tfrecord"
IMAGE_FORMATS = ("jpeg", "png")


def shard_path(output_dir, split, index, num_shards):
    return os.path.join(
        output_dir,
        SHARD_TEMPLATE.format(split=split, index=index, num_shards=num_shards),
    )


def shard_glob(dataset_dir, split):
    """The glob that finds the shards of `split` (DeepLab's `<split>-*`)."""
    return os.path.join(dataset_dir, f"{split}-*")


def list_shards(dataset_dir, split):
    return sorted(tf.io.gfile.glob(shard_glob(dataset_dir, split)))


def _bytes(value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def make_example(
    image_bytes, image_format, filename, height, width, label_png_bytes=None
):
    """One `tf.train.Example` in the record format above."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(
            f"image format must be one of {IMAGE_FORMATS}, got {image_format!r}"
        )
    feature = {
        common.KEY_IMAGE_ENCODED: _bytes(image_bytes),
        common.KEY_IMAGE_FILENAME: _bytes(filename),
        common.KEY_IMAGE_FORMAT: _bytes(image_format),
        common.KEY_IMAGE_HEIGHT: _int64(height),
        common.KEY_IMAGE_WIDTH: _int64(width),
        common.KEY_IMAGE_CHANNELS: _int64(3),
    }
    if label_png_bytes is not None:
        feature[common.KEY_LABEL_ENCODED] = _bytes(label_png_bytes)
        feature[common.KEY_LABEL_FORMAT] = _bytes("png")
    return tf.train.Example(features=tf.train.Features(feature=feature))


def encode_png(array, compress_level=6):
    """PNG bytes of a uint8 array [H, W] (label) or [H, W, 3] (image)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


def write_shard(path, serialized_examples):
    """Writes one shard atomically (temporary name, then rename); returns its count."""
    tmp = artefacts.temporary_path(path)
    count = 0
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for example in serialized_examples:
                if isinstance(example, tf.train.Example):
                    example = example.SerializeToString()
                writer.write(example)
                count += 1
        artefacts.commit(tmp, path)
    finally:
        artefacts.remove_quietly(tmp)
    return count


def remove_stale_shards(output_dir, split, keep):
    """Deletes shards of `split` left by an earlier run with another shard count."""
    keep = {os.path.abspath(p) for p in keep}
    for path in glob.glob(os.path.join(output_dir, f"{split}-*-of-*.tfrecord")):
        if os.path.abspath(path) not in keep:
            os.remove(path)


def split_evenly(items, num_parts):
    """`items` in `num_parts` contiguous chunks whose sizes differ by at most one."""
    n = len(items)
    return [
        items[i * n // num_parts : (i + 1) * n // num_parts] for i in range(num_parts)
    ]


def write_shards(examples, output_dir, split, num_shards):
    """Writes `examples` (Examples or bytes) in `num_shards` contiguous, atomic shards.

    Returns the shard paths. Shards of the same split with another shard count
    are removed afterwards, so the `<split>-*` glob finds exactly these files.
    """
    examples = list(examples)
    os.makedirs(output_dir, exist_ok=True)
    num_shards = max(1, int(num_shards))
    paths = []
    for index, chunk in enumerate(split_evenly(examples, num_shards)):
        path = shard_path(output_dir, split, index, num_shards)
        write_shard(path, chunk)
        paths.append(path)
    remove_stale_shards(output_dir, split, paths)
    return paths


def scan_shard(path):
    """Counts the complete records of a shard from their length headers.

    Returns `(num_complete, problem)`, `problem` being None or a short text
    saying where the file ends early. Reads 12 bytes per record (no payload),
    so it is cheap enough to run before every input pipeline is built.
    """
    size = tf.io.gfile.stat(path).length
    count = 0
    offset = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while offset < size:
            if size - offset < 12:
                return count, f"{size - offset} stray bytes after record {count - 1}"
            f.seek(offset)
            (length,) = struct.unpack("<Q", f.read(8))
            end = offset + 12 + length + 4
            if end > size:
                return count, f"truncated: needs {end - size} more bytes"
            offset = end
            count += 1
    return count, None
