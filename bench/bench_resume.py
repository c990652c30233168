"""Resume cost of train.py at an early and a late step: iterator restored vs skipped.

A benchmark, not a test: run it by hand and copy the table into
g3doc/training.md ("Resume after a kill"). For each data position N it
writes two checkpoints at step N of one run (model, optimizer, step, data
position, dropout RNG state), one with the `tf.data` iterator's state (what
train.py saves now) and one without (what it saved before, where a resume
skips the N consumed batches), then times `python train.py` resuming each:
process start to the first step after the restore, and the input-positioning
time train.py logs (`Input positioned at data position N in S s`). The
process is stopped with SIGTERM after that first step.

The checkpoints are made without training N steps: the iterator is advanced
N batches (input pipeline only) and step, data position and the optimizer's
iteration count are set to N, which is the state a run has there.

Usage:
  python bench/bench_resume.py                           # N = 10 and 2000
  python bench/bench_resume.py --positions=10,20000 --workdir=/tmp/resume
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

FLAGS = flags.FLAGS
flags.DEFINE_list("positions", ["10", "2000"], "Data positions (steps) to resume at.")
flags.DEFINE_string("workdir", "/tmp/bench_resume", "Scratch directory (replaced).")
flags.DEFINE_integer("steps", 100000, "--training_number_of_steps of the run.")

POSITIONED = re.compile(r"Input positioned at data position (\d+) in (\S+) s \((.*)\)")


def _train_flags(logdir, workdir, steps):
    # train.py's synthetic defaults (flags.SYNTHETIC_DEFAULTS) but the steps.
    return [
        f"--train_logdir={logdir}", f"--dataset_dir={workdir}/data",
        f"--training_number_of_steps={steps}", "--log_steps=1",
        "--save_interval_secs=100000", "--save_summaries_secs=100000",
    ]  # fmt: skip


def _prepare(position, with_iterator, without_iterator):
    """Writes the two checkpoints at `position` (in this process)."""
    import tensorflow as tf

    from deeplab_dpc import command_line
    from deeplab_dpc.core import artefacts
    from deeplab_dpc.training import options as options_lib
    from deeplab_dpc.training import trainer

    info = command_line.dataset_info()
    values = command_line.option_values(options_lib.TRAIN_OPTIONS)
    values["dataset"] = info.name
    options = options_lib.train_options(values.pop("train_logdir"), **values)
    cfg = command_line.model_config(info.num_classes)
    t = trainer.Trainer(cfg, options, info)
    t.write_configs()
    t.restore_or_initialize()
    iterator = t.make_iterator()
    start = time.perf_counter()
    for _ in range(position):
        next(iterator)
    advance = time.perf_counter() - start
    for var in (t.step, t.data_position, t.optimizer.iterations):
        var.assign(position)
    t.save()
    plain = tf.train.Checkpoint(
        model=t.model, optimizer=t.optimizer, step=t.step,
        data_position=t.data_position, rng=t.rng_states,
    )  # fmt: skip
    tf.train.CheckpointManager(plain, without_iterator, 1).save(position)
    for path in (artefacts.model_config_path, artefacts.train_config_path):
        shutil.copy(path(with_iterator), path(without_iterator))
    return advance


def _resume(logdir, workdir, steps):
    """(seconds to the first step, positioning seconds, how) of one resume."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable, os.path.join(REPO, "train.py"),
            *_train_flags(logdir, workdir, steps),
        ],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    positioned, lines = None, []
    for line in proc.stderr:
        lines.append(line)
        found = POSITIONED.search(line)
        if found:
            positioned = (float(found.group(2)), found.group(3))
        if re.search(r"\bstep \d+/\d+\s+loss", line):
            first = time.perf_counter() - start
            proc.send_signal(signal.SIGTERM)
            break
    else:
        raise RuntimeError("train.py ended before a step:\n" + "".join(lines[-20:]))
    proc.communicate(timeout=600)
    return first, *positioned


def main(argv):
    del argv
    workdir, steps = FLAGS.workdir, FLAGS.steps
    positions = [int(p) for p in FLAGS.positions]
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    from deeplab_dpc import command_line
    from deeplab_dpc.training import options as options_lib

    command_line.define_model_flags()  # train.py's flags, parsed per position
    command_line.define_options(options_lib.TRAIN_OPTIONS)
    rows = []
    for position in positions:
        restored = os.path.join(workdir, f"restored_{position}")
        skipped = os.path.join(workdir, f"skipped_{position}")
        os.makedirs(skipped)
        FLAGS.unparse_flags()
        FLAGS(["train.py", *_train_flags(restored, workdir, steps)])
        advance = _prepare(position, restored, skipped)
        for logdir in (restored, skipped):
            first, seconds, how = _resume(logdir, workdir, steps)
            size = sum(
                os.path.getsize(os.path.join(logdir, f))
                for f in os.listdir(logdir)
                if f.startswith(f"ckpt-{position}.")
            )
            rows.append((position, first, seconds, how, size, advance))
            print(
                f"position {position:6d}  first step after {first:6.1f} s  input "
                f"positioned in {seconds:7.2f} s ({how})  checkpoint "
                f"{size / 1e6:.1f} MB  (advancing the iterator: {advance:.1f} s)",
                flush=True,
            )
    print("\n| data position | resume | process start to first step | input "
          "positioning | checkpoint |")  # fmt: skip
    print("| ---: | --- | ---: | ---: | ---: |")
    for position, first, seconds, how, size, _ in rows:
        print(
            f"| {position} | {how} | {first:.1f} s | {seconds:.2f} s | "
            f"{size / 1e6:.1f} MB |"
        )


if __name__ == "__main__":
    app.run(main)
