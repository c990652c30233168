"""Host work per training step: the old per-step reads against the trainer's loop today.

A benchmark, not a test: run it by hand and copy the table into
g3doc/performance.md ("Host work per step"). On the synthetic default's
model and steps (MobileNetV2 x0.5 + top-1 DPC, 129x129 crops, batch 8, as
`python train.py --dpc_spec=specs/top1.json`), fed from an in-memory
`tf.data` iterator (one fixed batch repeated, so the input pipeline is not
measured), it times per step, in one process, in alternating rounds:

- `per-step reads` (before): what `Trainer.run` did every step until issue
  28: `float(ce)`, `float(total)`, `int(step.numpy())` and an eager
  learning-rate call after each one-step call;
- `log-step reads` (after, `--steps_per_execution=1`, the default): one step
  per call, the loss, learning rate (from the graph) and non-finite check
  read every `--log_steps` steps only;
- `N steps per call` (after, `--steps_per_execution=N`): `make_train_loop`,
  one call per logging interval.

Usage:
  python bench/bench_host_overhead.py                  # 3 rounds of 50 steps each
  python bench/bench_host_overhead.py --crop_size=33 --depth_multiplier=0.25
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
flags.DEFINE_float(
    "depth_multiplier", 0.5, "MobileNetV2 width (synthetic default 0.5)."
)
flags.DEFINE_integer("crop_size", 129, "Square crop (synthetic default 129).")
flags.DEFINE_integer("batch_size", 8, "Batch (synthetic default 8).")
flags.DEFINE_integer("log_steps", 10, "Steps between reads (train.py's default 10).")
flags.DEFINE_integer(
    "steps", 50, "Timed steps per case per round (a multiple of log_steps)."
)
flags.DEFINE_integer(
    "rounds", 3, "Rounds over the cases; the median round is reported."
)


def _trainer(logdir, steps_per_execution):
    cfg = model_config(
        "mobilenet_v2", 6, head="dpc", dpc_spec="specs/top1.json",
        depth_multiplier=FLAGS.depth_multiplier,
    )  # fmt: skip
    options = options_lib.train_options(
        logdir, train_crop_size=(FLAGS.crop_size, FLAGS.crop_size),
        train_batch_size=FLAGS.batch_size, log_steps=FLAGS.log_steps,
        steps_per_execution=steps_per_execution, seed=0,
    )  # fmt: skip
    return trainer_lib.Trainer(cfg, options, registry.custom_dataset_info("bench", 6))


def _iterator():
    size, batch = FLAGS.crop_size, FLAGS.batch_size
    one = {
        common.IMAGE: tf.random.uniform([batch, size, size, 3], -1.0, 1.0, seed=0),
        common.LABEL: tf.random.uniform([batch, size, size, 1], 0, 6, tf.int32, seed=1),
    }
    return iter(tf.data.Dataset.from_tensors(one).repeat().prefetch(2))


def per_step_reads(trainer, step_fn, iterator, steps):
    for _ in range(steps):
        ce, total, _ = step_fn(next(iterator))
        ce, total = float(ce), float(total)
        step = int(trainer.step.numpy())
        float(trainer.schedule(step - 1))


def log_step_reads(trainer, step_fn, iterator, steps):
    for i in range(1, steps + 1):
        outputs = step_fn(next(iterator))
        if i % FLAGS.log_steps == 0:
            [float(t) for t in outputs]
            trainer.nonfinite_step.numpy()


def steps_per_call(trainer, loop_fn, iterator, steps):
    n = tf.constant(FLAGS.log_steps, tf.int64)
    for _ in range(steps // FLAGS.log_steps):
        [float(t) for t in loop_fn(iterator, n)]
        trainer.nonfinite_step.numpy()


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as logdir:
        trainer = _trainer(logdir, FLAGS.log_steps)
        step_fn, loop_fn = trainer.make_train_step(), trainer.make_train_loop()
        iterator = _iterator()
        cases = {
            "per-step reads (before)": lambda: per_step_reads(
                trainer, step_fn, iterator, FLAGS.steps),
            "log-step reads, 1 step per call": lambda: log_step_reads(
                trainer, step_fn, iterator, FLAGS.steps),
            f"{FLAGS.log_steps} steps per call": lambda: steps_per_call(
                trainer, loop_fn, iterator, FLAGS.steps),
        }  # fmt: skip
        # Warm-up: trace both functions.
        log_step_reads(trainer, step_fn, iterator, FLAGS.log_steps)
        steps_per_call(trainer, loop_fn, iterator, FLAGS.log_steps)
        times = {name: [] for name in cases}
        for _ in range(FLAGS.rounds):
            for name, run in cases.items():
                start = time.perf_counter()
                run()
                times[name].append(1000 * (time.perf_counter() - start) / FLAGS.steps)
    print(f"model: MobileNetV2 x{FLAGS.depth_multiplier} + top-1 DPC, "
          f"{FLAGS.crop_size}x{FLAGS.crop_size}, batch {FLAGS.batch_size}; "
          f"{FLAGS.steps} steps x {FLAGS.rounds} rounds; load {os.getloadavg()}")  # fmt: skip
    base = statistics.median(times["per-step reads (before)"])
    print("| case | ms per step (median round) | rounds | vs before |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {median:.1f} | {rounds} | {base / median:.3f}x |")


if __name__ == "__main__":
    app.run(main)
