r"""Command line: per-layer parameters and multiply-adds of a DeepLab / DPC model.

    python -m deeplab_dpc.tools.model_stats --model_variant=xception_65 \
        --dpc_spec=specs/top1.json --crop_size=1025,2049 --output_stride=16 --json

    python -m deeplab_dpc.tools.model_stats --model_config=runs/train --crop_size=361,481

The rows and their accounting are those of the library `deeplab_dpc.modeling.complexity`.
`--model_config` (a `model_config.json`, or the checkpoint directory or prefix
it sits beside) takes the architecture of a trained model; the model flags are
then ignored.
"""

import json
import os

from deeplab_dpc import command_line
from deeplab_dpc.core import errors, option_table
from deeplab_dpc.core.option_table import Option


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    # SpecError and ModelConfigError are ValueErrors: one line, exit code 2.
    with errors.user_errors(ValueError, "model_stats"):
        command_line.option_values(OPTIONS)
        crop = option_table.check_crop("--crop_size", f.crop_size)
        if f.model_config:
            from deeplab_dpc.modeling import checkpoints  # TensorFlow loads here

            path = f.model_config
            if os.path.isfile(path) and path.endswith(".json"):
                path = os.path.dirname(os.path.abspath(path))
            config = checkpoints.read_checkpoint_config(path)
        else:
            config = command_line.model_config_from_flags(f, f.num_classes)
    from deeplab_dpc.modeling.complexity import compute_stats, format_table, summarize
    from deeplab_dpc.modeling.model import build_model  # TensorFlow loads here

    rows = compute_stats(build_model(config), crop)
    if f.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows, summarize(rows)))


# The model group (command_line.MODEL_OPTIONS), the head, and the tool's own.
OPTIONS = (
    *command_line.MODEL_OPTIONS,
    command_line.HEAD_OPTION,
    Option("num_classes", "integer", 19, "Number of classes of the logits layer.", low=1),
    Option("crop_size", "list", ("513", "513"), "Input size H,W."),
    Option("model_config", "string", None,
           "A model_config.json, or the checkpoint directory it sits beside: "
           "the architecture of a trained model (model flags ignored)."),
    Option("json", "boolean", False, "Print a JSON list of rows instead of a table."),
)  # fmt: skip


def define_flags():
    command_line.define_options(OPTIONS)


if __name__ == "__main__":
    define_flags()
    command_line.run(main, "model_stats")
