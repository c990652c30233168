r"""Runs an Auto-DeepLab search: `python -m deeplab_dpc.search.auto_deeplab`.

With no flags: the small synthetic search (`options.search_options`, a few
minutes on 2 CPU cores) into ./auto_deeplab_search; rerun the same command
after a kill or a stop to resume. Bad arguments: one line naming the flag,
exit code 2 (`deeplab_dpc.command_line.run`); Ctrl-C / SIGTERM: a checkpoint at the
step in flight, one line, exit code 130 / 0 (`interrupts`).
"""

from absl import flags

from deeplab_dpc import command_line, nas_spec

PROG = "auto_deeplab"
FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "auto_deeplab_search", "Output and checkpoint folder.")
flags.DEFINE_string("dataset", "synthetic", "Registered dataset name.")
flags.DEFINE_string("dataset_dir", None, "TFRecord folder (default: ./data/<dataset>).")
flags.DEFINE_string("train_split", "train", "Split halved into trainA / trainB.")
flags.DEFINE_integer("num_layers", 3, "L (the paper: 12).")
flags.DEFINE_integer("num_blocks", 5, "B.")
flags.DEFINE_integer("filter_multiplier", 4, "F (the paper: 8).")
flags.DEFINE_integer("num_levels", 4, "Resolutions from 1/4 (4: down to 1/32).")
flags.DEFINE_list("ops", list(nas_spec.SEARCH_OPS), "Operator set (official names).")
flags.DEFINE_list(
    "stem_filters", ["16", "16", "32"], "Stem filters (paper: 64,64,128)."
)
flags.DEFINE_list("crop_size", ["65", "65"], "Crop H,W (the paper: 321,321).")
flags.DEFINE_integer("batch_size", 2, "Batch size of each half.")
flags.DEFINE_integer("num_steps", 120, "Search steps (weight steps).")
flags.DEFINE_integer(
    "arch_start_step", 40, "Warm-up: alpha/beta updates start after this step."
)
flags.DEFINE_float(
    "weight_learning_rate", 0.025, "SGD learning rate (cosine to 0.001)."
)
flags.DEFINE_float(
    "arch_learning_rate", None,
    "Adam learning rate of alpha/beta (default: the paper's 3e-3 at its scale, "
    "10,000+ architecture steps; 3e-2 below it).",
)  # fmt: skip
flags.DEFINE_enum(
    "arch_learning_rate_schedule", "constant", ["constant", "cosine"],
    "Architecture learning rate: constant (the paper) or cosine to zero.",
)  # fmt: skip
flags.DEFINE_integer(
    "arch_batches", None,
    "trainB batches averaged per architecture step (default: 1 at the paper's "
    "scale, 2 below it).",
)  # fmt: skip
flags.DEFINE_boolean("recompute", False, "Recompute cell activations in backprop.")
flags.DEFINE_enum(
    "graph_optimizer", "auto", ["auto", "on", "off"],
    "TF's graph optimizer (grappler): auto is off on CPU, on with a GPU or TPU.",
)  # fmt: skip
flags.DEFINE_enum(
    "mixed_precision", None, ["bf16", "fp16"], "Mixed precision (as train.py)."
)
flags.DEFINE_boolean(
    "jit_compile", False, "Compile the forward and backward pass with XLA."
)
flags.DEFINE_integer("seed", 0, "Seed of the input pipelines.")
flags.DEFINE_integer("log_every", 10, "Log / architecture.json interval (steps).")
flags.DEFINE_integer("checkpoint_every", 20, "Checkpoint interval (steps).")
flags.DEFINE_integer(
    "average_logs", 3, "Decode from alpha/beta averaged over this many log steps."
)
flags.DEFINE_integer(
    "stop_after_stable_logs", 0,
    "Stop once the decoded cell and path are unchanged for this many log "
    "steps (0: run all steps).",
)  # fmt: skip
flags.DEFINE_integer(
    "max_parameter_free_ops", 0,
    "Stop when the decoded cell holds this many skip/pooling operators "
    "(DARTS+ early stopping; 0: only measure).",
)  # fmt: skip


def _ints(name):
    values = command_line.multi_values(FLAGS[name].value, int, name)
    if not values:
        raise ValueError(f"--{name}: expected numbers, got nothing")
    return values


def options_from_flags():
    """The checked search options of the command line (ValueError names the flag)."""
    from deeplab_dpc.search.auto_deeplab.options import search_options

    return search_options(
        dataset=FLAGS.dataset,
        dataset_dir=FLAGS.dataset_dir,
        split=FLAGS.train_split,
        num_layers=FLAGS.num_layers,
        num_blocks=FLAGS.num_blocks,
        filter_multiplier=FLAGS.filter_multiplier,
        num_levels=FLAGS.num_levels,
        ops=tuple(FLAGS.ops),
        stem_filters=_ints("stem_filters"),
        crop_size=_ints("crop_size"),
        batch_size=FLAGS.batch_size,
        num_steps=FLAGS.num_steps,
        arch_start_step=FLAGS.arch_start_step,
        weight_learning_rate=FLAGS.weight_learning_rate,
        arch_learning_rate=FLAGS.arch_learning_rate,
        arch_learning_rate_schedule=FLAGS.arch_learning_rate_schedule,
        arch_batches=FLAGS.arch_batches,
        recompute=FLAGS.recompute,
        graph_optimizer=FLAGS.graph_optimizer,
        mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
        seed=FLAGS.seed,
        log_every=FLAGS.log_every,
        checkpoint_every=FLAGS.checkpoint_every,
        average_logs=FLAGS.average_logs,
        stop_after_stable_logs=FLAGS.stop_after_stable_logs,
        max_parameter_free_ops=FLAGS.max_parameter_free_ops,
    )


def main(argv):
    del argv
    options = options_from_flags()  # checked before TensorFlow loads (its C++
    # start-up lines would follow the error line otherwise)
    from absl import logging

    from deeplab_dpc.search.auto_deeplab import search

    logging.set_verbosity(logging.INFO)
    search.AutoDeepLabSearcher(FLAGS.workdir, options).run()


if __name__ == "__main__":
    command_line.run(main, PROG)
