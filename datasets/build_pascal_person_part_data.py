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

The source layout and label mapping live in `deeplab_dpc/data/sources.py`,
the flags in `datasets/converter_cli.py`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import converter_cli  # noqa: E402

if __name__ == "__main__":
    converter_cli.main("build_pascal_person_part_data")
