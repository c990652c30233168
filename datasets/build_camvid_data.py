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
"""

import functools
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_dpc.data import convert, registry  # noqa: E402

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


def camvid_items(root, split):
    """Source items of one split: from `<split>.txt` if present, else the image folder."""
    image_dir = os.path.join(root, split, "images")
    label_dir = os.path.join(root, split, "labels")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"CamVid image folder not found: {image_dir}")
    list_file = os.path.join(root, f"{split}.txt")
    if os.path.isfile(list_file):
        stems = convert.read_list(list_file)
    else:
        stems = sorted(
            os.path.splitext(n)[0] for n in os.listdir(image_dir) if n.endswith(".jpg")
        )
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
    """The per-item conversion: void id 11 -> ignore label, ids above 11 rejected."""
    info = registry.get_dataset_info("camvid")
    mapping = {i: i for i in range(info.num_classes)}
    mapping[registry.CAMVID_VOID_ID] = info.ignore_label
    label_fn = convert.lookup_fn(
        mapping, info.ignore_label, registry.CAMVID_VOID_ID + 1
    )
    return functools.partial(convert.convert_item, info=info, label_fn=label_fn)


def main(argv):
    del argv
    try:
        split_items = {s: camvid_items(FLAGS.camvid_root, s) for s in FLAGS.splits}
        convert.run_splits(
            split_items, FLAGS.output_dir, camvid_converter(), FLAGS.num_shards,
            FLAGS.num_workers, FLAGS.strict, FLAGS.max_images,
        )  # fmt: skip
    except (convert.ConversionError, FileNotFoundError, ValueError) as e:
        print(f"build_camvid_data: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
