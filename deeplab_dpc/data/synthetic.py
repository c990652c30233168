"""`synthetic`: the built-in default dataset, generated deterministically (no download).

Not part of DeepLab or the DPC paper: it exists so that every entry point runs
on a fresh machine without data, and so that what a dense-prediction head is
searched for decides the score. Each image is a grey ground under a large
coloured *band* (its top 22-30%, red or blue), with objects at several
scales in its lower part (below 42% of the height), all drawn from one
palette of saturated colours:

| class | what it is | told apart by |
| --- | --- | --- |
| 0 background | ground, band | - |
| 1 small_disc | disc, radius 8-12 px (about one stride-16 cell across) | size: the large discs look the same up close |
| 2 disc_red_band | disc, radius 20-28 px, in an image with a red band | the band, 15-90 px above its pixels |
| 3 disc_blue_band | the same disc, in an image with a blue band | the band, 15-90 px above its pixels |
| 4 line | bar 8-11 px wide, 60-110 px long, any angle | its shape (thin: under one cell across) |

- *Scale*: a small and a large disc look the same up close (colours,
  speckle, a dark outline of the same width); only their extent tells them
  apart, so a pixel inside a large disc needs a receptive field of the
  disc's size. Both sizes are in every image, with the lines: several scales
  per image.
- *Context at a distance*: a large disc's class is the colour of the band,
  which lies 15-90 px (1 to 6 stride-16 cells) above its pixels and never
  touches them; object colours are drawn independently of the band (reds
  and blues included), so nothing next to a disc tells. A head without that
  reach (a 1x1 conv, small atrous rates, pooling grids with more than one
  row) can only guess between the two large-disc classes for most of their
  pixels; image pooling, a vertical rate of 6, or a chain of smaller rates
  reaches the band.
- *Thin and small structures*: lines narrower than one cell of the stride-16
  features, small discs about one cell across. (Thinner and smaller ones,
  3-4 px lines and 4-7 px discs, were tried first: at output stride 16 and
  the main job's few hundred steps no head learnt them, IoU 0.00-0.06; a
  band of 7-11% of the height was tried too: no head learnt to use it in
  the proxy's 150 steps.)

g3doc/datasets.md gives the check that a 1x1-conv head and ASPP land where
this design says they should (`bench/bench_synthetic_heads.py`).

Images and labels are stored losslessly as PNG in the common record format.
"""

import os
import shutil
import time

import numpy as np
from absl import logging

from deeplab_dpc.core import artefacts
from deeplab_dpc.data import records, registry

INFO = registry.DATASETS["synthetic"]
DEFAULT_IMAGE_SIZE = INFO.default_crop_size  # (129, 129): 4 * 32 + 1
META_FILENAME = artefacts.SYNTHETIC_INFO
GENERATOR_VERSION = 2  # 1: street scenes (car, tractor, pedestrian, farmer)
BACKGROUND, SMALL_DISC, DISC_RED_BAND, DISC_BLUE_BAND, LINE = range(5)
RED, BLUE = 0, 1
BAND_COLORS = {RED: (200.0, 45.0, 40.0), BLUE: (40.0, 70.0, 200.0)}
LARGE_DISC_CLASS = {RED: DISC_RED_BAND, BLUE: DISC_BLUE_BAND}
SMALL_RADIUS, LARGE_RADIUS = (8, 12), (20, 28)  # px at 129x129; scaled with the image
LINE_WIDTH, LINE_LENGTH = (8.0, 11.0), (60, 110)
BAND_HEIGHT = (0.22, 0.30)  # of the image height
OBJECTS_TOP = 0.42  # objects (and their outlines) lie below this share of the height


def _ground(rng, height, width):
    """Grey ground with pixel noise (no colour: never a cue)."""
    ground = rng.uniform(105, 135) + rng.normal(0.0, 4.0, (height, width))
    return np.repeat(ground[..., None], 3, axis=2)


def _object_color(rng, ground_level):
    """A saturated colour of any hue (reds and blues included), never grey."""
    del ground_level
    hue = rng.uniform(0.0, 6.0)
    ramp = np.clip(np.abs((hue + np.array([0.0, 4.0, 2.0])) % 6.0 - 3.0) - 1.0, 0, 1)
    return 30.0 + 200.0 * ramp  # HSV with saturation 0.87, value 0.9


def _uniform(rng, low, high):
    """rng.uniform(low, high); `low` when the range is empty (images far below
    129x129, where an object may then cross the image's edge)."""
    return rng.uniform(low, max(low, high))


def _box(height, width, y0, y1, x0, x1):
    """Slices of the pixel box [y0, y1] x [x0, x1], clipped to the image."""
    return (
        slice(max(0, int(np.floor(y0))), min(height, int(np.ceil(y1)) + 1)),
        slice(max(0, int(np.floor(x0))), min(width, int(np.ceil(x1)) + 1)),
    )


def _draw_disc(rng, image, label, cls, radius, top, yy, xx, ground_level):
    height, width = label.shape
    cy = _uniform(rng, top + radius, height - 1 - radius * 0.5)
    cx = _uniform(rng, radius * 0.5, width - 1 - radius * 0.5)
    box = _box(height, width, cy - radius, cy + radius, cx - radius, cx + radius)
    dist = np.hypot(yy[box] - cy, xx[box] - cx)
    mask = dist <= radius
    color = _object_color(rng, ground_level)
    speckle = rng.normal(0.0, 6.0, (int(mask.sum()), 1))
    patch, patch_label = image[box], label[box]  # views: drawn in place
    patch[mask] = color + speckle
    patch[mask & (dist > radius - 1.2)] = color * 0.35  # outline: same at any size
    patch_label[mask] = cls


def _draw_line(rng, image, label, cls, top, yy, xx, ground_level):
    height, width = label.shape
    scale = min(height, width) / 129.0
    length = rng.uniform(*LINE_LENGTH) * scale
    half_width = max(0.75, rng.uniform(*LINE_WIDTH) * scale / 2.0)
    angle = rng.uniform(0, np.pi)
    dy, dx = np.sin(angle) * length / 2, np.cos(angle) * length / 2
    cy = _uniform(rng, top + abs(dy) + half_width, height - 1 - half_width)
    cx = _uniform(rng, abs(dx), width - 1 - abs(dx))
    y0, x0, y1, x1 = cy - dy, cx - dx, cy + dy, cx + dx
    box = _box(
        height, width, min(y0, y1) - half_width, max(y0, y1) + half_width,
        min(x0, x1) - half_width, max(x0, x1) + half_width,
    )  # fmt: skip
    by, bx = yy[box], xx[box]
    t = ((by - y0) * (y1 - y0) + (bx - x0) * (x1 - x0)) / max(1e-9, length**2)
    t = t.clip(0, 1)
    dist = np.hypot(by - (y0 + t * (y1 - y0)), bx - (x0 + t * (x1 - x0)))
    mask = dist <= half_width
    image[box][mask] = _object_color(rng, ground_level)
    label[box][mask] = cls


def generate_scene(rng, image_size=DEFAULT_IMAGE_SIZE):
    """One (image uint8 [H, W, 3], label uint8 [H, W]) pair from `rng`."""
    height, width = image_size
    scale = min(height, width) / 129.0
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    image = _ground(rng, height, width)
    ground_level = float(image.mean())
    label = np.zeros((height, width), np.uint8)
    band = int(rng.integers(0, 2))
    band_h = max(2, int(round(rng.uniform(*BAND_HEIGHT) * height)))
    image[:band_h] = np.array(BAND_COLORS[band]) + rng.normal(
        0.0, 8.0, (band_h, width, 3)
    )
    top = OBJECTS_TOP * height
    objects = [LARGE_DISC_CLASS[band]] * int(rng.integers(1, 3))
    objects += [SMALL_DISC] * int(rng.integers(4, 8))
    objects += [LINE] * int(rng.integers(2, 5))
    for index in rng.permutation(len(objects)):
        cls = objects[index]
        if cls == LINE:
            _draw_line(rng, image, label, cls, top, yy, xx, ground_level)
        else:
            low, high = SMALL_RADIUS if cls == SMALL_DISC else LARGE_RADIUS
            radius = rng.uniform(low, high) * scale
            _draw_disc(rng, image, label, cls, radius, top, yy, xx, ground_level)
    image = image * rng.uniform(0.9, 1.1) + rng.normal(0.0, 3.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def _examples(split_id, count, seed, image_size):
    for index in range(count):
        rng = np.random.default_rng([seed, split_id, index])
        image, label = generate_scene(rng, image_size)
        name = f"synthetic_{('train', 'val')[split_id]}_{index:05d}"
        yield records.make_example(
            records.encode_png(image, compress_level=1), "png", name, image.shape[0],
            image.shape[1], label_png_bytes=records.encode_png(label, compress_level=1),
        ).SerializeToString()  # fmt: skip


def generate_synthetic_dataset(
    output_dir,
    num_train=INFO.splits["train"],
    num_val=INFO.splits["val"],
    seed=0,
    image_size=DEFAULT_IMAGE_SIZE,
    num_shards=2,
):
    """Writes `train-*` and `val-*` shards and `synthetic_info.json`; same seed, same bytes."""
    image_size = tuple(int(v) for v in image_size)
    if min(image_size) < 33:
        raise ValueError(
            f"synthetic image_size must be at least 33x33, got {image_size}"
        )
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        examples = _examples(split_id, int(count), seed, image_size)
        records.write_shards(examples, output_dir, split, num_shards)
    meta = {
        "generator": "deeplab_dpc.data.synthetic",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "splits": {"train": int(num_train), "val": int(num_val)},
        "image_size": list(image_size),
        "num_shards": num_shards,
        "class_names": list(INFO.class_names),
    }
    meta_path = os.path.join(output_dir, META_FILENAME)
    artefacts.write_json(meta, meta_path, sort_keys=False)
    return output_dir


def _meta_version(dataset_dir):
    """The generator version in `dataset_dir`'s meta file (None: no readable meta)."""
    try:
        meta = artefacts.read_json(os.path.join(dataset_dir, META_FILENAME))
    except (OSError, ValueError):  # ArtefactError is a ValueError
        return None
    return meta.get("version") if isinstance(meta, dict) else None


def _is_complete(dataset_dir):
    return (
        _meta_version(dataset_dir) == GENERATOR_VERSION
        and bool(records.list_shards(dataset_dir, "train"))
        and bool(records.list_shards(dataset_dir, "val"))
    )


def _remove_older_version(dataset_dir):
    """Shards and meta of an older generator version (other classes) go first."""
    version = _meta_version(dataset_dir)
    if version is None or version == GENERATOR_VERSION:
        return
    logging.info(
        "%s holds synthetic data of generator version %s (other classes): "
        "replacing it with version %d", dataset_dir, version, GENERATOR_VERSION,
    )  # fmt: skip
    for split in ("train", "val"):
        for path in records.list_shards(dataset_dir, split):
            os.remove(path)
    os.remove(os.path.join(dataset_dir, META_FILENAME))


def ensure_synthetic_dataset(dataset_dir, **kwargs):
    """Generates the dataset into `dataset_dir` unless already there (idempotent).

    The one behaviour for a synthetic `--dataset_dir` without shards (missing,
    empty, or holding other files): the dataset is generated there, with a
    log line saying so and one when it is written. Real datasets without
    shards are a one-line error (`pipeline.find_shards`).

    Generation goes to a temporary sibling directory that is renamed into
    place, so concurrent callers and interrupted runs never see half a dataset.
    """
    dataset_dir = os.path.abspath(dataset_dir)
    if _is_complete(dataset_dir):
        return dataset_dir
    splits = {"train": kwargs.get("num_train", INFO.splits["train"]),
              "val": kwargs.get("num_val", INFO.splits["val"])}  # fmt: skip
    logging.info(
        "No synthetic shards in %s: generating the synthetic dataset there "
        "(%d train / %d val images, once)", dataset_dir, splits["train"], splits["val"],
    )  # fmt: skip
    start = time.perf_counter()
    _remove_older_version(dataset_dir)
    tmp = artefacts.make_staging_dir(os.path.dirname(dataset_dir), ".synthetic-tmp-")
    try:
        generate_synthetic_dataset(tmp, **kwargs)
        try:
            artefacts.rename(tmp, dataset_dir)  # atomic onto a missing or empty dir
        except OSError:
            if not _is_complete(dataset_dir):  # a non-empty dir: move file by file
                # the meta file last: it marks completion
                artefacts.move_files(tmp, dataset_dir, last=(META_FILENAME,))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info(
        "Synthetic dataset written to %s (%.0f s)",
        dataset_dir,
        time.perf_counter() - start,
    )
    return dataset_dir
