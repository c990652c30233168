"""Dataset facts in one table: classes, ignore label, colours, splits, crop sizes.

Imitates DeepLab's `data_generator._DATASETS_INFORMATION` and DeepLab2's
namedtuple registry: a `DatasetInfo` is plain data, looked up by name. A custom
dataset needs no code change: pass its facts as a JSON file (or inline JSON
text) to `get_dataset_info(name, info_json=...)`, or build one from flag values
with `custom_dataset_info(...)`.

Deviations from DeepLab:
- `camvid` is the 11-class SegNet split; its void id 11 is written as 255 by
  our converter, so the records use the common ignore label.
- `ade20k` keeps DeepLab's convention (151 classes, class 0 = "other" is the
  ignore label). Its registry colours (`--colormap_type=dataset`) are the
  PASCAL bit-interleaved palette; DeepLab's own ADE20K palette is
  `--colormap_type=ade20k` (`reporting/colormaps.py`). Colours serve visualisation only.
- `synthetic` is our own generated default dataset (see `synthetic.py`).
"""

import dataclasses
import json
import os
from typing import NamedTuple

from deeplab_dpc.core import common


class DatasetInfo(NamedTuple):
    """Facts about one dataset; `splits` maps split name -> number of images."""

    name: str
    num_classes: int
    ignore_label: int
    class_names: tuple
    colormap: list
    splits: dict
    default_crop_size: tuple
    split_aliases: dict = {}


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Where the samples of a dataset come from: one value, passed as one.

    dataset_dir: the TFRecord shards (None: the default for the dataset);
    dataset_source: "tfrecord" or "tfds"; tfds_data_dir / tfds_manual_dir:
    TFDS's data and manual-download directories. The field names are those
    of the flags and of `train_config.json`, so `DataSource.from_config`
    reads either back. Taken by `pipeline.build_dataset`,
    `evaluator.evaluate` and `visualizer.visualize_checkpoints`.
    """

    dataset_dir: str = None
    dataset_source: str = "tfrecord"
    tfds_data_dir: str = None
    tfds_manual_dir: str = None

    @classmethod
    def from_config(cls, config):
        """The source of a dict holding these fields (train_config.json, flag values)."""
        fields = {f.name: config.get(f.name) for f in dataclasses.fields(cls)}
        fields["dataset_source"] = fields["dataset_source"] or "tfrecord"
        return cls(**fields)

    @classmethod
    def of(cls, source):
        """`source` as a DataSource: itself, or a dataset directory (a path or None)."""
        return source if isinstance(source, cls) else cls(dataset_dir=source)


def pascal_colormap(n=256):
    """The PASCAL VOC palette: bits of the class id interleaved into RGB."""
    colormap = []
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colormap.append((r, g, b))
    return colormap


_CITYSCAPES_CLASSES = (
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)),
    ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)),
    ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)),
    ("bus", (0, 60, 100)),
    ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
)

# Cityscapes `gtFine_labelIds` -> train ids (cityscapesScripts' labels.py);
# every id not listed here becomes the ignore label.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

_VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
    "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
    "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

_PERSON_PART_CLASSES = (
    "background", "head", "torso", "upper arms", "lower arms", "upper legs",
    "lower legs",
)  # fmt: skip

_ADE20K_CLASSES = (
    "other", "wall", "building", "sky", "floor", "tree", "ceiling", "road",
    "bed", "windowpane", "grass", "cabinet", "sidewalk", "person", "earth",
    "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill",
    "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel",
    "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage",
    "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall",
    "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step",
    "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock",
    "flag",
)  # fmt: skip

_CAMVID_CLASSES = (
    ("sky", (128, 128, 128)),
    ("building", (128, 0, 0)),
    ("pole", (192, 192, 128)),
    ("road", (128, 64, 128)),
    ("pavement", (60, 40, 222)),
    ("tree", (128, 128, 0)),
    ("sign/symbol", (192, 128, 128)),
    ("fence", (64, 64, 128)),
    ("car", (64, 0, 128)),
    ("pedestrian", (64, 64, 0)),
    ("bicyclist", (0, 128, 192)),
)
CAMVID_VOID_ID = 11  # in the source PNGs; written as the ignore label (255)

# The synthetic dataset's classes (see synthetic.py for what they mean).
_SYNTHETIC_CLASSES = (
    ("background", (90, 90, 90)),
    ("small_disc", (250, 170, 30)),
    ("disc_red_band", (220, 20, 60)),
    ("disc_blue_band", (0, 60, 230)),
    ("line", (0, 130, 80)),
)

DATASETS = {
    "cityscapes": DatasetInfo(
        name="cityscapes",
        num_classes=19,
        ignore_label=255,
        class_names=tuple(n for n, _ in _CITYSCAPES_CLASSES),
        colormap=[c for _, c in _CITYSCAPES_CLASSES],
        splits={"train_fine": 2975, "val_fine": 500, "test_fine": 1525},
        default_crop_size=(769, 769),
        split_aliases={"train": "train_fine", "val": "val_fine", "test": "test_fine"},
    ),
    "pascal_voc_seg": DatasetInfo(
        name="pascal_voc_seg",
        num_classes=21,
        ignore_label=255,
        class_names=_VOC_CLASSES,
        colormap=pascal_colormap(21),
        splits={"train": 1464, "train_aug": 10582, "trainval": 2913, "val": 1449},
        default_crop_size=(513, 513),
    ),
    "pascal_person_part": DatasetInfo(
        name="pascal_person_part",
        num_classes=7,
        ignore_label=255,
        class_names=_PERSON_PART_CLASSES,
        colormap=pascal_colormap(7),
        splits={"train": 1716, "val": 1817},
        default_crop_size=(513, 513),
    ),
    "ade20k": DatasetInfo(
        name="ade20k",
        num_classes=151,
        ignore_label=0,
        class_names=_ADE20K_CLASSES,
        colormap=pascal_colormap(151),
        splits={"train": 20210, "val": 2000},
        default_crop_size=(513, 513),
    ),
    "camvid": DatasetInfo(
        name="camvid",
        num_classes=11,
        ignore_label=common.DEFAULT_IGNORE_LABEL,
        class_names=tuple(n for n, _ in _CAMVID_CLASSES),
        colormap=[c for _, c in _CAMVID_CLASSES],
        splits={"train": 367, "val": 101, "test": 233},
        default_crop_size=(321, 481),
    ),
    "synthetic": DatasetInfo(
        name="synthetic",
        num_classes=5,
        ignore_label=common.DEFAULT_IGNORE_LABEL,
        class_names=tuple(n for n, _ in _SYNTHETIC_CLASSES),
        colormap=[c for _, c in _SYNTHETIC_CLASSES],
        splits={"train": 320, "val": 96},
        default_crop_size=(129, 129),
    ),
}

DEFAULT_DATASET = "synthetic"


def custom_dataset_info(
    name,
    num_classes,
    ignore_label=common.DEFAULT_IGNORE_LABEL,
    class_names=None,
    colormap=None,
    splits=None,
    default_crop_size=(513, 513),
    split_aliases=None,
):
    """A `DatasetInfo` for a dataset not in `DATASETS`, from explicit facts."""
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(
            f"dataset {name!r}: num_classes must be >= 1, got {num_classes}"
        )
    if class_names is None:
        class_names = tuple(f"class_{i}" for i in range(num_classes))
    if colormap is None:
        colormap = pascal_colormap(num_classes)
    for field, values in (("class_names", class_names), ("colormap", colormap)):
        if len(values) != num_classes:
            raise ValueError(
                f"dataset {name!r}: {field} has {len(values)} entries, "
                f"num_classes is {num_classes}"
            )
    crop = tuple(int(v) for v in default_crop_size)
    if len(crop) != 2:
        raise ValueError(
            f"dataset {name!r}: default_crop_size must be (h, w), got {crop}"
        )
    return DatasetInfo(
        name=name,
        num_classes=num_classes,
        ignore_label=int(ignore_label),
        class_names=tuple(class_names),
        colormap=[tuple(int(v) for v in c) for c in colormap],
        splits={str(k): int(v) for k, v in (splits or {}).items()},
        default_crop_size=crop,
        split_aliases=dict(split_aliases or {}),
    )


def _load_info_json(info_json):
    """Reads a JSON file, or inline JSON text (starting with '{'), or a dict."""
    if isinstance(info_json, dict):
        return dict(info_json)
    text = str(info_json).strip()
    if not text.startswith("{"):
        if not os.path.isfile(text):
            raise FileNotFoundError(f"dataset info JSON file not found: {text}")
        with open(text, encoding="utf-8") as f:
            text = f.read()
    try:
        facts = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"dataset info JSON is not valid JSON: {e}") from None
    if not isinstance(facts, dict):
        raise ValueError("dataset info JSON must be an object of dataset facts")
    return facts


def get_dataset_info(name, info_json=None):
    """Looks up `name`; `info_json` (path, inline JSON or dict) adds or overrides facts.

    With `info_json`, a known name starts from its entry and the JSON overrides
    fields; an unknown name needs at least `num_classes` in the JSON.
    """
    if info_json is None or info_json == "":
        if name not in DATASETS:
            known = ", ".join(sorted(DATASETS))
            raise ValueError(
                f"unknown dataset {name!r}; known datasets: {known} "
                "(or describe a custom one with a dataset info JSON)"
            )
        return DATASETS[name]
    facts = _load_info_json(info_json)
    allowed = set(DatasetInfo._fields)
    unknown = sorted(set(facts) - allowed)
    if unknown:
        raise ValueError(
            f"dataset info JSON has unknown fields {unknown}; allowed: {sorted(allowed)}"
        )
    base = DATASETS[name]._asdict() if name in DATASETS else {}
    base.update(facts)
    base.setdefault("name", name)
    if "num_classes" not in base:
        raise ValueError(f"dataset info JSON for {name!r} must give num_classes")
    if name in DATASETS and "num_classes" in facts:
        # New class count: the known names and colours no longer apply.
        for field in ("class_names", "colormap"):
            if field not in facts:
                base.pop(field, None)
    return custom_dataset_info(**base)


def resolve_split(info, split):
    """Maps a split alias (e.g. Cityscapes `train`) to the name used in the files."""
    if split in info.splits:
        return split
    if split in info.split_aliases:
        return info.split_aliases[split]
    if not info.splits:  # custom dataset without declared splits: trust the caller
        return split
    known = sorted(set(info.splits) | set(info.split_aliases))
    raise ValueError(
        f"dataset {info.name!r} has no split {split!r}; known splits: {', '.join(known)}"
    )
