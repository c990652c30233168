"""The dataset registry: facts of the known datasets, custom datasets, split aliases."""

import json

import pytest

from deeplab_dpc.data import registry


@pytest.mark.parametrize(
    "name, num_classes, ignore, splits",
    [
        (
            "cityscapes",
            19,
            255,
            {"train_fine": 2975, "val_fine": 500, "test_fine": 1525},
        ),
        (
            "pascal_voc_seg",
            21,
            255,
            {"train": 1464, "train_aug": 10582, "trainval": 2913, "val": 1449},
        ),
        ("pascal_person_part", 7, 255, {"train": 1716, "val": 1817}),
        ("ade20k", 151, 0, None),
        ("camvid", 11, 255, {"train": 367, "val": 101, "test": 233}),
    ],
)
def test_known_dataset_facts(name, num_classes, ignore, splits):
    info = registry.get_dataset_info(name)
    assert info.name == name
    assert (info.num_classes, info.ignore_label) == (num_classes, ignore)
    assert len(info.class_names) == len(info.colormap) == num_classes
    assert len(set(info.class_names)) == num_classes
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in info.colormap)
    assert len(info.default_crop_size) == 2
    if splits is not None:
        assert info.splits == splits


def test_person_part_and_camvid_class_names():
    assert registry.get_dataset_info("pascal_person_part").class_names == (
        "background", "head", "torso", "upper arms", "lower arms", "upper legs", "lower legs",
    )  # fmt: skip
    camvid = registry.get_dataset_info("camvid")
    assert camvid.class_names[0] == "sky" and camvid.class_names[-1] == "bicyclist"
    assert camvid.colormap[3] == (128, 64, 128)


def test_default_dataset_is_synthetic():
    info = registry.get_dataset_info(registry.DEFAULT_DATASET)
    assert info.name == "synthetic" and 4 <= info.num_classes <= 6


def test_cityscapes_train_id_mapping_covers_19_classes():
    mapping = registry.CITYSCAPES_LABEL_ID_TO_TRAIN_ID
    assert sorted(mapping.values()) == list(range(19))
    assert mapping[7] == 0 and mapping[33] == 18 and 0 not in mapping


def test_pascal_colormap_known_entries():
    colors = registry.pascal_colormap(256)
    assert (
        colors[0] == (0, 0, 0)
        and colors[1] == (128, 0, 0)
        and colors[15] == (192, 128, 128)
    )
    assert len(set(colors)) == 256


def test_unknown_name_lists_known_names_in_one_line():
    with pytest.raises(ValueError) as error:
        registry.get_dataset_info("kitti")
    message = str(error.value)
    assert "\n" not in message
    for name in registry.DATASETS:
        assert name in message


def test_resolve_split_aliases_and_errors():
    cityscapes = registry.get_dataset_info("cityscapes")
    assert registry.resolve_split(cityscapes, "train") == "train_fine"
    assert registry.resolve_split(cityscapes, "val") == "val_fine"
    assert registry.resolve_split(cityscapes, "val_fine") == "val_fine"
    with pytest.raises(ValueError, match="known splits: .*train_fine"):
        registry.resolve_split(cityscapes, "extra")


def test_custom_dataset_from_json_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(
        json.dumps({"num_classes": 3, "ignore_label": 0, "splits": {"train": 10}})
    )
    info = registry.get_dataset_info("mine", info_json=str(path))
    assert (info.name, info.num_classes, info.ignore_label) == ("mine", 3, 0)
    assert info.class_names == ("class_0", "class_1", "class_2")
    assert len(info.colormap) == 3 and info.splits == {"train": 10}
    assert registry.resolve_split(info, "train") == "train"


def test_custom_dataset_inline_json_and_overrides():
    info = registry.get_dataset_info(
        "roads", info_json='{"num_classes": 2, "class_names": ["bg", "road"], '
        '"default_crop_size": [257, 257]}',
    )  # fmt: skip
    assert info.class_names == ("bg", "road") and info.default_crop_size == (257, 257)
    assert registry.resolve_split(info, "anything") == "anything"  # no declared splits
    camvid_big = registry.get_dataset_info(
        "camvid", info_json={"default_crop_size": [513, 513]}
    )
    assert camvid_big.num_classes == 11 and camvid_big.default_crop_size == (513, 513)


@pytest.mark.parametrize(
    "facts, message",
    [
        ({"num_classes": 2, "colour": 1}, "unknown fields"),
        ({"ignore_label": 3}, "must give num_classes"),
        ({"num_classes": 2, "class_names": ["a"]}, "class_names has 1 entries"),
        ({"num_classes": 0}, "num_classes must be >= 1"),
    ],
)
def test_bad_custom_facts_are_reported(facts, message):
    with pytest.raises(ValueError, match=message):
        registry.get_dataset_info("custom", info_json=facts)


def test_bad_json_text_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not valid JSON"):
        registry.get_dataset_info("x", info_json="{num_classes: 2}")
    with pytest.raises(FileNotFoundError, match="not found"):
        registry.get_dataset_info("x", info_json=str(tmp_path / "none.json"))
