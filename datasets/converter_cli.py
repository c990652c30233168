"""Flags and `main` shared by the `build_<name>_data.py` converters.

Entry-point code (flags live here and in the scripts, never in the library):
every converter has the same output, sharding, worker, strictness and
`--max_images` flags and the same error contract (one line, exit code 2);
each script names its source-layout flags and its `sources` builder
(`define_source_flags`), and runs the `main` that returns.
"""

import sys

from absl import flags

from deeplab_dpc.core import console

console.quiet_tensorflow()  # imported by the scripts only, before TensorFlow loads

from deeplab_dpc.core import errors  # noqa: E402
from deeplab_dpc.data import convert  # noqa: E402


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


def define_source_flags(prog, build_fn, root, root_help, root_default=None, **layout):
    """Defines a converter's source flags; returns its `main(argv)`.

    `--<root>` is the source folder (`build_fn`'s first argument); each
    `layout` entry (name: help) is a string flag passed to `build_fn` as the
    keyword argument of that name. The flags belong to the calling script (absl's
    --help lists them).
    """
    caller = sys._getframe(1).f_globals.get("__name__", "")
    module = sys.argv[0] if caller == "__main__" and sys.argv else caller
    flags.DEFINE_string(root, root_default, root_help, module_name=module)
    for name, help_text in layout.items():
        flags.DEFINE_string(name, None, help_text, module_name=module)

    def main(argv):
        del argv
        f = flags.FLAGS
        run(prog, build_fn, f[root].value, **{name: f[name].value for name in layout})

    return main


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
