"""Training-step throughput (images/s): the trainer's own step, with and without XLA.

A benchmark, not a test: run it by hand and copy the table into
g3doc/performance.md ("Training step"). It builds the model the way train.py
does (default: MobileNetV2 depth 1.0 + the paper's top-1 DPC, output stride
16, 513x513 crops, batch 8, batch norm fine-tuned, weight decay 4e-5) and
times `Trainer.make_train_step()` (forward, loss, backward, momentum SGD) on
one fixed random batch, so the input pipeline is not measured. Each case runs
`--warmup_steps` untimed steps first (tracing, and XLA compilation with
`--jit_compile`), then `--steps` timed steps; the median step time is reported.

Usage:
  python bench/bench_train_step.py                      # both cases
  python bench/bench_train_step.py --cases=xla --steps=10
"""

import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

import tensorflow as tf  # noqa: E402

from deeplab_dpc.core import common  # noqa: E402
from deeplab_dpc.data import registry  # noqa: E402
from deeplab_dpc.modeling.model import model_config  # noqa: E402
from deeplab_dpc.training import options as options_lib  # noqa: E402
from deeplab_dpc.training import trainer as trainer_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_variant", "mobilenet_v2", "Backbone.")
flags.DEFINE_float("depth_multiplier", 1.0, "MobileNetV2 width multiplier.")
flags.DEFINE_string("dpc_spec", "specs/top1.json", "DPC spec (empty: ASPP).")
flags.DEFINE_integer("crop_size", 513, "Square crop size.")
flags.DEFINE_integer("batch_size", 8, "Global batch size.")
flags.DEFINE_integer("num_classes", 19, "Classes of the logits layer.")
flags.DEFINE_integer("warmup_steps", 2, "Untimed steps (tracing, compilation).")
flags.DEFINE_integer("steps", 5, "Timed steps.")
flags.DEFINE_list("cases", ["no_xla", "xla"], "Cases to run: no_xla, xla.")
flags.DEFINE_enum("mixed_precision", None, ["bf16", "fp16"], "Mixed precision.")


def _trainer(jit_compile, logdir):
    cfg = model_config(
        FLAGS.model_variant,
        FLAGS.num_classes,
        head="dpc" if FLAGS.dpc_spec else "aspp",
        dpc_spec=FLAGS.dpc_spec or None,
        depth_multiplier=FLAGS.depth_multiplier,
    )
    options = options_lib.train_options(
        logdir,
        train_crop_size=(FLAGS.crop_size, FLAGS.crop_size),
        train_batch_size=FLAGS.batch_size,
        jit_compile=jit_compile,
        mixed_precision=FLAGS.mixed_precision,
    )
    info = registry.custom_dataset_info("bench", FLAGS.num_classes)
    return trainer_lib.Trainer(cfg, options, info)


def _batch():
    size, batch = FLAGS.crop_size, FLAGS.batch_size
    return {
        common.IMAGE: tf.random.uniform([batch, size, size, 3], -1.0, 1.0, seed=0),
        common.LABEL: tf.random.uniform(
            [batch, size, size, 1], 0, FLAGS.num_classes, tf.int32, seed=1
        ),
    }


def run_case(jit_compile):
    """(median seconds per step, images/s, warm-up seconds) of one case."""
    with tempfile.TemporaryDirectory() as logdir:
        trainer = _trainer(jit_compile, logdir)
        step = trainer.make_train_step()
        batch = _batch()
        start = time.perf_counter()
        for _ in range(FLAGS.warmup_steps):
            float(step(batch)[1])
        warmup = time.perf_counter() - start
        times = []
        for _ in range(FLAGS.steps):
            start = time.perf_counter()
            float(step(batch)[1])
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return median, FLAGS.batch_size / median, warmup


def main(argv):
    del argv
    print(
        f"{FLAGS.model_variant} depth {FLAGS.depth_multiplier}, "
        f"head {'DPC ' + FLAGS.dpc_spec if FLAGS.dpc_spec else 'ASPP'}, "
        f"{FLAGS.crop_size}x{FLAGS.crop_size}, batch {FLAGS.batch_size}, "
        f"{FLAGS.steps} timed steps after {FLAGS.warmup_steps} warm-up, "
        f"{os.cpu_count()} CPUs, TF {tf.__version__}"
    )
    print("| case | s/step (median) | images/s | warm-up s |")
    print("| --- | ---: | ---: | ---: |")
    for case in FLAGS.cases:
        if case not in ("no_xla", "xla"):
            raise app.UsageError(f"unknown case {case!r}")
        median, rate, warmup = run_case(jit_compile=case == "xla")
        print(f"| {case} | {median:.2f} | {rate:.2f} | {warmup:.0f} |", flush=True)


if __name__ == "__main__":
    app.run(main)
