"""Converts PASCAL VOC 2012 segmentation (with SBD `train_aug`) to TFRecords.

Source layout: `<voc_root>/JPEGImages/<stem>.jpg`,
`<voc_root>/SegmentationClass/<stem>.png` (colour-palette PNGs: the palette
index of a pixel is its class id, 255 = object border, ignored) and
`<voc_root>/ImageSets/Segmentation/{train,val,trainval}.txt`.

`train_aug` (10582 images) adds the SBD annotations (Hariharan et al. 2011):
labels come from `SegmentationClass/` when VOC has the image, otherwise from
`--aug_label_dir` (the common `SegmentationClassAug` PNGs) or from
`--sbd_root/cls/<stem>.mat` (SBD's own MATLAB files). Its image list is
`--train_aug_list`, else `ImageSets/Segmentation/train_aug.txt`, else
(VOC train + SBD train + SBD val) minus VOC val.

Usage:
  python datasets/build_voc2012_data.py --voc_root=VOCdevkit/VOC2012 \\
      --sbd_root=benchmark_RELEASE/dataset --splits=train_aug,val \\
      --output_dir=data/pascal_voc_seg

As DeepLab's `build_voc2012_data.py` + `remove_gt_colormap.py`, in one step.
"""

import functools
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_dpc.data import convert, registry  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("voc_root", None, "VOCdevkit/VOC2012 folder.")
flags.DEFINE_string(
    "sbd_root", None, "SBD benchmark_RELEASE/dataset folder (train_aug)."
)
flags.DEFINE_string(
    "aug_label_dir", None, "SegmentationClassAug PNG folder (train_aug)."
)
flags.DEFINE_string("train_aug_list", None, "File listing the train_aug stems.")
flags.DEFINE_string(
    "output_dir", "data/pascal_voc_seg", "Where the shards are written."
)
flags.DEFINE_list(
    "splits", ["train", "val"], "Splits: train, val, trainval, train_aug."
)
flags.DEFINE_integer("num_shards", 4, "Shards per split.")
flags.DEFINE_integer("num_workers", 4, "Parallel shard writers.")
flags.DEFINE_boolean(
    "strict", False, "Stop at the first bad file instead of skipping it."
)
flags.DEFINE_integer(
    "max_images", 0, "Convert only the first N images per split (0: all)."
)


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


def _sbd_stems(sbd_root):
    if not sbd_root:
        return []
    return convert.read_list(os.path.join(sbd_root, "train.txt")) + convert.read_list(
        os.path.join(sbd_root, "val.txt")
    )


def split_stems(voc_root, split, sbd_root=None, train_aug_list=None):
    """Stems of one split (see the module docstring for train_aug)."""
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
    return sorted(set(train + _sbd_stems(sbd_root)) - val)


def label_path(stem, voc_root, aug_label_dir=None, sbd_root=None):
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
            label_path(stem, voc_root, aug_label_dir, sbd_root),
        )
        for stem in split_stems(voc_root, split, sbd_root, train_aug_list)
    ]


def main(argv):
    del argv
    info = registry.get_dataset_info("pascal_voc_seg")
    convert_fn = functools.partial(
        convert.convert_item, info=info, read_label_fn=read_voc_label
    )
    try:
        split_items = {
            s: voc_items(
                FLAGS.voc_root,
                s,
                FLAGS.sbd_root,
                FLAGS.aug_label_dir,
                FLAGS.train_aug_list,
            )
            for s in FLAGS.splits
        }
        convert.run_splits(
            split_items, FLAGS.output_dir, convert_fn, FLAGS.num_shards,
            FLAGS.num_workers, FLAGS.strict, FLAGS.max_images,
        )  # fmt: skip
    except (convert.ConversionError, FileNotFoundError, ValueError) as e:
        print(f"build_voc2012_data: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
