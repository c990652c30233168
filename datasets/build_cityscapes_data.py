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

The source layout and label mapping live in `deeplab_dpc/data/sources.py`,
the flags in `datasets/converter_cli.py`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import converter_cli  # noqa: E402

if __name__ == "__main__":
    converter_cli.main("build_cityscapes_data")
