"""Feature cache (equals the backbone's output; bad caches refused) and proxy trainer."""

import os

import numpy as np
import pytest
import tensorflow as tf
from search_checks import write_tiny_cache

from deeplab_dpc.core import common
from deeplab_dpc.data import registry, synthetic
from deeplab_dpc.data.pipeline import build_dataset
from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.modeling.checkpoints import write_model_checkpoint
from deeplab_dpc.modeling.model import build_model, model_config
from deeplab_dpc.search import cache as cache_lib
from deeplab_dpc.search import proxy

INFO = registry.get_dataset_info("synthetic")
SIZE = (65, 65)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny synthetic dataset and a random-weight MobileNetV2 checkpoint."""
    root = tmp_path_factory.mktemp("tiny")
    data = synthetic.generate_synthetic_dataset(
        str(root / "data"), num_train=6, num_val=3, image_size=SIZE, num_shards=1
    )
    config = model_config(
        "mobilenet_v2", INFO.num_classes, head="aspp", depth_multiplier=0.35
    )
    model = build_model(config)
    checkpoint = write_model_checkpoint(model, config, str(root / "ckpt"))
    return {"root": root, "data": data, "model": model, "checkpoint": checkpoint}


def _write(tiny, name, **kwargs):
    return cache_lib.write_feature_cache(
        str(tiny["root"] / name), tiny["checkpoint"], tiny["data"], INFO,
        crop_size=SIZE, batch_size=2, **kwargs,
    )  # fmt: skip


def test_cached_features_equal_the_backbone_output(tiny):
    cache = _write(tiny, "cache", dtype="float32")
    assert cache.count("train") == 6 and cache.count("val") == 3
    assert cache.backbone == {
        "model_variant": "mobilenet_v2", "output_stride": 16, "depth_multiplier": 0.35,
    }  # fmt: skip
    backbone = tiny["model"].get_layer(common.BACKBONE)
    val = build_dataset(tiny["data"], "val", INFO, is_training=False)
    expected_f, expected_l = [], []
    for batch in val:
        expected_f.append(
            backbone(batch[common.IMAGE], training=False)[common.FEATURES].numpy()
        )
        expected_l.append(batch[common.LABEL].numpy()[..., 0])
    features, labels = cache.load_split("val")
    assert features.shape == (3, 5, 5, 112)  # ceil(65 / 16) = 5; round(320 * 0.35)
    np.testing.assert_allclose(
        features, np.concatenate(expected_f), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(labels, np.concatenate(expected_l))
    # Training features are of the seeded augmented crops of the same pipeline.
    train = build_dataset(
        tiny["data"], "train", INFO, is_training=True, batch_size=2, crop_size=SIZE,
        seed=0, deterministic=True, repeat=1,
    )  # fmt: skip
    batch = next(iter(train))
    first, _ = cache.read_shard(cache.shards("train")[0])
    np.testing.assert_allclose(
        first[:2],
        backbone(batch[common.IMAGE], training=False)[common.FEATURES].numpy(),
        atol=1e-5,
    )


def test_float16_cache_is_reused_and_a_different_one_refused(tiny):
    cache = _write(tiny, "half")
    assert cache.read_shard(cache.shards("train")[0])[0].dtype == np.float16
    info_path = os.path.join(cache.cache_dir, cache_lib.CACHE_INFO_FILENAME)
    mtime = os.path.getmtime(info_path)
    assert _write(tiny, "half").fingerprint == cache.fingerprint
    assert os.path.getmtime(info_path) == mtime  # reused, not recomputed
    with pytest.raises(cache_lib.CacheError, match="holds another cache"):
        _write(tiny, "half", train_passes=2)


def test_processes_sharing_a_cache_dir_build_it_once(tiny, monkeypatch):
    # camvid.md starts two searches on one --cache_dir at once: the second
    # waits on the first's lock and reuses its cache instead of computing (and
    # renaming over) a second copy. Separate open() calls are separate flock
    # holders, so threads stand in for the processes here.
    import threading
    import time

    real, calls = cache_lib._write_split, []

    def slow_write_split(*args):
        calls.append(args[1])
        time.sleep(0.5)  # a window the other builder would fall into unlocked
        return real(*args)

    monkeypatch.setattr(cache_lib, "_write_split", slow_write_split)
    results, errors = [], []

    def build():
        try:
            results.append(_write(tiny, "shared"))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 2
    assert calls == ["train", "val"]  # computed once, not twice
    assert results[0].fingerprint == results[1].fingerprint
    assert results[1].count("train") == 6
    assert os.path.exists(tiny["root"] / ".shared.lock")
    assert not [n for n in os.listdir(tiny["root"]) if n.startswith(".tmp_cache_")]


def test_cache_of_another_backbone_is_refused(tiny):
    cache = _write(tiny, "half")
    with pytest.raises(cache_lib.CacheError) as error:
        cache_lib.open_cache(
            cache.cache_dir, {"model_variant": "xception_65", "output_stride": 16}
        )
    assert "made with another backbone (model_variant=mobilenet_v2)" in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(cache_lib.CacheError, match="output_stride=8"):
        _write(tiny, "os8", expected_backbone={"output_stride": 8})


def test_cache_of_the_given_checkpoint_passes_its_own_check(tiny):
    # search.py with --tf_initial_checkpoint asks for the checkpoint's sha1 too.
    from deeplab_dpc.search import stages

    want = stages.expected_backbone("mobilenet_v2", 16, 0.35, tiny["checkpoint"])
    assert len(want["checkpoint_sha1"]) == 40
    cache = _write(tiny, "with_sha1", expected_backbone=want)
    assert cache.info["checkpoint_sha1"] == want["checkpoint_sha1"]
    with pytest.raises(cache_lib.CacheError, match="checkpoint_sha1=0{40}"):
        _write(tiny, "other_sha1", expected_backbone={"checkpoint_sha1": "0" * 40})


def test_empty_or_missing_cache_is_refused(tmp_path):
    with pytest.raises(cache_lib.CacheError, match="no feature cache here"):
        cache_lib.open_cache(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(cache_lib.CacheError, match="empty or incomplete feature cache"):
        cache_lib.open_cache(str(tmp_path / "empty"))
    info = {"backbone": {}, "num_classes": 2, "ignore_label": 255, "dtype": "float16"}
    empty = np.zeros([0, 2, 2, 4]), np.zeros([0, 17, 17])
    with pytest.raises(
        cache_lib.CacheError, match="the train split of the cache is empty"
    ):
        cache_lib.write_cache_from_arrays(
            str(tmp_path / "zero"), {"train": empty, "val": empty}, info
        )


def _learnable_cache(path, n_train=48, n_val=12, seed=0):
    """Labels are a function of the features: the argmax of 3 channels, upsampled."""
    rng = np.random.default_rng(seed)

    def split(n):
        features = rng.normal(size=(n, 5, 5, 16)).astype(np.float32)
        labels = np.repeat(np.repeat(np.argmax(features[..., :3], -1), 7, 1), 7, 2)[
            :, :33, :33
        ]
        labels = labels.astype(np.uint8)
        labels[:, :3] = 255  # an ignored band
        return features, labels

    return write_tiny_cache(
        path,
        {"train": split(n_train), "val": split(n_val)},
        depth_multiplier=1.0,
        shard_size=20,
    )


@pytest.mark.parametrize("in_memory", [True, False])
def test_proxy_loss_decreases_and_beats_chance(tmp_path, in_memory):
    cache = _learnable_cache(tmp_path / "c")
    spec = [{"op": "conv", "kernel": 1, "input": -1}]
    out = proxy.train_proxy(
        spec, cache, steps=80, batch_size=8, learning_rate=0.05,
        memory_limit_bytes=1 << 30 if in_memory else 0,
    )  # fmt: skip
    assert out["in_memory"] == in_memory
    losses = out["losses"]
    assert len(losses) == 80 and np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()
    assert out["miou"] > 0.45  # chance is about 1/3 per class of IoU 0.2


def test_proxy_runs_are_reproducible_and_the_backbone_is_absent(tmp_path):
    cache = _learnable_cache(tmp_path / "c")
    spec = spec_lib.aspp_subsets()[5]
    a = proxy.train_proxy(spec, cache, steps=5, batch_size=4, seed=3)
    b = proxy.train_proxy(spec, cache, steps=5, batch_size=4, seed=3)
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5)
    names = [layer.name for layer in a["model"].layers]
    assert names == ["features", common.HEAD, common.LOGITS]


def test_mean_iou_and_confusion_matrix_known_answer():
    labels = tf.constant([[[0, 1], [2, 255]]], tf.int32)
    logits = tf.one_hot([[[0, 1], [1, 0]]], 3) * 10.0  # predictions 0 1 / 1 0
    confusion = proxy.confusion_matrix(logits, labels, 3, 255).numpy()
    np.testing.assert_array_equal(confusion, [[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    # IoU: class 0 = 1/1, class 1 = 1/2, class 2 = 0/1.
    assert proxy.mean_iou(confusion) == pytest.approx((1 + 0.5 + 0) / 3)


def test_cell_cost_of_a_1x1_cell_by_hand():
    spec = [{"op": "conv", "kernel": 1, "input": -1}]
    params, madds = proxy.cell_cost(spec, 16, 16, (33, 33))
    # 1x1 conv 16 -> 256 and the 1x1 projection 256 -> 256, no biases (BN);
    # features at ceil(33 / 16) = 3 x 3.
    assert params == 16 * 256 + 256 * 256
    assert madds == 9 * (16 * 256 + 256 * 256)
