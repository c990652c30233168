"""Converts PASCAL VOC 2012 segmentation (with SBD `train_aug`) to TFRecords.

Source layout: `<voc_root>/JPEGImages/<stem>.jpg`,
`<voc_root>/SegmentationClass/<stem>.png` (colour-palette PNGs: the palette
index of a pixel is its class id, 255 = object border, ignored) and
`<voc_root>/ImageSets/Segmentation/{train,val,trainval}.txt`.

`train_aug` (10582 images) adds the SBD annotations (Hariharan et al. 2011):
labels come from `SegmentationClass/` when VOC has the image, otherwise from
`--aug_label_dir` (the common `SegmentationClassAug` PNGs) or from
`--sbd_root/cls/<stem>.mat` (SBD's own MATLAB files). Its image list is
`--train_aug_list`, else `ImageSets/Segmentation/train_aug.txt`, else
(VOC train + SBD train + SBD val) minus VOC val.

Usage:
  python datasets/build_voc2012_data.py --voc_root=VOCdevkit/VOC2012 \\
      --sbd_root=benchmark_RELEASE/dataset --splits=train_aug,val \\
      --output_dir=data/pascal_voc_seg

As DeepLab's `build_voc2012_data.py` + `remove_gt_colormap.py`, in one step.

The source layout and label mapping live in `deeplab_dpc/data/sources.py`,
the flags in `datasets/converter_cli.py`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import converter_cli  # noqa: E402

if __name__ == "__main__":
    converter_cli.main("build_voc2012_data")
