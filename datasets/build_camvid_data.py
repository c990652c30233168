"""Converts CamVid (11-class SegNet split) to the common TFRecord format.

Source layout (see ../shared/data/camvid/README.md):
`<root>/<split>/images/<name>.jpg`, `<root>/<split>/labels/<name>.png`
(single-channel class ids 0-10, 11 = void) and optional `<root>/<split>.txt`
listing the stems. The void id 11 is written as the ignore label 255. A split
without a `labels/` folder (a test split) is written without labels.

Usage:
  python datasets/build_camvid_data.py --camvid_root=../shared/data/camvid \\
      --output_dir=/tmp/camvid_tfrecord

Not in DeepLab (it has no CamVid converter); modelled on its
`build_voc2012_data.py`, with the validation and atomic shards of
`deeplab_dpc/data/convert.py`.

The source layout and label mapping live in `deeplab_dpc/data/sources.py`.
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_dpc.data import convert, sources  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("camvid_root", "../shared/data/camvid", "CamVid root folder.")
flags.DEFINE_string("output_dir", "data/camvid", "Where the shards are written.")
flags.DEFINE_list("splits", ["train", "val"], "Splits to convert.")
flags.DEFINE_integer("num_shards", 4, "Shards per split.")
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
        sources.build_camvid(
            FLAGS.camvid_root,
            FLAGS.output_dir,
            splits=FLAGS.splits,
            num_shards=FLAGS.num_shards,
            num_workers=FLAGS.num_workers,
            strict=FLAGS.strict,
            max_images=FLAGS.max_images,
        )
    except (convert.ConversionError, FileNotFoundError, ValueError) as e:
        print(f"build_camvid_data: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
