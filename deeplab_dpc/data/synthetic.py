"""`synthetic`: the built-in default dataset, generated deterministically (no download).

Not part of DeepLab or the DPC paper: it exists so that every entry point runs
on a fresh machine without data, and so that a multi-scale head has something
to find. Street-like scenes: sky above a horizon, ground split into vertical
bands of two surface types, "road" (grey, lane dashes) and "field" (green,
furrows). Objects come in two shapes, boxes (vehicles) and upright figures
(people), at heights from 6 to about 60 pixels. An object's *appearance does
not depend on its surroundings*; its class does:

| class | shape | stands on |
| --- | --- | --- |
| 0 background | sky, road, field | - |
| 1 car | box | road |
| 2 tractor | box | field |
| 3 pedestrian | figure | road |
| 4 farmer | figure | field |

So the right label of a pixel inside an object needs context from outside the
object: a few pixels for a small one, the whole object size for a large one
(a 60-pixel box needs a receptive field reaching past its own half-width).
Bands of both surface types often share an image, so one global image-level
feature cannot decide either: a head needs context at several scales (ASPP,
DPC) to get all four object classes right.

Images and labels are stored losslessly as PNG in the common record format.
"""

import os
import shutil
import time

import numpy as np
from absl import logging

from deeplab_dpc import artefacts
from deeplab_dpc.data import records, registry

INFO = registry.DATASETS["synthetic"]
DEFAULT_IMAGE_SIZE = INFO.default_crop_size  # (129, 129): 4 * 32 + 1
META_FILENAME = artefacts.SYNTHETIC_INFO
GENERATOR_VERSION = 1
ROAD, FIELD = 0, 1
BOX, FIGURE = 0, 1
# Class of (shape, surface): see the table in the module docstring.
OBJECT_CLASS = {(BOX, ROAD): 1, (BOX, FIELD): 2, (FIGURE, ROAD): 3, (FIGURE, FIELD): 4}


def _sky(rng, height, width, horizon):
    top = np.array([60, 110, 200]) + rng.uniform(-20, 20, 3)
    bottom = np.array([170, 200, 230]) + rng.uniform(-20, 20, 3)
    t = (np.arange(height) / max(1, horizon))[:, None, None].clip(0, 1)
    return np.broadcast_to(top + (bottom - top) * t, (height, width, 3))


def _surface(rng, kind, height, width, horizon):
    """Road (grey, lane dashes) or field (green, furrows) texture over the image."""
    yy, xx = np.mgrid[0:height, 0:width]
    if kind == ROAD:
        base = np.full((height, width, 3), 100.0) + rng.uniform(-15, 15)
        period = rng.integers(8, 14)
        dashes = (np.abs(xx - rng.integers(0, width)) % 24 < 2) & (
            yy % period < period // 2
        )
        base[dashes & (yy > horizon)] = 215.0
        return base
    base = np.array([70.0, 125.0, 50.0]) + rng.uniform(-15, 15, 3)
    furrows = ((yy + rng.integers(0, 4)) % 4 < 2)[..., None]
    return np.broadcast_to(base, (height, width, 3)) - 25.0 * furrows


def _bands(rng, width):
    """Vertical ground bands: list of (x0, x1, surface)."""
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    cuts = np.sort(
        rng.choice(np.arange(width // 5, width - width // 5), count - 1, replace=False)
    )
    edges = [0, *cuts.tolist(), width]
    first = int(rng.integers(0, 2))
    return [(edges[i], edges[i + 1], (first + i) % 2) for i in range(count)]


def _object_mask(shape, x0, y1, obj_h, obj_w, yy, xx):
    """Pixels of one object whose bottom-left corner is (y1, x0)."""
    y0 = y1 - obj_h
    if shape == BOX:
        return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x0 + obj_w)
    cx, head_r = x0 + obj_w / 2.0, max(1.0, obj_w / 2.2)
    body_top = y0 + 2 * head_r
    body = ((xx - cx) / (obj_w / 2.0)) ** 2 + (
        (yy - (body_top + y1) / 2.0) / max(1.0, (y1 - body_top) / 2.0)
    ) ** 2 <= 1.0
    head = (xx - cx) ** 2 + (yy - (y0 + head_r)) ** 2 <= head_r**2
    return body | head


def _draw_object(rng, image, label, band, horizon, yy, xx):
    height, _ = label.shape
    x_lo, x_hi, surface = band
    shape = int(rng.integers(0, 2))
    obj_h = int(np.exp(rng.uniform(np.log(6), np.log(min(60, height - horizon)))))
    aspect = rng.uniform(1.2, 2.0) if shape == BOX else rng.uniform(0.35, 0.5)
    obj_w = int(min(max(3, round(obj_h * aspect)), x_hi - x_lo - 2))
    if obj_w < 3:
        return
    y1 = int(rng.integers(horizon + obj_h // 3 + 1, height + 1))
    x0 = int(rng.integers(x_lo + 1, x_hi - obj_w))
    mask = _object_mask(shape, x0, y1, obj_h, obj_w, yy, xx)
    # Colours from one palette for every class: greys and greens included, so
    # the object itself never tells its surface.
    color = rng.uniform(30, 230, 3)
    outline = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1))
    image[mask] = color
    image[outline] = color * 0.4
    if shape == BOX and obj_h >= 8:
        window = mask & (yy >= y1 - obj_h + obj_h // 5) & (yy < y1 - obj_h // 2)
        window &= (xx >= x0 + obj_w // 5) & (xx < x0 + obj_w - obj_w // 5)
        image[window] = 0.5 * color + 100
    label[mask] = OBJECT_CLASS[(shape, surface)]


def generate_scene(rng, image_size=DEFAULT_IMAGE_SIZE):
    """One (image uint8 [H, W, 3], label uint8 [H, W]) pair from `rng`."""
    height, width = image_size
    horizon = int(rng.uniform(0.25, 0.45) * height)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.array(_sky(rng, height, width, horizon), dtype=np.float64)
    label = np.zeros((height, width), np.uint8)
    bands = _bands(rng, width)
    for x_lo, x_hi, surface in bands:
        texture = _surface(rng, surface, height, width, horizon)
        region = (yy >= horizon) & (xx >= x_lo) & (xx < x_hi)
        image[region] = texture[region]
    objects = [
        (bands[int(rng.integers(0, len(bands)))]) for _ in range(rng.integers(2, 7))
    ]
    for band in objects:
        _draw_object(rng, image, label, band, horizon, yy, xx)
    image = image * rng.uniform(0.8, 1.2) + rng.normal(0.0, 6.0, image.shape)
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


def _is_complete(dataset_dir):
    return (
        os.path.isfile(os.path.join(dataset_dir, META_FILENAME))
        and bool(records.list_shards(dataset_dir, "train"))
        and bool(records.list_shards(dataset_dir, "val"))
    )


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
    tmp = artefacts.make_staging_dir(os.path.dirname(dataset_dir), ".synthetic-tmp-")
    try:
        generate_synthetic_dataset(tmp, **kwargs)
        try:
            os.rename(tmp, dataset_dir)  # atomic; works onto a missing or empty dir
        except OSError:
            if not _is_complete(dataset_dir):  # a non-empty dir: move file by file
                names = sorted(os.listdir(tmp), key=lambda n: n == META_FILENAME)
                for name in names:  # the meta file last: it marks completion
                    os.replace(os.path.join(tmp, name), os.path.join(dataset_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info(
        "Synthetic dataset written to %s (%.0f s)",
        dataset_dir,
        time.perf_counter() - start,
    )
    return dataset_dir
