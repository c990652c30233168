"""Writes colourised predictions beside images and ground truth (DeepLab's vis.py flags).

    python vis.py                                    # the default train.py run
    python vis.py --colormap_type=cityscapes --also_save_raw_predictions

PNG files go to vis_logdir/segmentation_results (and raw_segmentation_results).
The model comes from the checkpoint's model_config.json. See g3doc/evaluation.md.
"""

from absl import flags

from deeplab_dpc import command_line
from deeplab_dpc.core.option_table import Option

FLAGS = flags.FLAGS
# vis.py's own flags; the model, dataset and watching groups are shared.
VIS_OPTIONS = (
    Option("vis_logdir", "string", "runs/vis", "Where the PNG files are written."),
    Option("vis_split", "string", "val", "Split to visualise."),
    Option("colormap_type", "enum", "pascal",
           "Palette; 'dataset' uses the dataset's own colours.",
           choices=("pascal", "cityscapes", "ade20k", "camvid", "dataset")),
    Option("also_save_raw_predictions", "boolean", False, "Also write class-id PNGs."),
    Option("max_number_of_iterations", "integer", 0,
           "0: visualise new checkpoints until the final training step; N: at most N.",
           low=0),
    Option("max_number_of_images", "integer", 0, "Images per checkpoint (0: all).",
           low=0),
    Option("vis_batch_size", "integer", 1, "Unused: images are processed one by one."),
    Option("vis_crop_size", "ints", (), "Unused: whole images are shown."),
)  # fmt: skip
command_line.define_watch_flags(VIS_OPTIONS)


def main(argv):
    del argv
    watch = command_line.watch_values(VIS_OPTIONS, "vis_split", honoured=())
    from deeplab_dpc.evaluation import visualizer

    visualizer.visualize_checkpoints(
        FLAGS.checkpoint_dir,
        FLAGS.vis_logdir,
        watch["info"],
        watch["data"],
        vis_split=FLAGS.vis_split,
        colormap_type=FLAGS.colormap_type,
        vis_scales=watch["eval_scales"],
        also_save_raw_predictions=FLAGS.also_save_raw_predictions,
        max_number_of_iterations=FLAGS.max_number_of_iterations,
        max_images=FLAGS.max_number_of_images,
        **watch["watching"],
    )


if __name__ == "__main__":
    command_line.run(main)
