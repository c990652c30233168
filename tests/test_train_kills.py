"""train.py SIGKILLed at 10 random points of one run, resumed each time (real processes).

The killed-and-resumed run must log the same loss and learning rate at every
step as an uninterrupted run with the same flags (the log's 4 decimals:
the input iterator is restored from the checkpoint, the pipeline and the
kernels are deterministic on CPU, so the values are equal, not close); every
resume starts at the checkpoint's step with the schedule's learning rate and
data position = step, restores the iterator (no skipping), and the latest
checkpoint always reads back whole (never torn).
"""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.data import synthetic
from deeplab_dpc.training import schedules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, KILLS, LR = 24, 10, 0.02
STEP_LINE = re.compile(r"step (\d+)/\d+\s+loss (\S+)\s+lr (\S+)")
RESUMED = re.compile(
    r"Resumed from \S+ckpt-(\d+) at step (\d+) \(learning rate (\S+), "
    r"data position (\d+)\)"
)


def _command(data, logdir):
    return [
        sys.executable, os.path.join(REPO, "train.py"), f"--dataset_dir={data}",
        f"--train_logdir={logdir}", f"--training_number_of_steps={STEPS}",
        "--save_interval_secs=0", "--train_crop_size=33,33", "--train_batch_size=2",
        "--log_steps=1", f"--base_learning_rate={LR}", "--seed=1",
        "--depth_multiplier=0.25", "--deterministic_input",
    ]  # fmt: skip


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _losses(text):
    return {int(s): (loss, lr) for s, loss, lr in STEP_LINE.findall(text)}


def _latest(logdir):
    prefix = tf.train.latest_checkpoint(str(logdir))
    if prefix is None:
        return None
    reader = tf.train.load_checkpoint(prefix)  # fails on a torn checkpoint
    step = int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
    assert step == int(prefix.rsplit("-", 1)[1])
    assert reader.has_tensor("iterator/.ATTRIBUTES/ITERATOR_STATE")
    return step


@pytest.mark.slow
def test_sigkill_at_ten_points_resumes_to_the_same_losses(tmp_path):
    data = tmp_path / "data"
    synthetic.generate_synthetic_dataset(
        str(data), num_train=8, num_val=2, image_size=(33, 33)
    )
    reference = subprocess.run(
        _command(data, tmp_path / "reference"), capture_output=True, text=True,
        env=_env(), timeout=600,
    )  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = _losses(reference.stderr)
    assert sorted(expected) == list(range(1, STEPS + 1))

    rng = np.random.default_rng(0)
    targets = sorted(rng.choice(np.arange(1, STEPS - 1), KILLS, replace=False))
    logdir, seen, resumes = tmp_path / "killed", {}, 0
    for target in [*targets, None]:
        log = tmp_path / f"run{resumes}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                _command(data, logdir), stdout=out, stderr=subprocess.STDOUT,
                env=_env(),
            )  # fmt: skip
        if target is not None:
            # A run killed just after a save can already be past the next
            # target: every run saves at least one new checkpoint (so it has
            # resumed and logged it) before it is killed.
            target = max(target, (_latest_or_none(logdir) or 0) + 1)
            while proc.poll() is None and (_latest_or_none(logdir) or 0) < target:
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.3))  # somewhere in the next step or save
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=600)
        text = log.read_text()
        if target is None:
            assert proc.returncode == 0, text[-3000:]
        before = _latest(logdir)
        for step, values in _losses(text).items():
            assert values == expected[step], (step, values, expected[step])
            seen[step] = values
        resumed = RESUMED.search(text)
        if resumes:
            assert resumed, text[-3000:]
            ckpt, step, lr, position = map(float, resumed.groups())
            assert ckpt == step == position
            schedule = schedules.DeepLabSchedule("poly", LR, STEPS)
            assert lr == pytest.approx(float(schedule(int(step))), rel=1e-5)
            assert "(restored the iterator)" in text
        assert before is not None
        resumes += 1
    assert sorted(seen) == list(range(1, STEPS + 1))
    assert resumes == KILLS + 1


def _latest_or_none(logdir):
    try:
        return _latest(logdir)
    except (tf.errors.OpError, AssertionError, ValueError):
        return None  # mid-save: the state file names a checkpoint not yet read
