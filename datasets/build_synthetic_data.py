"""Generates the built-in `synthetic` dataset (see deeplab_dpc/data/synthetic.py).

Every entry point generates it on first use in `data/synthetic`; this script
does it explicitly, with other sizes or another seed.

Usage:
  python datasets/build_synthetic_data.py --output_dir=data/synthetic
"""

import os
import shutil
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads

from deeplab_dpc.core import errors  # noqa: E402
from deeplab_dpc.data import registry, synthetic  # noqa: E402

_INFO = registry.DATASETS["synthetic"]
FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "data/synthetic", "Where the shards are written.")
flags.DEFINE_integer("num_train", _INFO.splits["train"], "Training images.")
flags.DEFINE_integer("num_val", _INFO.splits["val"], "Validation images.")
flags.DEFINE_integer("seed", 0, "Generator seed: same seed, same bytes.")
flags.DEFINE_list(
    "image_size", [str(v) for v in synthetic.DEFAULT_IMAGE_SIZE], "Height,width."
)
flags.DEFINE_integer("num_shards", 2, "Shards per split.")
flags.DEFINE_boolean("force", False, "Regenerate even if the dataset is already there.")


def main(argv):
    del argv
    try:
        image_size = tuple(int(v) for v in FLAGS.image_size)
        if len(image_size) != 2:
            raise ValueError(
                f"--image_size must be height,width, got {FLAGS.image_size}"
            )
        meta = os.path.join(FLAGS.output_dir, synthetic.META_FILENAME)
        if FLAGS.force and os.path.isfile(meta):  # only ever delete a synthetic dataset
            shutil.rmtree(FLAGS.output_dir)
        path = synthetic.ensure_synthetic_dataset(
            FLAGS.output_dir, num_train=FLAGS.num_train, num_val=FLAGS.num_val,
            seed=FLAGS.seed, image_size=image_size, num_shards=FLAGS.num_shards,
        )  # fmt: skip
    except (ValueError, OSError) as e:
        errors.fail(e, "build_synthetic_data")
    print(f"synthetic dataset in {path}")


if __name__ == "__main__":
    app.run(main)
