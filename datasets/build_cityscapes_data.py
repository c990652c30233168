"""Converts Cityscapes (fine annotations) to TFRecords with train ids.

Source layout: `<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`
and `<root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`. The labelIds
-> train ids mapping is ours (`registry.CITYSCAPES_LABEL_ID_TO_TRAIN_ID`,
from cityscapesScripts' labels.py), so cityscapesScripts' `createTrainIdLabelImgs`
need not be run; when a `*_gtFine_labelTrainIds.png` exists it is used as is.
Splits `train`, `val`, `test` are written as `train_fine`, `val_fine`,
`test_fine` (DeepLab's names); `test` is written without labels (its public
labels are placeholders).

Usage:
  python datasets/build_cityscapes_data.py --cityscapes_root=cityscapes \\
      --output_dir=data/cityscapes
"""

import functools
import glob
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_dpc.data import convert, registry  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("cityscapes_root", None, "Folder holding leftImg8bit/ and gtFine/.")
flags.DEFINE_string("output_dir", "data/cityscapes", "Where the shards are written.")
flags.DEFINE_list("splits", ["train", "val"], "Source splits: train, val, test.")
flags.DEFINE_integer("num_shards", 10, "Shards per split.")
flags.DEFINE_integer("num_workers", 4, "Parallel shard writers.")
flags.DEFINE_boolean(
    "strict", False, "Stop at the first bad file instead of skipping it."
)
flags.DEFINE_integer(
    "max_images", 0, "Convert only the first N images per split (0: all)."
)

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
NUM_LABEL_IDS = 34  # labelIds 0..33 (license plate -1 is never stored)


def cityscapes_items(root, split):
    image_dir = os.path.join(root or "", "leftImg8bit", split)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Cityscapes image folder not found: {image_dir}")
    items = []
    for image_path in sorted(
        glob.glob(os.path.join(image_dir, "*", f"*{IMAGE_SUFFIX}"))
    ):
        city = os.path.basename(os.path.dirname(image_path))
        stem = os.path.basename(image_path)[: -len(IMAGE_SUFFIX)]
        label = None
        if split != "test":
            label_dir = os.path.join(root, "gtFine", split, city)
            label = os.path.join(label_dir, stem + TRAIN_ID_SUFFIX)
            if not os.path.isfile(label):
                label = os.path.join(label_dir, stem + LABEL_ID_SUFFIX)
        items.append(convert.SourceItem(stem, image_path, label))
    return items


def cityscapes_label_fn(info):
    """labelIds files are mapped to train ids; labelTrainIds files are kept."""
    to_train_id = convert.lookup_fn(
        registry.CITYSCAPES_LABEL_ID_TO_TRAIN_ID, info.ignore_label, NUM_LABEL_IDS
    )

    def apply(label, path):
        return label if path.endswith(TRAIN_ID_SUFFIX) else to_train_id(label, path)

    return apply


def main(argv):
    del argv
    info = registry.get_dataset_info("cityscapes")
    convert_fn = functools.partial(
        convert.convert_item, info=info, label_fn=cityscapes_label_fn(info)
    )
    try:
        split_items = {
            registry.resolve_split(info, s): cityscapes_items(FLAGS.cityscapes_root, s)
            for s in FLAGS.splits
        }
        convert.run_splits(
            split_items, FLAGS.output_dir, convert_fn, FLAGS.num_shards,
            FLAGS.num_workers, FLAGS.strict, FLAGS.max_images,
        )  # fmt: skip
    except (convert.ConversionError, FileNotFoundError, ValueError) as e:
        print(f"build_cityscapes_data: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
