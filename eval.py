"""Evaluates checkpoints: mIoU, per-class IoU, pixel accuracy (DeepLab's eval.py flags).

    python eval.py                                   # the default train.py run
    python eval.py --eval_scales=0.5,1,1.5 --add_flipped_images

The model is rebuilt from the checkpoint's model_config.json (model flags are
ignored, except --output_stride: `--output_stride=8` evaluates a model trained
at 16 at 8, as in DeepLab) and the dataset comes from its train_config.json
unless --dataset is given. Results: a table in the log, eval_logdir/results.json, TensorBoard.
See g3doc/evaluation.md.
"""

from absl import flags

from deeplab_dpc import command_line

FLAGS = flags.FLAGS
command_line.define_model_flags()

flags.DEFINE_string("checkpoint_dir", "runs/train", "Checkpoint dir or ckpt-N prefix.")
flags.DEFINE_string("eval_logdir", "runs/eval", "Where results are written.")
flags.DEFINE_string("eval_split", "val", "Split to evaluate.")
flags.DEFINE_multi_string("eval_scales", ["1.0"], "Inference scales.")
flags.DEFINE_boolean("add_flipped_images", False, "Also average left-right flips.")
flags.DEFINE_integer(
    "max_number_of_evaluations", 0,
    "0: evaluate new checkpoints until the final training step; N: at most N.",
)  # fmt: skip
flags.DEFINE_integer("eval_interval_secs", 300, "Seconds between checkpoint polls.")
flags.DEFINE_float(
    "max_wait_secs", None,
    "Stop after this long without a newer checkpoint (default: 2 x the "
    "training's save_interval_secs + 60).",
)  # fmt: skip
flags.DEFINE_multi_string(
    "eval_crop_size", [], "Unused: whole images are padded to k*32+1."
)


def main(argv):
    del argv
    scales = command_line.check_scales("eval_scales")
    for name in ("eval_interval_secs", "max_wait_secs"):
        command_line.check_number(name, FLAGS[name].value)
    command_line.require_checkpoint(FLAGS.checkpoint_dir)
    command_line.note_ignored_model_flags(honoured=("output_stride",))
    info, dataset_dir, source = command_line.dataset_for_checkpoint(FLAGS.checkpoint_dir)
    if FLAGS.max_number_of_evaluations < 0:
        raise ValueError("--max_number_of_evaluations must be >= 0")
    from deeplab_dpc.evaluation import evaluator

    stride = FLAGS.output_stride if command_line.is_set("output_stride") else None
    command_line.check_output_stride(stride)
    from deeplab_dpc.data import registry

    try:
        registry.resolve_split(info, FLAGS.eval_split)
    except ValueError as e:
        raise ValueError(f"--eval_split: {e}") from None

    evaluator.evaluate(
        FLAGS.checkpoint_dir,
        FLAGS.eval_logdir,
        info,
        dataset_dir=dataset_dir,
        eval_split=FLAGS.eval_split,
        eval_scales=scales,
        add_flipped_images=FLAGS.add_flipped_images,
        max_number_of_evaluations=FLAGS.max_number_of_evaluations,
        eval_interval_secs=FLAGS.eval_interval_secs,
        dataset_source=source,
        tfds_data_dir=FLAGS.tfds_data_dir,
        tfds_manual_dir=FLAGS.tfds_manual_dir,
        wait_secs=FLAGS.max_wait_secs,
        output_stride=stride,
    )


if __name__ == "__main__":
    command_line.run(main)
