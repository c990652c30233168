"""Writes colourised predictions beside images and ground truth (DeepLab's vis.py flags).

    python vis.py                                    # the default train.py run
    python vis.py --colormap_type=cityscapes --also_save_raw_predictions

PNG files go to vis_logdir/segmentation_results (and raw_segmentation_results).
The model comes from the checkpoint's model_config.json. See g3doc/evaluation.md.
"""

from absl import flags

from deeplab_dpc import command_line

FLAGS = flags.FLAGS
command_line.define_model_flags()

flags.DEFINE_string("checkpoint_dir", "runs/train", "Checkpoint dir or ckpt-N prefix.")
flags.DEFINE_string("vis_logdir", "runs/vis", "Where the PNG files are written.")
flags.DEFINE_string("vis_split", "val", "Split to visualise.")
flags.DEFINE_enum(
    "colormap_type", "pascal", ["pascal", "cityscapes", "ade20k", "camvid", "dataset"],
    "Palette; 'dataset' uses the dataset's own colours.",
)  # fmt: skip
flags.DEFINE_multi_string("eval_scales", ["1.0"], "Inference scales.")
flags.DEFINE_boolean("add_flipped_images", False, "Also average left-right flips.")
flags.DEFINE_boolean("also_save_raw_predictions", False, "Also write class-id PNGs.")
flags.DEFINE_integer(
    "max_number_of_iterations", 0,
    "0: visualise new checkpoints until the final training step; N: at most N.",
)  # fmt: skip
flags.DEFINE_integer("eval_interval_secs", 300, "Seconds between checkpoint polls.")
flags.DEFINE_float(
    "max_wait_secs", None,
    "Stop after this long without a newer checkpoint (default: 2 x the "
    "training's save_interval_secs + 60).",
)  # fmt: skip
flags.DEFINE_integer("max_number_of_images", 0, "Images per checkpoint (0: all).")
flags.DEFINE_integer("vis_batch_size", 1, "Unused: images are processed one by one.")
flags.DEFINE_multi_string("vis_crop_size", [], "Unused: whole images are shown.")


def main(argv):
    del argv
    scales = command_line.check_scales("eval_scales")
    for name in ("eval_interval_secs", "max_wait_secs"):
        command_line.check_number(name, FLAGS[name].value)
    command_line.require_checkpoint(FLAGS.checkpoint_dir)
    command_line.note_ignored_model_flags()
    info, dataset_dir, source = command_line.dataset_for_checkpoint(FLAGS.checkpoint_dir)
    for name in ("max_number_of_iterations", "max_number_of_images"):
        command_line.check_number(name, FLAGS[name].value, 0)
    from deeplab_dpc.data import registry

    try:
        registry.resolve_split(info, FLAGS.vis_split)
    except ValueError as e:
        raise ValueError(f"--vis_split: {e}") from None
    from deeplab_dpc.evaluation import visualizer

    visualizer.visualize_checkpoints(
        FLAGS.checkpoint_dir,
        FLAGS.vis_logdir,
        info,
        dataset_dir=dataset_dir,
        vis_split=FLAGS.vis_split,
        colormap_type=FLAGS.colormap_type,
        vis_scales=scales,
        add_flipped_images=FLAGS.add_flipped_images,
        also_save_raw_predictions=FLAGS.also_save_raw_predictions,
        max_number_of_iterations=FLAGS.max_number_of_iterations,
        eval_interval_secs=FLAGS.eval_interval_secs,
        max_images=FLAGS.max_number_of_images,
        dataset_source=source,
        tfds_data_dir=FLAGS.tfds_data_dir,
        tfds_manual_dir=FLAGS.tfds_manual_dir,
        wait_secs=FLAGS.max_wait_secs,
    )


if __name__ == "__main__":
    command_line.run(main)
