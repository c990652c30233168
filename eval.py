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
from deeplab_dpc.core.option_table import Option

FLAGS = flags.FLAGS
# eval.py's own flags; the model, dataset and watching groups are shared.
EVAL_OPTIONS = (
    Option("eval_logdir", "string", "runs/eval", "Where results are written."),
    Option("eval_split", "string", "val", "Split to evaluate."),
    Option("max_number_of_evaluations", "integer", 0,
           "0: evaluate new checkpoints until the final training step; N: at most N.",
           low=0),
    Option("eval_crop_size", "ints", (), "Unused: whole images are padded to k*32+1."),
)  # fmt: skip
command_line.define_watch_flags(EVAL_OPTIONS)


def main(argv):
    del argv
    watch = command_line.watch_values(EVAL_OPTIONS, "eval_split")
    from deeplab_dpc.evaluation import evaluator

    stride = FLAGS.output_stride if command_line.is_set("output_stride") else None
    evaluator.evaluate(
        FLAGS.checkpoint_dir,
        FLAGS.eval_logdir,
        watch["info"],
        watch["data"],
        eval_split=FLAGS.eval_split,
        eval_scales=watch["eval_scales"],
        max_number_of_evaluations=FLAGS.max_number_of_evaluations,
        output_stride=stride,
        **watch["watching"],
    )


if __name__ == "__main__":
    command_line.run(main)
