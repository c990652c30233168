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

from absl import app

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import converter_cli  # noqa: E402

from deeplab_dpc.data import sources  # noqa: E402

main = converter_cli.define_source_flags(
    "build_camvid_data",
    sources.build_camvid,
    "camvid_root",
    "CamVid root folder.",
    root_default="../shared/data/camvid",
)
converter_cli.define_common_flags("data/camvid", num_shards=4)


if __name__ == "__main__":
    app.run(main)
