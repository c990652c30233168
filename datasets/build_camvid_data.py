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

The source layout and label mapping live in `deeplab_dpc/data/sources.py`,
the flags in `datasets/converter_cli.py`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import converter_cli  # noqa: E402

if __name__ == "__main__":
    converter_cli.main("build_camvid_data")
