"""Flags and `main` of the `build_<name>_data.py` converters, from one table.

Entry-point code (flags live here, never in the library): every converter has
the same output, sharding, worker, strictness and `--max_images` flags and the
same error contract (one line, exit code 2); `CONVERTERS` names each one's
`sources` builder, source-layout flags and defaults. A script keeps its
docstring (its --help) and calls `main` with its name.
"""

import collections
import sys

from absl import app, flags

from deeplab_dpc.core import console

console.quiet_tensorflow()  # imported by the scripts only, before TensorFlow loads

from deeplab_dpc.core import errors  # noqa: E402
from deeplab_dpc.data import convert, sources  # noqa: E402

# `root`: (flag, default, help) of the source folder, the builder's first
# argument; `layout`: {flag: help}, string flags passed to the builder as the
# keyword arguments of those names.
Converter = collections.namedtuple(
    "Converter", "build root layout output_dir num_shards splits_help"
)
CONVERTERS = {
    "build_camvid_data": Converter(
        sources.build_camvid,
        ("camvid_root", "../shared/data/camvid", "CamVid root folder."),
        {},
        "data/camvid",
        4,
        "Splits to convert.",
    ),
    "build_cityscapes_data": Converter(
        sources.build_cityscapes,
        ("cityscapes_root", None, "Folder holding leftImg8bit/ and gtFine/."),
        {},
        "data/cityscapes",
        10,
        "Source splits: train, val, test.",
    ),
    "build_pascal_person_part_data": Converter(
        sources.build_pascal_person_part,
        ("person_part_root", None, "PASCAL-Person-Part root folder."),
        {
            "image_dir": "Image folder (default: <root>/JPEGImages).",
            "label_dir": "Label folder (default: <root>/SegmentationPart).",
            "list_dir": "Folder of <split>_id.txt lists (default: <root>).",
        },
        "data/pascal_person_part",
        4,
        "Splits to convert.",
    ),
    "build_voc2012_data": Converter(
        sources.build_voc2012,
        ("voc_root", None, "VOCdevkit/VOC2012 folder."),
        {
            "sbd_root": "SBD benchmark_RELEASE/dataset folder (train_aug).",
            "aug_label_dir": "SegmentationClassAug PNG folder (train_aug).",
            "train_aug_list": "File listing the train_aug stems.",
        },
        "data/pascal_voc_seg",
        4,
        "Splits: train, val, trainval, train_aug.",
    ),
}


def define_common_flags(
    output_dir, num_shards, splits=("train", "val"), splits_help="Splits to convert."
):
    flags.DEFINE_string("output_dir", output_dir, "Where the shards are written.")
    flags.DEFINE_list("splits", list(splits), splits_help)
    flags.DEFINE_integer("num_shards", num_shards, "Shards per split.")
    flags.DEFINE_integer("num_workers", 4, "Parallel shard writers.")
    flags.DEFINE_boolean(
        "strict", False, "Stop at the first bad file instead of skipping it."
    )
    flags.DEFINE_integer(
        "max_images", 0, "Convert only the first N images per split (0: all)."
    )


def main(prog):
    """Defines converter `prog`'s flags (its source flags belong to the running
    script: absl's --help lists them) and runs it as an absl app."""
    converter = CONVERTERS[prog]
    root, root_default, root_help = converter.root
    script = {"module_name": sys.argv[0]}
    flags.DEFINE_string(root, root_default, root_help, **script)
    for name, help_text in converter.layout.items():
        flags.DEFINE_string(name, None, help_text, **script)
    define_common_flags(
        converter.output_dir, converter.num_shards, splits_help=converter.splits_help
    )

    def convert_main(argv):
        del argv
        f = flags.FLAGS
        layout = {name: f[name].value for name in converter.layout}
        run(prog, converter.build, f[root].value, **layout)

    app.run(convert_main)


def run(prog, build_fn, root, **layout):
    """Calls `build_fn(root, output_dir, ...)` with the common flags; errors exit 2."""
    f = flags.FLAGS
    try:
        build_fn(
            root,
            f.output_dir,
            splits=f.splits,
            num_shards=f.num_shards,
            num_workers=f.num_workers,
            strict=f.strict,
            max_images=f.max_images,
            **layout,
        )
    except (convert.ConversionError, FileNotFoundError, ValueError) as e:
        errors.fail(e, prog)
