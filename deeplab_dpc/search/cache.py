"""The proxy task's feature cache: backbone features computed once, then reused.

Chen et al. (NeurIPS 2018, Sec. 3.3): "we pre-compute and cache the
backbone's features on the training set" so that each candidate cell trains
on the cached features alone, which equals not back-propagating into the
backbone and removes the backbone from every candidate's cost.

Layout of a cache directory::

    cache_info.json                   backbone config, checkpoint hash, splits
    train-00000.features.npy          [N, h, w, C] float16 (or float32)
    train-00000.labels.npy            [N, H, W] uint8 (int32 if ids exceed 255)
    val-00000.features.npy ...

`cache_info.json` is written last and the directory is filled under a
temporary name and renamed, so a cache is either complete or absent. Processes
that share a `cache_dir` (camvid.md starts two searches on one cache) build it
once: the builder holds an exclusive lock on `.<cache_dir name>.lock` beside
it, and the others wait for it, then reuse what it wrote.

Deviations and choices (the paper gives no details):

* Training features are of augmented crops (DeepLab's random scale, crop and
  flip, seeded), `train_passes` passes over the training set in full batches
  (the last partial batch of each pass is dropped); the same crops are
  reused by every candidate, whereas full training draws fresh ones.
* Validation features are of whole images padded to `k * 32 + 1` (the
  evaluation pipeline); shards hold one image size each.
* Features are stored as float16 by default (half the memory; the cell
  casts them to float32).
* The cache is local only: its shards are memory-mapped and its build lock
  is an fcntl lock, neither of which a remote file system (`gs://`) offers;
  a remote `cache_dir` is refused with a CacheError. The checkpoint it is
  computed from may be remote.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil

import numpy as np
from absl import logging

from deeplab_dpc.core import artefacts, common, interrupts

CACHE_INFO_FILENAME = artefacts.CACHE_INFO
CACHE_VERSION = 1
FEATURES_SUFFIX = ".features.npy"
LABELS_SUFFIX = ".labels.npy"
DTYPES = ("float16", "float32")
BACKBONE_FIELDS = ("model_variant", "output_stride", "depth_multiplier")


class CacheError(ValueError):
    """A feature cache that cannot be used; the message is one line."""


# === Identity ==============================================================


def checkpoint_sha1(prefix):
    """sha1 over the bytes of a checkpoint's files (`prefix.index`, `prefix.data-*`)."""
    directory, base = os.path.split(prefix)
    names = sorted(
        n for n in artefacts.listdir(directory or ".") if n.startswith(base + ".")
    )
    digest = hashlib.sha1()
    for name in names:
        digest.update(name[len(base) :].encode())
        with artefacts.open_file(os.path.join(directory, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def backbone_identity(model_config):
    """The fields of a model config that decide the backbone's features."""
    return {k: model_config[k] for k in BACKBONE_FIELDS}


def _fingerprint(info):
    fields = {
        k: info[k]
        for k in ("backbone", "checkpoint_sha1", "dataset", "crop_size", "dtype")
    }
    fields["train_passes"] = info["train_passes"]
    fields["seed"] = info["seed"]
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# === Writing ===============================================================


def _label_dtype(num_classes, ignore_label):
    return np.uint8 if max(num_classes - 1, ignore_label) < 256 else np.int32


class _ShardWriter:
    """Buffers (features, labels) per image size and writes full shards."""

    def __init__(self, directory, split, shard_size, dtype, label_dtype):
        self.directory, self.split = directory, split
        self.shard_size, self.dtype, self.label_dtype = shard_size, dtype, label_dtype
        self.buffers, self.shards = {}, []

    def add(self, features, labels):
        key = features.shape[1:] + labels.shape[1:]
        feats, labs = self.buffers.setdefault(key, ([], []))
        feats.append(features.astype(self.dtype))
        labs.append(labels.astype(self.label_dtype))
        if sum(len(f) for f in feats) >= self.shard_size:
            self._flush(key)

    def _flush(self, key):
        feats, labs = self.buffers.pop(key)
        features, labels = np.concatenate(feats), np.concatenate(labs)
        name = f"{self.split}-{len(self.shards):05d}"
        np.save(os.path.join(self.directory, name + FEATURES_SUFFIX), features)
        np.save(os.path.join(self.directory, name + LABELS_SUFFIX), labels)
        self.shards.append(
            {
                "name": name,
                "count": int(len(features)),
                "feature_shape": list(features.shape[1:]),
                "label_shape": list(labels.shape[1:]),
            }
        )

    def close(self):
        for key in list(self.buffers):
            self._flush(key)
        return self.shards


def _write_split(directory, split, batches, feature_fn, writer_args):
    """Runs the backbone over `batches` and writes shards; returns their list."""
    writer = _ShardWriter(directory, split, *writer_args)
    for batch in batches:
        interrupts.check()  # a safe point (the handler's raise can be swallowed)
        features = feature_fn(batch[common.IMAGE]).numpy()
        writer.add(features, batch[common.LABEL].numpy()[..., 0])
    return writer.close()


def _feature_fn(model):
    """The backbone's features as one compiled function (one trace for all sizes)."""
    import tensorflow as tf

    backbone = model.get_layer(common.BACKBONE)
    return tf.function(
        lambda x: backbone(x, training=False)[common.FEATURES],
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )


def _install(tmp, cache_dir, info):
    """Writes the info file last, then renames the filled directory into place."""
    artefacts.write_json(info, os.path.join(tmp, CACHE_INFO_FILENAME))
    artefacts.install_dir(tmp, cache_dir)  # one there is incomplete: see _existing


def write_feature_cache(
    cache_dir, checkpoint, dataset_dir, dataset_info, *, crop_size,
    train_split="train", val_split="val", train_passes=1, batch_size=8,
    dtype="float16", seed=0, shard_size=256, expected_backbone=None,
):  # fmt: skip
    """Computes backbone features of the train and val splits into `cache_dir`.

    `checkpoint` is a checkpoint directory or prefix with `model_config.json`
    (e.g. from the weight importer or train.py); only its backbone is used.
    An existing complete cache with the same fingerprint is reused as is; one
    with another fingerprint is an error (pick another `cache_dir`).
    Returns the opened `FeatureCache`.
    """
    from deeplab_dpc.data.pipeline import build_dataset
    from deeplab_dpc.modeling.checkpoints import restore_model

    if dtype not in DTYPES:
        raise CacheError(
            f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}"
        )
    _check_local(cache_dir)
    model, config, prefix = restore_model(checkpoint)
    if expected_backbone is not None:
        have = {**backbone_identity(config), "checkpoint_sha1": checkpoint_sha1(prefix)}
        _check_backbone(checkpoint, have, expected_backbone)
    info = {
        "version": CACHE_VERSION, "backbone": backbone_identity(config),
        "model_config": config, "checkpoint": artefacts.absolute(prefix),
        "checkpoint_sha1": checkpoint_sha1(prefix), "dataset": dataset_info.name,
        "num_classes": dataset_info.num_classes, "ignore_label": dataset_info.ignore_label,
        "crop_size": [int(v) for v in crop_size], "train_passes": int(train_passes),
        "seed": int(seed), "dtype": dtype,
    }  # fmt: skip
    info["fingerprint"] = _fingerprint(info)
    existing = _existing(cache_dir, info)
    if existing is not None:
        return existing
    with _build_lock(cache_dir):
        # Another process may have built it while this one waited for the lock.
        existing = _existing(cache_dir, info)
        if existing is not None:
            return existing
        label_dtype = _label_dtype(dataset_info.num_classes, dataset_info.ignore_label)
        writer_args = (shard_size, np.dtype(dtype), label_dtype)
        train = build_dataset(
            dataset_dir, train_split, dataset_info, is_training=True,
            batch_size=batch_size, crop_size=tuple(crop_size), seed=seed,
            deterministic=True, repeat=int(train_passes),
        )  # fmt: skip
        val = build_dataset(dataset_dir, val_split, dataset_info, is_training=False)
        parent = os.path.dirname(os.path.abspath(cache_dir))
        tmp = artefacts.make_staging_dir(parent, ".tmp_cache_")
        try:
            feature_fn = _feature_fn(model)
            info["splits"] = {
                "train": _write_split(tmp, "train", train, feature_fn, writer_args),
                "val": _write_split(tmp, "val", val, feature_fn, writer_args),
            }
            if not info["splits"]["train"]:
                raise CacheError(
                    f"{dataset_dir}: the {train_split} split gave no full batch of"
                    f" {batch_size} crops; use a smaller batch size"
                )
            _install(tmp, cache_dir, info)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
        return open_cache(cache_dir)


@contextlib.contextmanager
def _build_lock(cache_dir):
    """Holds an exclusive lock on `.<name>.lock` beside `cache_dir` (waits, saying so).

    Closing the file releases the lock, also when the process dies.
    """
    cache_dir = os.path.abspath(cache_dir)
    parent, name = os.path.split(cache_dir)
    os.makedirs(parent, exist_ok=True)
    with open(os.path.join(parent, f".{name}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.info(
                "Waiting for another process to finish the feature cache %s", cache_dir
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_cache_from_arrays(cache_dir, splits, info, shard_size=256):
    """Writes already computed features in the cache format; returns the cache.

    `splits`: {"train": (features, labels), "val": (features, labels)} with
    features [N, h, w, C] and labels [N, H, W]. `info` gives at least
    `backbone` (the `BACKBONE_FIELDS`), `num_classes`, `ignore_label` and
    `dtype`; missing identity fields are filled with placeholders naming the
    source as "arrays". Used for features computed outside `write_feature_cache`
    (and by the tests and the benchmark).
    """
    info = {
        "version": CACHE_VERSION, "model_config": None, "checkpoint": "arrays",
        "checkpoint_sha1": "", "dataset": "arrays", "crop_size": None,
        "train_passes": 1, "seed": 0, **info,
    }  # fmt: skip
    info["fingerprint"] = _fingerprint(info)
    _check_local(cache_dir)
    label_dtype = _label_dtype(info["num_classes"], info["ignore_label"])
    os.makedirs(cache_dir, exist_ok=True)
    info["splits"] = {}
    for split, (features, labels) in splits.items():
        writer = _ShardWriter(
            cache_dir, split, shard_size, np.dtype(info["dtype"]), label_dtype
        )
        for start in range(0, len(features), shard_size):
            stop = start + shard_size
            writer.add(np.asarray(features[start:stop]), np.asarray(labels[start:stop]))
        info["splits"][split] = writer.close()
    artefacts.write_json(info, os.path.join(cache_dir, CACHE_INFO_FILENAME))
    return open_cache(cache_dir)


def _existing(cache_dir, info):
    """The complete cache at `cache_dir` if its fingerprint matches, else None."""
    if not os.path.exists(os.path.join(cache_dir, CACHE_INFO_FILENAME)):
        return None
    cache = open_cache(cache_dir)
    if cache.fingerprint != info["fingerprint"]:
        raise CacheError(
            f"{cache_dir}: holds another cache (backbone {_show(cache.backbone)},"
            f" checkpoint {cache.info['checkpoint']}, dataset {cache.info['dataset']},"
            f" crop {cache.info['crop_size']}); pass another --cache_dir or delete it"
        )
    return cache


def _show(identity):
    return "/".join(f"{k}={identity[k]}" for k in BACKBONE_FIELDS)


def _check_backbone(where, have, want):
    diff = {k: v for k, v in want.items() if v is not None and have.get(k) != v}
    if diff:
        have_text = ", ".join(f"{k}={have.get(k)}" for k in diff)
        want_text = ", ".join(f"{k}={v}" for k, v in diff.items())
        raise CacheError(
            f"{where}: made with another backbone ({have_text}) than requested"
            f" ({want_text}); use a cache built from the requested backbone"
        )


# === Reading ===============================================================


class FeatureCache:
    """A complete cache directory; arrays are read lazily (memory-mapped)."""

    def __init__(self, cache_dir, info):
        self.cache_dir = cache_dir
        self.info = info

    fingerprint = property(lambda self: self.info["fingerprint"])
    backbone = property(lambda self: self.info["backbone"])
    num_classes = property(lambda self: self.info["num_classes"])
    ignore_label = property(lambda self: self.info["ignore_label"])
    output_stride = property(lambda self: self.info["backbone"]["output_stride"])

    @property
    def feature_channels(self):
        return self.info["splits"]["train"][0]["feature_shape"][-1]

    def shards(self, split):
        return self.info["splits"][split]

    def count(self, split):
        return sum(s["count"] for s in self.shards(split))

    def nbytes(self, split):
        size = np.dtype(self.info["dtype"]).itemsize
        return sum(
            s["count"] * int(np.prod(s["feature_shape"])) * size
            for s in self.shards(split)
        )

    def read_shard(self, shard, mmap=True):
        """(features, labels) arrays of one shard entry of `shards(split)`."""
        mode = "r" if mmap else None
        base = os.path.join(self.cache_dir, shard["name"])
        return (
            np.load(base + FEATURES_SUFFIX, mmap_mode=mode),
            np.load(base + LABELS_SUFFIX, mmap_mode=mode),
        )

    def load_split(self, split):
        """All (features, labels) of a split whose shards share one size, in memory."""
        shapes = {
            tuple(s["feature_shape"] + s["label_shape"]) for s in self.shards(split)
        }
        if len(shapes) != 1:
            raise CacheError(
                f"{self.cache_dir}: split {split} mixes sizes {sorted(shapes)}"
            )
        parts = [self.read_shard(s, mmap=False) for s in self.shards(split)]
        return np.concatenate([p[0] for p in parts]), np.concatenate(
            [p[1] for p in parts]
        )


def _check_local(cache_dir):
    if artefacts.is_remote(cache_dir):
        raise CacheError(
            f"{cache_dir}: a feature cache must be on a local disk (its shards are "
            "memory-mapped); give a local --cache_dir"
        )


def open_cache(cache_dir, expected_backbone=None):
    """Opens and checks a cache; every problem is a one-line CacheError.

    `expected_backbone`: a dict of `BACKBONE_FIELDS` and optionally
    `checkpoint_sha1` (None values are not checked) that the cache's backbone
    must match.
    """
    _check_local(cache_dir)
    path = os.path.join(cache_dir, CACHE_INFO_FILENAME)
    if not os.path.isdir(cache_dir):
        raise CacheError(f"{cache_dir}: no feature cache here (run the 'cache' stage)")
    if not os.path.exists(path):
        raise CacheError(
            f"{cache_dir}: empty or incomplete feature cache (no {CACHE_INFO_FILENAME});"
            " run the 'cache' stage"
        )
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CacheError(f"{path}: unreadable cache info: {e}") from None
    if info.get("version") != CACHE_VERSION:
        raise CacheError(
            f"{path}: cache version {info.get('version')}, expected {CACHE_VERSION}"
        )
    cache = FeatureCache(cache_dir, info)
    for split in ("train", "val"):
        if not info["splits"].get(split) or cache.count(split) == 0:
            raise CacheError(f"{cache_dir}: the {split} split of the cache is empty")
        for shard in info["splits"][split]:
            base = os.path.join(cache_dir, shard["name"])
            for suffix in (FEATURES_SUFFIX, LABELS_SUFFIX):
                if not os.path.exists(base + suffix):
                    raise CacheError(f"{base + suffix}: missing cache shard")
    if expected_backbone is not None:
        have = {**info["backbone"], "checkpoint_sha1": info["checkpoint_sha1"]}
        _check_backbone(cache_dir, have, expected_backbone)
    return cache
