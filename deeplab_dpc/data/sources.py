"""Source layouts of the real datasets: which files make each split, how labels map.

The `datasets/build_<name>_data.py` scripts are thin flag wrappers around the
`build_<name>` functions here (DeepLab keeps this logic inside its scripts;
we keep it importable and testable). Conversion itself is `convert.py`.

- CamVid: `<root>/<split>/images/<stem>.jpg`, `<root>/<split>/labels/<stem>.png`
  (ids 0-10, void 11 -> ignore label), optional `<root>/<split>.txt`.
- PASCAL VOC 2012: `JPEGImages/`, `SegmentationClass/` (palette PNGs: the
  palette index is the class id, 255 = border), `ImageSets/Segmentation/`;
  `train_aug` adds SBD (`cls/*.mat`) or `SegmentationClassAug` PNGs, with the
  list (VOC train + SBD train + SBD val) - VOC val unless a list is given.
- Cityscapes: `leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`,
  `gtFine/<split>/<city>/<stem>_gtFine_labelIds.png` (mapped to train ids
  here) or `*_gtFine_labelTrainIds.png` (used as is); test without labels.
- PASCAL-Person-Part: `JPEGImages/`, `SegmentationPart/` (ids 0-6),
  `<split>_id.txt` lists.
"""

import functools
import glob
import os

import numpy as np

from deeplab_dpc.data import convert, registry


def _run(split_items, output_dir, convert_fn, **kwargs):
    return convert.run_splits(split_items, output_dir, convert_fn, **kwargs)


# --- CamVid -------------------------------------------------------------------


def camvid_items(root, split):
    """Items of one split: from `<split>.txt` if present, else the image folder."""
    image_dir = os.path.join(root, split, "images")
    label_dir = os.path.join(root, split, "labels")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"CamVid image folder not found: {image_dir}")
    list_file = os.path.join(root, f"{split}.txt")
    if os.path.isfile(list_file):
        stems = convert.read_list(list_file)
    else:
        names = sorted(os.listdir(image_dir))
        stems = [os.path.splitext(n)[0] for n in names if n.endswith(".jpg")]
    has_labels = os.path.isdir(label_dir)
    return [
        convert.SourceItem(
            stem,
            os.path.join(image_dir, f"{stem}.jpg"),
            os.path.join(label_dir, f"{stem}.png") if has_labels else None,
        )
        for stem in stems
    ]


def camvid_converter():
    """Per-item conversion: void id 11 -> ignore label, ids above 11 rejected."""
    info = registry.get_dataset_info("camvid")
    mapping = {i: i for i in range(info.num_classes)}
    mapping[registry.CAMVID_VOID_ID] = info.ignore_label
    label_fn = convert.lookup_fn(
        mapping, info.ignore_label, registry.CAMVID_VOID_ID + 1
    )
    return functools.partial(convert.convert_item, info=info, label_fn=label_fn)


def build_camvid(camvid_root, output_dir, splits=("train", "val"), **kwargs):
    split_items = {s: camvid_items(camvid_root, s) for s in splits}
    return _run(split_items, output_dir, camvid_converter(), **kwargs)


# --- PASCAL VOC 2012 + SBD ------------------------------------------------------


def read_voc_label(path):
    """Class ids of a palette/grey PNG, or of an SBD `cls/*.mat` file."""
    if not path.endswith(".mat"):
        return convert.read_label(path)
    try:
        from scipy import io as scipy_io

        mat = scipy_io.loadmat(path)
        return np.asarray(mat["GTcls"][0, 0]["Segmentation"]).astype(np.int64)
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise convert.BadInputError(f"{path}: unreadable SBD label ({e})") from None


def voc_split_stems(voc_root, split, sbd_root=None, train_aug_list=None):
    list_dir = os.path.join(voc_root, "ImageSets", "Segmentation")
    if split != "train_aug":
        return convert.read_list(os.path.join(list_dir, f"{split}.txt"))
    if train_aug_list:
        return convert.read_list(train_aug_list)
    if os.path.isfile(os.path.join(list_dir, "train_aug.txt")):
        return convert.read_list(os.path.join(list_dir, "train_aug.txt"))
    if not sbd_root:
        raise ValueError(
            "train_aug needs --sbd_root, --train_aug_list or train_aug.txt"
        )
    val = set(convert.read_list(os.path.join(list_dir, "val.txt")))
    train = convert.read_list(os.path.join(list_dir, "train.txt"))
    sbd = convert.read_list(os.path.join(sbd_root, "train.txt"))
    sbd += convert.read_list(os.path.join(sbd_root, "val.txt"))
    return sorted(set(train + sbd) - val)


def voc_label_path(stem, voc_root, aug_label_dir=None, sbd_root=None):
    """VOC's own label when it has one, else SegmentationClassAug, else SBD .mat."""
    candidates = [os.path.join(voc_root, "SegmentationClass", f"{stem}.png")]
    if aug_label_dir:
        candidates.append(os.path.join(aug_label_dir, f"{stem}.png"))
    if sbd_root:
        candidates.append(os.path.join(sbd_root, "cls", f"{stem}.mat"))
    for path in candidates:
        if os.path.isfile(path):
            return path
    return candidates[0]  # reported as a missing label file


def voc_items(voc_root, split, sbd_root=None, aug_label_dir=None, train_aug_list=None):
    if not os.path.isdir(voc_root or ""):
        raise FileNotFoundError(f"VOC root folder not found: {voc_root}")
    return [
        convert.SourceItem(
            stem,
            os.path.join(voc_root, "JPEGImages", f"{stem}.jpg"),
            voc_label_path(stem, voc_root, aug_label_dir, sbd_root),
        )
        for stem in voc_split_stems(voc_root, split, sbd_root, train_aug_list)
    ]


def build_voc2012(
    voc_root, output_dir, splits=("train", "val"), sbd_root=None, aug_label_dir=None,
    train_aug_list=None, **kwargs,
):  # fmt: skip
    info = registry.get_dataset_info("pascal_voc_seg")
    convert_fn = functools.partial(
        convert.convert_item, info=info, read_label_fn=read_voc_label
    )
    split_items = {
        s: voc_items(voc_root, s, sbd_root, aug_label_dir, train_aug_list)
        for s in splits
    }
    return _run(split_items, output_dir, convert_fn, **kwargs)


# --- Cityscapes -------------------------------------------------------------------

CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
CITYSCAPES_TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
CITYSCAPES_NUM_LABEL_IDS = 34  # labelIds 0..33 (license plate -1 is never stored)


def cityscapes_items(root, split):
    """`split` is the source folder name: train, val or test (no labels)."""
    image_dir = os.path.join(root or "", "leftImg8bit", split)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Cityscapes image folder not found: {image_dir}")
    items = []
    pattern = os.path.join(image_dir, "*", f"*{CITYSCAPES_IMAGE_SUFFIX}")
    for image_path in sorted(glob.glob(pattern)):
        city = os.path.basename(os.path.dirname(image_path))
        stem = os.path.basename(image_path)[: -len(CITYSCAPES_IMAGE_SUFFIX)]
        label = None
        if split != "test":
            label_dir = os.path.join(root, "gtFine", split, city)
            label = os.path.join(label_dir, stem + CITYSCAPES_TRAIN_ID_SUFFIX)
            if not os.path.isfile(label):
                label = os.path.join(label_dir, stem + CITYSCAPES_LABEL_ID_SUFFIX)
        items.append(convert.SourceItem(stem, image_path, label))
    return items


def cityscapes_label_fn(info):
    """labelIds files are mapped to train ids; labelTrainIds files are kept."""
    to_train_id = convert.lookup_fn(
        registry.CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
        info.ignore_label,
        CITYSCAPES_NUM_LABEL_IDS,
    )

    def apply(label, path):
        if path.endswith(CITYSCAPES_TRAIN_ID_SUFFIX):
            return label
        return to_train_id(label, path)

    return apply


def build_cityscapes(cityscapes_root, output_dir, splits=("train", "val"), **kwargs):
    """Source splits train/val/test are written as train_fine/val_fine/test_fine."""
    info = registry.get_dataset_info("cityscapes")
    convert_fn = functools.partial(
        convert.convert_item, info=info, label_fn=cityscapes_label_fn(info)
    )
    split_items = {
        registry.resolve_split(info, s): cityscapes_items(cityscapes_root, s)
        for s in splits
    }
    return _run(split_items, output_dir, convert_fn, **kwargs)


# --- PASCAL-Person-Part -------------------------------------------------------------


def _stem(line):
    return os.path.splitext(os.path.basename(line.split()[0]))[0]


def person_part_items(root, split, image_dir=None, label_dir=None, list_dir=None):
    """A list line is a stem or `/JPEGImages/x.jpg /SegmentationPart/x.png`."""
    root = root or ""
    image_dir = image_dir or os.path.join(root, "JPEGImages")
    label_dir = label_dir or os.path.join(root, "SegmentationPart")
    list_dir = list_dir or root
    list_file = os.path.join(list_dir, f"{split}_id.txt")
    if not os.path.isfile(list_file):
        list_file = os.path.join(list_dir, f"{split}.txt")
    return [
        convert.SourceItem(
            stem,
            os.path.join(image_dir, f"{stem}.jpg"),
            os.path.join(label_dir, f"{stem}.png"),
        )
        for stem in (_stem(line) for line in convert.read_list(list_file))
    ]


def build_pascal_person_part(
    person_part_root, output_dir, splits=("train", "val"), image_dir=None, label_dir=None,
    list_dir=None, **kwargs,
):  # fmt: skip
    info = registry.get_dataset_info("pascal_person_part")
    convert_fn = functools.partial(convert.convert_item, info=info)
    split_items = {
        s: person_part_items(person_part_root, s, image_dir, label_dir, list_dir)
        for s in splits
    }
    return _run(split_items, output_dir, convert_fn, **kwargs)
