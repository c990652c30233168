"""Shared machinery of the converters in `datasets/build_<name>_data.py`.

Like DeepLab's `datasets/build_data.py` and `build_*_data.py`, each source
image becomes one `tf.train.Example` (see `records.py`) in one of
`num_shards` contiguous shards. What we add:

- Validation as we go: an unreadable image, a label that is not
  single-channel, a label whose size differs from its image, and class ids
  outside [0, num_classes) other than the ignore label are reported with the
  file name. `strict=True` stops at the first one (`ConversionError`);
  otherwise the file is skipped and counted in the summary.
- Shards are written in parallel threads (PIL and the TFRecord writer
  release the GIL for the heavy parts) under hidden temporary names, and
  renamed only when every shard of the split is complete, so no half-written
  shard ever carries a final name.
- Source JPEG/PNG RGB bytes are stored unchanged; any other image (grey,
  palette, CMYK, another codec) is converted to RGB and stored as PNG.
"""

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from PIL import Image

from deeplab_dpc.core import artefacts
from deeplab_dpc.data import records


class BadInputError(ValueError):
    """One source file cannot be converted; the message starts with its name."""


class ConversionError(RuntimeError):
    """Conversion stopped (strict mode, or nothing to convert)."""


class SourceItem(NamedTuple):
    name: str  # written as image/filename (the stem, as in DeepLab)
    image_path: str
    label_path: str | None = None  # None: an unlabelled (test) image


class ConversionSummary(NamedTuple):
    split: str
    written: int
    skipped: int
    errors: list  # (file name, reason)
    shards: list

    def lines(self):
        head = (
            f"{self.split}: wrote {self.written} examples in {len(self.shards)} shards"
        )
        head += f", skipped {self.skipped}"
        return [head] + [f"  skipped {name}: {reason}" for name, reason in self.errors]


def read_image(path):
    """(bytes, format, height, width) of an RGB image; BadInputError if unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decodes fully: catches truncated files
            fmt = (image.format or "").lower()
            width, height = image.size
            if fmt in ("jpeg", "png") and image.mode == "RGB":
                return data, fmt, height, width
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise BadInputError(f"{path}: unreadable image ({e})") from None
    return records.encode_png(rgb), "png", height, width


def read_label(path):
    """A single-channel label as an integer array [H, W] (palette PNGs: indices)."""
    try:
        with Image.open(path) as label:
            label.load()
            bands = label.getbands()
            if len(bands) != 1:
                raise BadInputError(
                    f"{path}: label is not single-channel (mode {label.mode}, "
                    f"{len(bands)} channels)"
                )
            return np.asarray(label).astype(np.int64)
    except (OSError, ValueError) as e:
        if isinstance(e, BadInputError):
            raise
        raise BadInputError(f"{path}: unreadable label ({e})") from None


def lookup_fn(mapping, ignore_label, num_source_ids=256):
    """A label mapping from a dict {source id: class id}; other ids -> ignore.

    Source ids >= `num_source_ids` are reported as out of range.
    """
    table = np.full([max(num_source_ids, 256)], ignore_label, np.int64)
    for source, target in mapping.items():
        table[source] = target

    def apply(label, path):
        bad = (label < 0) | (label >= num_source_ids)
        if bad.any():
            values = np.unique(label[bad])[:5].tolist()
            raise BadInputError(
                f"{path}: label ids {values} outside the source range [0, {num_source_ids})"
            )
        return table[label]

    return apply


def check_label_size(label, path, image_size):
    height, width = image_size
    if label.shape != (height, width):
        raise BadInputError(
            f"{path}: label size {label.shape[1]}x{label.shape[0]} differs from "
            f"image size {width}x{height}"
        )


def check_label_ids(label, path, num_classes, ignore_label):
    """Class ids must lie in [0, num_classes) or equal the ignore label."""
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_label)
    if bad.any():
        values = np.unique(label[bad])[:5].tolist()
        raise BadInputError(
            f"{path}: class ids {values} outside [0, {num_classes}) and not the "
            f"ignore label {ignore_label}"
        )


def convert_item(item, info, label_fn=None, read_label_fn=read_label):
    """One source item -> serialized Example; BadInputError names the bad file."""
    image_bytes, fmt, height, width = read_image(item.image_path)
    label_png = None
    if item.label_path is not None:
        if not os.path.isfile(item.label_path):
            raise BadInputError(f"{item.label_path}: label file missing")
        label = read_label_fn(item.label_path)
        check_label_size(label, item.label_path, (height, width))
        if label_fn is not None:
            label = label_fn(label, item.label_path)
        check_label_ids(label, item.label_path, info.num_classes, info.ignore_label)
        label_png = records.encode_png(label.astype(np.uint8))
    example = records.make_example(
        image_bytes, fmt, item.name, height, width, label_png
    )
    return example.SerializeToString()


def _write_one_shard(items, path, convert_fn, strict, stop):
    """Writes one shard under its temporary name; returns (tmp, written, errors)."""
    tmp = artefacts.temporary_path(path)
    written, errors = 0, []
    with tf.io.TFRecordWriter(tmp) as writer:
        for item in items:
            if stop.is_set():
                break
            try:
                serialized = convert_fn(item)
            except BadInputError as e:
                if strict:
                    stop.set()
                    raise
                errors.append((item.name, str(e)))
                continue
            writer.write(serialized)
            written += 1
    return tmp, written, errors


def convert_split(
    items, output_dir, split, convert_fn, num_shards=4, num_workers=4, strict=False
):
    """Converts `items` into `<split>-0000i-of-0000N.tfrecord`; returns the summary."""
    items = list(items)
    if not items:
        raise ConversionError(f"{split}: no source images found")
    os.makedirs(output_dir, exist_ok=True)
    num_shards = max(1, min(int(num_shards), len(items)))
    paths = [
        records.shard_path(output_dir, split, i, num_shards) for i in range(num_shards)
    ]
    chunks = records.split_evenly(items, num_shards)
    stop = threading.Event()
    complete = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, int(num_workers))) as pool:
            futures = [
                pool.submit(_write_one_shard, chunk, path, convert_fn, strict, stop)
                for chunk, path in zip(chunks, paths)
            ]
            try:
                results = [f.result() for f in futures]
            except BaseException:
                stop.set()  # the other shards stop at their next item
                raise
        complete = True
    except BadInputError as e:
        raise ConversionError(f"{split}: {e} (strict mode: nothing written)") from None
    finally:
        if not complete:  # also on Ctrl-C: no temporaries left behind
            _remove_temporaries(paths)
    for (tmp, _, _), path in zip(results, paths):
        artefacts.commit(tmp, path)
    records.remove_stale_shards(output_dir, split, paths)
    errors = [error for _, _, errs in results for error in errs]
    written = sum(count for _, count, _ in results)
    summary = ConversionSummary(split, written, len(errors), errors, paths)
    _write_summary(output_dir, summary)
    return summary


def _remove_temporaries(paths):
    for path in paths:
        tmp = artefacts.temporary_path(path)
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_summary(output_dir, summary):
    """`conversion_<split>.json` next to the shards: what was written and skipped."""
    artefacts.write_json(
        summary._asdict() | {"shards": [os.path.basename(p) for p in summary.shards]},
        artefacts.conversion_summary_path(output_dir, summary.split),
        sort_keys=False,
    )


def limit_items(items, max_images):
    """The first `max_images` items (all when None or <= 0)."""
    items = list(items)
    return items[:max_images] if max_images and max_images > 0 else items


def read_list(path):
    """Stems from a list file (one per line; blank lines and '#' comments ignored)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"list file not found: {path}")
    with open(path, encoding="utf-8") as f:
        lines = [line.split("#")[0].strip() for line in f]
    return [line for line in lines if line]


def run_splits(
    split_items,
    output_dir,
    convert_fn,
    num_shards=4,
    num_workers=4,
    strict=False,
    max_images=None,
    log=print,
):
    """Converts several splits ({split: items}); logs and returns their summaries."""
    summaries = []
    for split, items in split_items.items():
        summary = convert_split(
            limit_items(items, max_images), output_dir, split, convert_fn,
            num_shards=num_shards, num_workers=num_workers, strict=strict,
        )  # fmt: skip
        for line in summary.lines():
            log(line)
        summaries.append(summary)
    return summaries
