r"""Exports a checkpoint as a SavedModel for serving and, optionally, TFLite.

    python export_model.py                 # runs/train (train.py's default) -> runs/export
    python export_model.py --checkpoint_path=runs/train \
        --export_path=runs/export --inference_scales=1.0 \
        --tflite_output=runs/deeplab.tflite --crop_size=129,129 --quantize=none

The flags follow the original DeepLab's `export_model.py` (deviation: the
checkpoint and export paths default to train.py's `runs/train` and
`runs/export`; `--export_path=` writes no SavedModel). The model
architecture comes from the checkpoint's `model_config.json`, and class
names and colours from its `dataset` unless `--dataset` is given; `--num_classes`
only checks it and `--output_stride` may change it (atrous rates follow).
`--crop_size` fixes the TFLite input; the SavedModel takes any size. See
g3doc/export.md and `deeplab_dpc/export/`.
"""

from absl import flags

from deeplab_dpc import command_line
from deeplab_dpc.core import common, errors, option_table
from deeplab_dpc.core.option_table import Option

FLAGS = flags.FLAGS

# Every flag, once (`option_table.Option` rows); checked before the
# checkpoint is read (`check_flags`).
EXPORT_OPTIONS = (
    Option("checkpoint_path", "string", "runs/train",
           "Checkpoint directory or ckpt-N prefix.", required=True),
    Option("export_path", "string", "runs/export",
           "SavedModel directory to write (empty: none)."),
    Option("inference_scales", "multi_float", (1.0,),
           "Scales for multi-scale inference (repeat the flag).", low=0.0, low_open=True),
    Option("add_flipped_images", "boolean", False, "Also average left-right flips."),
    Option("output_stride", "integer", None, "Export at this output stride.",
           choices=common.OUTPUT_STRIDES),
    Option("num_classes", "integer", None, "Expected number of classes (a check).",
           low=1),
    Option("dataset", "string", None,
           "Dataset name: class names, colours, int8 data (default: the checkpoint's)."),
    Option("dataset_dir", "string", None, "TFRecords of --dataset (int8 calibration)."),
    Option("max_pixels", "integer", 4096 * 4096,
           "Largest batch * height * width per request; 0: any.", low=0),
    Option("tflite_output", "string", None, "Also write a TFLite model here."),
    Option("crop_size", "list", ("513", "513"), "TFLite input size: height,width."),
    Option("quantize", "string", "none", "TFLite quantisation: none, float16 or int8.",
           choices=("none", "float16", "int8")),  # export.tflite.QUANTIZE_MODES
    Option("representative_images", "string", None,
           "Comma-separated globs for int8 calibration."),
    Option("representative_split", "string", "val", "Split of --dataset for int8."),
    Option("num_representative_images", "integer", 100,
           "Images for int8 calibration.", low=1),
)  # fmt: skip
command_line.define_options(EXPORT_OPTIONS)


def _fail(message):
    errors.fail(message, "export_model")


def check_flags():
    """Every flag value, before the checkpoint is read; ValueError names the flag."""
    from deeplab_dpc.data import registry

    command_line.option_values(EXPORT_OPTIONS)
    command_line.require_checkpoint(FLAGS.checkpoint_path, "checkpoint_path")
    if not FLAGS.inference_scales:
        raise ValueError("--inference_scales: at least one scale is needed")
    if FLAGS.dataset:
        try:
            registry.get_dataset_info(FLAGS.dataset)
        except ValueError as e:
            raise ValueError(f"--dataset: {errors.one_line(e)}") from None
    if FLAGS.quantize != "none" and not FLAGS.tflite_output:
        raise ValueError("--quantize applies to the TFLite model: give --tflite_output")
    crop = FLAGS.crop_size
    option_table.check_crop("--crop_size", crop * 2 if len(crop) == 1 else crop)


def main(argv):
    del argv  # positional arguments are refused by command_line.run
    try:
        check_flags()
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    from deeplab_dpc.export import saved_model
    from deeplab_dpc.modeling.checkpoints import CheckpointError, ModelConfigError

    try:
        config = saved_model.export_model(
            FLAGS.checkpoint_path,
            FLAGS.export_path or None,
            inference_scales=FLAGS.inference_scales,
            add_flipped_images=FLAGS.add_flipped_images,
            output_stride=FLAGS.output_stride,
            num_classes=FLAGS.num_classes,
            dataset=FLAGS.dataset,
            max_pixels=FLAGS.max_pixels,
            tflite_output=FLAGS.tflite_output,
            tflite_options={
                "crop_size": FLAGS.crop_size,
                "quantize": FLAGS.quantize,
                "representative_images": FLAGS.representative_images,
                "dataset_dir": FLAGS.dataset_dir,
                "representative_split": FLAGS.representative_split,
                "num_representative": FLAGS.num_representative_images,
            },
        )
    except (CheckpointError, ModelConfigError, ValueError, FileNotFoundError) as e:
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    outputs = [p for p in (FLAGS.export_path, FLAGS.tflite_output) if p]
    classes = ", ".join(config["class_names"])
    source = f"dataset {config['dataset']}" if config["dataset"] else "by id"
    print(
        f"exported {config['checkpoint']} to {', '.join(outputs)}; "
        f"classes ({source}): {classes}"
    )


if __name__ == "__main__":
    command_line.run(main, "export_model")
