r"""Command line: per-layer parameters and multiply-adds of a DeepLab / DPC model.

    python -m deeplab_dpc.tools.model_stats --model_variant=xception_65 \
        --dpc_spec=specs/top1.json --crop_size=1025,2049 --output_stride=16 --json

    python -m deeplab_dpc.tools.model_stats --model_config=runs/train --crop_size=361,481

The rows and their accounting are those of the library `deeplab_dpc.model_stats`.
`--model_config` (a `model_config.json`, or the checkpoint directory or prefix
it sits beside) takes the architecture of a trained model; the model flags are
then ignored.
"""

import json
import os

from deeplab_dpc import command_line, errors


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    # SpecError and ModelConfigError are ValueErrors: one line, exit code 2.
    with errors.user_errors(ValueError, "model_stats"):
        crop = command_line.multi_values(f.crop_size, int, "crop_size")
        if len(crop) != 2 or min(crop) < 1:
            raise ValueError(
                f"--crop_size: expected H,W with positive sizes, got {','.join(f.crop_size)}"
            )
        if f.model_config:
            from deeplab_dpc import checkpoints  # TensorFlow loads here

            path = f.model_config
            if os.path.isfile(path) and path.endswith(".json"):
                path = os.path.dirname(os.path.abspath(path))
            config = checkpoints.read_checkpoint_config(path)
        else:
            config = command_line.model_config_from_flags(f, f.num_classes)
    from deeplab_dpc.model import build_model  # TensorFlow loads here
    from deeplab_dpc.model_stats import compute_stats, format_table, summarize

    rows = compute_stats(build_model(config), crop)
    if f.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows, summarize(rows)))


def define_flags():
    from absl import flags

    command_line.define_model_variant_flag()
    flags.DEFINE_enum(
        "head", None, ["dpc", "aspp"], "Head; default: dpc with --dpc_spec, else aspp."
    )
    flags.DEFINE_string("dpc_spec", None, "DPC spec JSON file (DeepLab format).")
    flags.DEFINE_integer("output_stride", 16, "Backbone output stride: 8, 16 or 32.")
    flags.DEFINE_multi_string(
        "atrous_rates", None, "ASPP rates at output stride 16 (6,12,18 or repeated)."
    )
    flags.DEFINE_integer(
        "decoder_output_stride", None, "4 adds the DeepLab v3+ decoder."
    )
    flags.DEFINE_boolean(
        "aspp_with_separable_conv", True, "ASPP 3x3 convs separable (else full)."
    )
    flags.DEFINE_boolean(
        "decoder_use_separable_conv", True, "Decoder 3x3 convs separable (else full)."
    )
    flags.DEFINE_float("depth_multiplier", 1.0, "MobileNetV2 width multiplier.")
    command_line.define_nas_flags()
    flags.DEFINE_integer("num_classes", 19, "Number of classes of the logits layer.")
    flags.DEFINE_list("crop_size", ["513", "513"], "Input size H,W.")
    flags.DEFINE_string(
        "model_config", None,
        "A model_config.json, or the checkpoint directory it sits beside: "
        "the architecture of a trained model (model flags ignored).",
    )  # fmt: skip
    flags.DEFINE_boolean("json", False, "Print a JSON list of rows instead of a table.")


if __name__ == "__main__":
    define_flags()
    command_line.run(main, "model_stats")
