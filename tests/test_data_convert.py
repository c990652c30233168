"""Converters: content equals the source, validation of bad inputs, atomic shards."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_dpc.core import common
from deeplab_dpc.data import convert, pipeline, preprocess, records, registry, sources

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CAMVID = SHARED / "data" / "camvid"
needs_camvid = pytest.mark.skipif(
    not CAMVID.is_dir(), reason=f"{CAMVID} is absent (a fresh clone has no ../shared)"
)


def read_examples(output_dir, split):
    examples = []
    for path in records.list_shards(str(output_dir), split):
        for raw in tf.data.TFRecordDataset(path):
            examples.append(tf.train.Example.FromString(raw.numpy()))
    return examples


def feature(example, key):
    f = example.features.feature[key]
    return f.bytes_list.value[0] if f.bytes_list.value else f.int64_list.value[0]


@pytest.fixture
def camvid_root(tmp_path):
    """A CamVid-layout root with 3 train and 2 val images copied from ../shared."""
    if not CAMVID.is_dir():
        pytest.skip(f"{CAMVID} is absent (a fresh clone has no ../shared)")
    root = tmp_path / "camvid"
    for split, count in (("train", 3), ("val", 2)):
        stems = (CAMVID / f"{split}.txt").read_text().split()[:count]
        for sub, ext in (("images", "jpg"), ("labels", "png")):
            (root / split / sub).mkdir(parents=True)
            for stem in stems:
                shutil.copy(CAMVID / split / sub / f"{stem}.{ext}", root / split / sub)
        (root / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root


def test_camvid_records_equal_the_source_files(camvid_root, tmp_path):
    out = tmp_path / "out"
    summaries = sources.build_camvid(str(camvid_root), str(out), num_shards=2)
    assert [(s.split, s.written, s.skipped) for s in summaries] == [
        ("train", 3, 0),
        ("val", 2, 0),
    ]
    assert sorted(os.listdir(out)) == [
        "conversion_train.json", "conversion_val.json",
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
        "val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord",
    ]  # fmt: skip
    for split in ("train", "val"):
        examples = read_examples(out, split)
        assert len(examples) == len((camvid_root / f"{split}.txt").read_text().split())
        for example in examples:
            stem = feature(example, common.KEY_IMAGE_FILENAME).decode()
            source_jpg = (camvid_root / split / "images" / f"{stem}.jpg").read_bytes()
            source_label = np.array(
                Image.open(camvid_root / split / "labels" / f"{stem}.png")
            )
            assert feature(example, common.KEY_IMAGE_ENCODED) == source_jpg
            assert feature(example, common.KEY_IMAGE_FORMAT) == b"jpeg"
            assert feature(example, common.KEY_IMAGE_HEIGHT) == source_label.shape[0]
            assert feature(example, common.KEY_IMAGE_WIDTH) == source_label.shape[1]
            assert feature(example, common.KEY_IMAGE_CHANNELS) == 3
            assert feature(example, common.KEY_LABEL_FORMAT) == b"png"
            sample = preprocess.decode_example(example.SerializeToString())
            expected = np.where(source_label == 11, 255, source_label)
            np.testing.assert_array_equal(sample[common.LABEL][..., 0], expected)
            np.testing.assert_array_equal(
                sample[common.IMAGE], tf.cast(tf.io.decode_jpeg(source_jpg), tf.float32)
            )


def test_camvid_records_feed_the_pipeline(camvid_root, tmp_path):
    out = tmp_path / "out"
    sources.build_camvid(str(camvid_root), str(out), splits=["val"], num_shards=1)
    ds = pipeline.build_dataset(
        str(out), "val", registry.get_dataset_info("camvid"), is_training=False
    )
    for batch in ds:
        assert batch[common.IMAGE].shape == (1, 385, 481, 3)
        assert (int(batch[common.HEIGHT][0]), int(batch[common.WIDTH][0])) == (360, 480)
        labels = set(np.unique(batch[common.LABEL]).tolist())
        assert labels <= set(range(11)) | {255} and 11 not in labels


def test_camvid_script_runs_and_fails_with_exit_code_2(camvid_root, tmp_path):
    script = str(REPO / "datasets" / "build_camvid_data.py")
    out = tmp_path / "cli"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, script, f"--camvid_root={camvid_root}", f"--output_dir={out}",
         "--max_images=2", "--num_shards=1"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "train: wrote 2 examples in 1 shards, skipped 0" in done.stdout
    assert len(read_examples(out, "val")) == 2
    failed = subprocess.run(
        [sys.executable, script, f"--camvid_root={tmp_path / 'missing'}", f"--output_dir={out}"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert failed.returncode == 2
    assert (
        failed.stderr.strip()
        .splitlines()[-1]
        .startswith("build_camvid_data: error: CamVid image")
    )


# --- Bad inputs, on generated files -------------------------------------------------


def _save(path, array, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path, format=fmt)


def make_camvid_layout(root, cases):
    """A CamVid-layout train split with one image per case name."""
    rng = np.random.default_rng(0)
    for name in cases:
        image = rng.integers(0, 256, (24, 32, 3))
        label = rng.integers(0, 12, (24, 32))
        image_path = os.path.join(root, "train", "images", f"{name}.jpg")
        label_path = os.path.join(root, "train", "labels", f"{name}.png")
        _save(image_path, image, "JPEG")
        if name == "rgb_label":
            _save(label_path, np.stack([label] * 3, -1))
        elif name == "small_label":
            _save(label_path, label[:20])
        elif name == "id_out_of_range":
            label[3, 4] = 12
            _save(label_path, label)
        elif name != "missing_label":
            _save(label_path, label)
        if name == "garbage_image":
            with open(image_path, "wb") as f:
                f.write(b"not an image at all")
        elif name == "truncated_image":
            data = open(image_path, "rb").read()
            with open(image_path, "wb") as f:
                f.write(data[: len(data) // 2])
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.write("\n".join(cases) + "\n")


BAD_CASES = {
    "rgb_label": "not single-channel",
    "small_label": "label size 32x20 differs from image size 32x24",
    "id_out_of_range": "label ids [12] outside the source range [0, 12)",
    "garbage_image": "unreadable image",
    "truncated_image": "unreadable image",
    "missing_label": "label file missing",
}


def test_bad_inputs_are_skipped_and_summarised(tmp_path):
    cases = ["good_a", *BAD_CASES, "good_b"]
    make_camvid_layout(tmp_path / "src", cases)
    out = tmp_path / "out"
    (summary,) = sources.build_camvid(
        str(tmp_path / "src"), str(out), splits=["train"], num_shards=3
    )
    assert (summary.written, summary.skipped) == (2, len(BAD_CASES))
    reasons = dict(summary.errors)
    for name, reason in BAD_CASES.items():
        assert name in reasons[name] and reason in reasons[name], reasons[name]
    names = sorted(
        feature(e, common.KEY_IMAGE_FILENAME) for e in read_examples(out, "train")
    )
    assert names == [b"good_a", b"good_b"]
    assert "skipped 6" in summary.lines()[0]
    assert os.path.isfile(out / "conversion_train.json")


@pytest.mark.parametrize("bad", sorted(BAD_CASES))
def test_strict_mode_stops_naming_the_file_and_writes_nothing(tmp_path, bad):
    make_camvid_layout(tmp_path / "src", ["good_a", bad, "good_b"])
    out = tmp_path / "out"
    with pytest.raises(convert.ConversionError, match=bad) as error:
        sources.build_camvid(
            str(tmp_path / "src"), str(out), splits=["train"], strict=True
        )
    assert "\n" not in str(error.value)
    assert os.listdir(out) == []  # no shard under a final name, no temporary left


def test_class_ids_checked_against_num_classes(tmp_path):
    info = registry.custom_dataset_info("five", num_classes=5)
    _save(tmp_path / "a.png", np.zeros((8, 8, 3)))
    label = np.zeros((8, 8))
    label[0, 0], label[1, 1] = 7, 255
    _save(tmp_path / "a_label.png", label)
    item = convert.SourceItem(
        "a", str(tmp_path / "a.png"), str(tmp_path / "a_label.png")
    )
    with pytest.raises(
        convert.BadInputError, match=r"class ids \[7\] outside \[0, 5\)"
    ):
        convert.convert_item(item, info)
    label[0, 0] = 4
    _save(tmp_path / "a_label.png", label)
    assert convert.convert_item(item, info)


def test_non_rgb_images_are_stored_as_rgb_png(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    _save(tmp_path / "g.jpg", grey, "JPEG")
    data, fmt, height, width = convert.read_image(str(tmp_path / "g.jpg"))
    assert (fmt, height, width) == ("png", 6, 8)
    decoded = np.array(Image.open(__import__("io").BytesIO(data)))
    assert decoded.shape == (6, 8, 3)


def test_rerun_with_fewer_shards_removes_stale_shards(tmp_path):
    make_camvid_layout(tmp_path / "src", ["a", "b", "c", "d"])
    out = tmp_path / "out"
    sources.build_camvid(
        str(tmp_path / "src"), str(out), splits=["train"], num_shards=4
    )
    sources.build_camvid(
        str(tmp_path / "src"), str(out), splits=["train"], num_shards=2
    )
    assert len(records.list_shards(str(out), "train")) == 2
    assert len(read_examples(out, "train")) == 4


# --- Cityscapes, VOC, Person-Part layouts -------------------------------------------------


def test_cityscapes_label_ids_are_mapped_to_train_ids(tmp_path):
    root = tmp_path / "cs"
    label_ids = np.array([[7, 8, 26, 0], [33, 23, 1, 24]], np.uint8)
    for split, stem in (
        ("train", "aachen_000000_000019"),
        ("test", "berlin_000000_000019"),
    ):
        city = stem.split("_")[0]
        _save(
            root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            np.zeros((2, 4, 3)),
        )
        _save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
    train_ids = np.array([[0, 0], [18, 255]], np.uint8)
    _save(
        root / "leftImg8bit" / "val" / "x" / "x_1_leftImg8bit.png", np.zeros((2, 2, 3))
    )
    _save(root / "gtFine" / "val" / "x" / "x_1_gtFine_labelTrainIds.png", train_ids)
    out = tmp_path / "out"
    sources.build_cityscapes(str(root), str(out), splits=["train", "val", "test"])
    (train,) = read_examples(out, "train_fine")
    label = preprocess.decode_example(train.SerializeToString())[common.LABEL][..., 0]
    np.testing.assert_array_equal(label, [[0, 1, 13, 255], [18, 10, 255, 11]])
    (val,) = read_examples(out, "val_fine")
    label = preprocess.decode_example(val.SerializeToString())[common.LABEL][..., 0]
    np.testing.assert_array_equal(label, train_ids)
    (test,) = read_examples(out, "test_fine")
    assert common.KEY_LABEL_ENCODED not in test.features.feature
    assert feature(test, common.KEY_IMAGE_FILENAME) == b"berlin_000000_000019"


def test_cityscapes_rejects_ids_beyond_label_ids(tmp_path):
    root = tmp_path / "cs"
    _save(
        root / "leftImg8bit" / "train" / "c" / "c_1_leftImg8bit.png",
        np.zeros((2, 2, 3)),
    )
    _save(
        root / "gtFine" / "train" / "c" / "c_1_gtFine_labelIds.png", np.full((2, 2), 40)
    )
    with pytest.raises(
        convert.ConversionError, match=r"c_1_gtFine_labelIds.png: label ids \[40\]"
    ):
        sources.build_cityscapes(
            str(root), str(tmp_path / "out"), splits=["train"], strict=True
        )


def _voc_palette_png(path, ids):
    image = Image.fromarray(np.asarray(ids, np.uint8), mode="P")
    palette = [v for rgb in registry.pascal_colormap(256) for v in rgb]
    image.putpalette(palette)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)


def test_voc_palette_labels_and_sbd_train_aug(tmp_path):
    from scipy import io as scipy_io

    voc, sbd = tmp_path / "VOC2012", tmp_path / "sbd"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("v1\n")
    (lists / "val.txt").write_text("v2\n")
    sbd.mkdir()
    (sbd / "train.txt").write_text("s1\nv2\n")  # v2 is VOC val: kept out of train_aug
    (sbd / "val.txt").write_text("s2\n")
    ids = np.array([[0, 15, 255], [20, 1, 0]])
    for stem in ("v1", "v2", "s1", "s2"):
        _save(voc / "JPEGImages" / f"{stem}.jpg", np.full((2, 3, 3), 100), "JPEG")
    for stem in ("v1", "v2"):
        _voc_palette_png(voc / "SegmentationClass" / f"{stem}.png", ids)
    (sbd / "cls").mkdir()
    for stem in ("s1", "s2"):
        scipy_io.savemat(
            sbd / "cls" / f"{stem}.mat",
            {"GTcls": {"Segmentation": ids.astype(np.uint8)}},
        )
    assert Image.open(voc / "SegmentationClass" / "v1.png").mode == "P"
    out = tmp_path / "out"
    summaries = sources.build_voc2012(
        str(voc), str(out), splits=["train_aug", "val"], sbd_root=str(sbd), strict=True
    )
    assert [(s.split, s.written) for s in summaries] == [("train_aug", 3), ("val", 1)]
    names = sorted(
        feature(e, common.KEY_IMAGE_FILENAME) for e in read_examples(out, "train_aug")
    )
    assert names == [b"s1", b"s2", b"v1"]
    for example in read_examples(out, "train_aug"):
        label = preprocess.decode_example(example.SerializeToString())[common.LABEL][
            ..., 0
        ]
        np.testing.assert_array_equal(label, ids)


def test_person_part_lists_with_path_pairs(tmp_path):
    root = tmp_path / "ppp"
    for stem in ("2008_000003", "2008_000008"):
        _save(root / "JPEGImages" / f"{stem}.jpg", np.zeros((4, 4, 3)), "JPEG")
        _save(
            root / "SegmentationPart" / f"{stem}.png", np.arange(16).reshape(4, 4) % 7
        )
    (root / "train_id.txt").write_text("2008_000003\n")
    (root / "val.txt").write_text(
        "/JPEGImages/2008_000008.jpg /SegmentationPart/2008_000008.png\n"
    )
    _save(
        root / "SegmentationPart" / "2008_000003.png", np.full((4, 4), 7)
    )  # id 7: bad
    summaries = sources.build_pascal_person_part(str(root), str(tmp_path / "out"))
    assert [(s.split, s.written, s.skipped) for s in summaries] == [
        ("train", 0, 1),
        ("val", 1, 0),
    ]
    assert "class ids [7] outside [0, 7)" in summaries[0].errors[0][1]


def test_crash_mid_conversion_leaves_no_temporaries(tmp_path):
    make_camvid_layout(tmp_path / "src", ["a", "b", "c", "d"])
    items = sources.camvid_items(str(tmp_path / "src"), "train")
    calls = []

    def explode(item):
        calls.append(item.name)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return sources.camvid_converter()(item)

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert.convert_split(
            items, str(out), "train", explode, num_shards=2, num_workers=1
        )
    assert os.listdir(out) == []
