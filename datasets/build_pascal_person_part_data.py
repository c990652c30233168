"""Converts PASCAL-Person-Part (Chen et al. 2014) to TFRecords.

Seven classes: background, head, torso, upper arms, lower arms, upper legs,
lower legs. Source layout (the common release): `<root>/JPEGImages/<stem>.jpg`
(the PASCAL VOC 2010 images), `<root>/SegmentationPart/<stem>.png`
(single-channel part ids 0-6) and lists `<root>/train_id.txt` (1716) and
`<root>/val_id.txt` (1817). A list line may also be a pair of paths
(`/JPEGImages/x.jpg /SegmentationPart/x.png`): the first path's stem is used.
Each folder can be overridden with a flag.

Usage:
  python datasets/build_pascal_person_part_data.py \\
      --person_part_root=Pascal-Person-Part --output_dir=data/pascal_person_part

The source layout and label mapping live in `deeplab_dpc/data/sources.py`.
"""

import os
import sys

from absl import app

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import converter_cli  # noqa: E402

from deeplab_dpc.data import sources  # noqa: E402

main = converter_cli.define_source_flags(
    "build_pascal_person_part_data",
    sources.build_pascal_person_part,
    "person_part_root",
    "PASCAL-Person-Part root folder.",
    image_dir="Image folder (default: <root>/JPEGImages).",
    label_dir="Label folder (default: <root>/SegmentationPart).",
    list_dir="Folder of <split>_id.txt lists (default: <root>).",
)
converter_cli.define_common_flags("data/pascal_person_part", num_shards=4)


if __name__ == "__main__":
    app.run(main)
