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

The source layout and label mapping live in `deeplab_dpc/data/sources.py`.
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_dpc.data import convert, sources  # noqa: E402

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


def main(argv):
    del argv
    try:
        sources.build_cityscapes(
            FLAGS.cityscapes_root,
            FLAGS.output_dir,
            splits=FLAGS.splits,
            num_shards=FLAGS.num_shards,
            num_workers=FLAGS.num_workers,
            strict=FLAGS.strict,
            max_images=FLAGS.max_images,
        )
    except (convert.ConversionError, FileNotFoundError, ValueError) as e:
        print(f"build_cityscapes_data: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
