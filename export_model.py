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

from deeplab_dpc import errors

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "checkpoint_path", "runs/train", "Checkpoint directory or ckpt-N prefix."
)
flags.DEFINE_string(
    "export_path", "runs/export", "SavedModel directory to write (empty: none)."
)
flags.DEFINE_multi_float(
    "inference_scales", [1.0], "Scales for multi-scale inference (repeat the flag)."
)
flags.DEFINE_bool("add_flipped_images", False, "Also average left-right flips.")
flags.DEFINE_integer("output_stride", None, "Export at this output stride.")
flags.DEFINE_integer("num_classes", None, "Expected number of classes (a check).")
flags.DEFINE_string(
    "dataset", None,
    "Dataset name: class names, colours, int8 data (default: the checkpoint's).",
)  # fmt: skip
flags.DEFINE_string("dataset_dir", None, "TFRecords of --dataset (int8 calibration).")
flags.DEFINE_integer(
    "max_pixels", 4096 * 4096, "Largest batch * height * width per request; 0: any."
)
flags.DEFINE_string("tflite_output", None, "Also write a TFLite model here.")
flags.DEFINE_list("crop_size", ["513", "513"], "TFLite input size: height,width.")
flags.DEFINE_string("quantize", "none", "TFLite quantisation: none, float16 or int8.")
flags.DEFINE_string(
    "representative_images", None, "Comma-separated globs for int8 calibration."
)
flags.DEFINE_string("representative_split", "val", "Split of --dataset for int8.")
flags.DEFINE_integer("num_representative_images", 100, "Images for int8 calibration.")


def _fail(message):
    errors.fail(message, "export_model")


def check_flags():
    """Every flag value, before the checkpoint is read; ValueError names the flag."""
    from deeplab_dpc import command_line, common
    from deeplab_dpc.data import registry

    if not FLAGS.checkpoint_path:
        raise ValueError("--checkpoint_path: required (a checkpoint directory or prefix)")
    command_line.require_checkpoint(FLAGS.checkpoint_path, "checkpoint_path")
    if not FLAGS.inference_scales:
        raise ValueError("--inference_scales: at least one scale is needed")
    for scale in FLAGS.inference_scales:
        command_line.check_number("inference_scales", scale, 0.0, low_open=True)
    command_line.check_output_stride(FLAGS.output_stride)
    command_line.check_number("num_classes", FLAGS.num_classes, 1)
    command_line.check_number("max_pixels", FLAGS.max_pixels, 0)
    command_line.check_number("num_representative_images", FLAGS.num_representative_images, 1)
    if FLAGS.dataset:
        try:
            registry.get_dataset_info(FLAGS.dataset)
        except ValueError as e:
            raise ValueError(f"--dataset: {errors.one_line(e)}") from None
    from deeplab_dpc.export import tflite  # TensorFlow loads here

    if FLAGS.quantize not in tflite.QUANTIZE_MODES:
        raise ValueError(
            f"--quantize: must be one of {', '.join(tflite.QUANTIZE_MODES)}, "
            f"got {FLAGS.quantize!r}"
        )
    if FLAGS.quantize != "none" and not FLAGS.tflite_output:
        raise ValueError("--quantize applies to the TFLite model: give --tflite_output")
    try:
        crop = tflite.parse_crop_size(FLAGS.crop_size)
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    if max(crop) > common.MAX_CROP_SIDE:
        raise ValueError(
            f"--crop_size: {crop[0]}x{crop[1]} is too large; each side must be at "
            f"most {common.MAX_CROP_SIDE}"
        )


def main(argv):
    del argv  # positional arguments are refused by command_line.run
    try:
        check_flags()
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    from deeplab_dpc.checkpoints import CheckpointError, ModelConfigError
    from deeplab_dpc.export import saved_model

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
    from deeplab_dpc import command_line

    command_line.run(main, "export_model")
