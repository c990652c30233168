r"""Runs an Auto-DeepLab search: `python -m deeplab_dpc.search.auto_deeplab`.

With no flags: the small synthetic search of `search.run_search` (a few
minutes on 2 CPU cores) into ./auto_deeplab_search; rerun the same command
after a kill to resume. Bad arguments exit with code 2 and a one-line error.
"""

import sys

from absl import app, flags, logging

from deeplab_dpc import nas_spec

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
flags.DEFINE_integer("num_steps", 120, "Search steps.")
flags.DEFINE_integer("arch_start_step", 40, "Alpha/beta updates start after this step.")
flags.DEFINE_boolean("recompute", False, "Recompute cell activations in backprop.")
flags.DEFINE_boolean(
    "graph_optimizer", False, "Keep TF's graph optimizer (grappler) on (slower start)."
)
flags.DEFINE_integer("seed", 0, "Seed of the input pipelines.")
flags.DEFINE_integer("log_every", 10, "Log / architecture.json interval (steps).")
flags.DEFINE_integer("checkpoint_every", 20, "Checkpoint interval (steps).")


def main(argv):
    del argv
    from deeplab_dpc.search.auto_deeplab.search import run_search

    try:
        crop = [int(v) for v in FLAGS.crop_size]
        stem = [int(v) for v in FLAGS.stem_filters]
        if len(crop) != 2 or min(crop) < 1:
            raise ValueError(
                f"--crop_size: expected H,W, got {','.join(FLAGS.crop_size)}"
            )
        if len(stem) != 3:
            raise ValueError("--stem_filters: expected three numbers")
        bad = [op for op in FLAGS.ops if op not in nas_spec.SEARCH_OPS]
        if bad:
            raise ValueError(
                f"--ops: unknown {bad}; known: {', '.join(nas_spec.SEARCH_OPS)}"
            )
    except ValueError as e:
        print(f"auto_deeplab: {e}", file=sys.stderr)
        sys.exit(2)
    logging.set_verbosity(logging.INFO)
    try:
        run_search(
            FLAGS.workdir,
            dataset=FLAGS.dataset,
            dataset_dir=FLAGS.dataset_dir,
            split=FLAGS.train_split,
            num_layers=FLAGS.num_layers,
            num_blocks=FLAGS.num_blocks,
            filter_multiplier=FLAGS.filter_multiplier,
            num_levels=FLAGS.num_levels,
            ops=tuple(FLAGS.ops),
            stem_filters=tuple(stem),
            crop_size=tuple(crop),
            batch_size=FLAGS.batch_size,
            num_steps=FLAGS.num_steps,
            arch_start_step=FLAGS.arch_start_step,
            recompute=FLAGS.recompute,
            graph_optimizer=FLAGS.graph_optimizer,
            seed=FLAGS.seed,
            log_every=FLAGS.log_every,
            checkpoint_every=FLAGS.checkpoint_every,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"auto_deeplab: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    from deeplab_dpc import console, devices, interrupts

    console.quiet_tensorflow()  # before main() loads TensorFlow
    devices.define_flag()  # --gpu_memory_growth, on by default (devices.py)
    # Ctrl-C / SIGTERM: one line and exit 130 / 0, not a traceback; the search
    # resumes from its last checkpoint (--checkpoint_every) when rerun.
    app.run(
        lambda argv: (
            devices.apply_flag() or interrupts.guard(lambda: main(argv), "auto_deeplab")
        )
    )
