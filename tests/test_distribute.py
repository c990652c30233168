"""tf.distribute paths on CPU: two logical devices (mirrored) and two local workers.

Mirrored: the first-step loss on two replicas with synchronized batch norm
equals the one-device loss on the same global batch (same data, same initial
weights), and so do the batch-norm moving variances after that step.
Multi-worker: two `train.py` processes on loopback ports train together and
the chief writes the checkpoints.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.training import distribute

REPO = Path(__file__).resolve().parents[1]

MIRRORED_SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from absl import logging
logging.set_verbosity(logging.INFO)
from deeplab_dpc.data import registry
from deeplab_dpc.modeling.model import model_config
from deeplab_dpc.training import options, trainer

data, logdir = sys.argv[1], sys.argv[2]
info = registry.get_dataset_info("synthetic")
cfg = model_config("mobilenet_v2", 5, head="aspp", depth_multiplier=0.5,
                   batch_norm_decay=0.99)
losses = {}
for name in ("one_device", "mirrored"):
    keras.utils.set_random_seed(0)
    opts = options.train_options(
        f"{logdir}/{name}", dataset_dir=data, train_crop_size=(33, 33),
        train_batch_size=4, training_number_of_steps=1, base_learning_rate=0.02,
        min_scale_factor=1.0, max_scale_factor=1.0, distribution_strategy=name,
        log_steps=1, deterministic_input=True)
    losses[name] = trainer.train(cfg, opts, info)["loss"]

print(json.dumps({"losses": losses}))
"""


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def test_mirrored_on_two_logical_cpus_matches_one_device(tiny_data, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, tiny_data, str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=_env(), cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "Strategy mirrored: 2 replicas, 2 images per replica" in result.stderr
    assert "synchronized across replicas" in result.stderr
    one, mirrored = out["losses"]["one_device"], out["losses"]["mirrored"]
    # Not bit-equal: synchronized moments are E[x^2] - E[x]^2 over the global
    # batch, the one-device ones two-pass; float32 rounding differs slightly.
    assert mirrored == pytest.approx(one, rel=2e-3)
    # Batch-norm statistics over the global batch: the moving variances after
    # one step equal the one-device ones (per-replica moments would not).
    prefixes = [
        tf.train.latest_checkpoint(str(tmp_path / name))
        for name in ("one_device", "mirrored")
    ]
    assert prefixes[1].endswith("ckpt-1")
    names = [
        n for n, _ in tf.train.list_variables(prefixes[0]) if "moving_variance" in n
    ]
    assert len(names) > 30
    for name in names:
        np.testing.assert_allclose(
            tf.train.load_variable(prefixes[1], name),
            tf.train.load_variable(prefixes[0], name),
            rtol=1e-4, atol=1e-6, err_msg=name,
        )  # fmt: skip


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_loopback_train_together(tiny_data, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    logdir = tmp_path / "train"
    procs, logs = [], []
    for index in range(2):
        tf_config = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        # Output to files, not pipes: a full pipe would block one worker and
        # with it the collectives of the other.
        logs.append(open(tmp_path / f"worker{index}.log", "w+"))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "train.py"),
                    f"--dataset_dir={tiny_data}",
                    f"--train_logdir={logdir}",
                    "--distribution_strategy=multi_worker",
                    "--train_batch_size=4",
                    "--train_crop_size=33,33",
                    "--training_number_of_steps=2",
                    "--save_interval_secs=0",
                    "--log_steps=1",
                ],
                stdout=logs[-1],
                stderr=subprocess.STDOUT,
                text=True,
                env=_env(TF_CONFIG=tf_config),
            )  # fmt: skip
        )
    outputs = []
    try:
        for proc, log in zip(procs, logs):
            proc.wait(timeout=300)
            log.seek(0)
            outputs.append(log.read())
    finally:
        for proc, log in zip(procs, logs):
            if proc.poll() is None:
                proc.kill()
            log.close()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "Strategy multi_worker: 2 replicas, 2 images per replica" in out
        # Every worker names the chief's checkpoint, never its deleted scratch copy.
        assert "Finished at step 2, " in out and f"checkpoint {logdir}/ckpt-2" in out
        assert ".worker_" not in out, out[-3000:]
        # The per-step save/stop agreement is traced, not run eagerly.
        assert "eagerly has significant overhead" not in out, out[-3000:]
    assert tf.train.latest_checkpoint(str(logdir)).endswith("ckpt-2")
    assert (logdir / "model_config.json").exists()
    assert not list(logdir.glob(".worker_*"))


def test_batch_must_split_over_replicas_and_strategy_names_are_checked():
    strategy = distribute.make_strategy("one_device")
    assert distribute.per_replica_batch_size(8, strategy) == 8
    with pytest.raises(ValueError, match="unknown 'gpu'"):
        distribute.make_strategy("gpu")
    os.environ.pop("TF_CONFIG", None)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")

    class TwoReplicas:
        num_replicas_in_sync = 2

    with pytest.raises(ValueError, match="multiple of 2"):
        distribute.per_replica_batch_size(3, TwoReplicas())


def _launch_workers(tmp_path, name, flags, ports):
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs, logs = [], []
    for index in range(2):
        tf_config = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        logs.append(tmp_path / f"{name}{index}.log")
        with open(logs[-1], "w") as out:  # a file: a full pipe would block
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(REPO / "train.py"), *flags],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=_env(TF_CONFIG=tf_config),
                )  # fmt: skip
            )
    return procs, logs


def _wait_all(procs, logs):
    try:
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [log.read_text() for log in logs]


STOPPED = r"train\.py: stopped by SIGTERM: checkpoint saved at step (\d+) \((\S+)\)"


@pytest.mark.slow
def test_sigterm_to_one_worker_saves_an_agreed_checkpoint_on_both(tiny_data, tmp_path):
    """TensorFlow's PreemptionCheckpointHandler: SIGTERM to worker 1 stops both
    at one step, saved once in train_logdir; both resume from it."""
    import re
    import signal
    import time

    logdir = tmp_path / "train"
    flags = [
        f"--dataset_dir={tiny_data}", f"--train_logdir={logdir}",
        "--distribution_strategy=multi_worker", "--train_batch_size=4",
        "--train_crop_size=33,33", "--depth_multiplier=0.25", "--log_steps=1",
        "--save_interval_secs=100000",  # no periodic save: the stop must save
    ]  # fmt: skip
    procs, logs = _launch_workers(
        tmp_path, "run", [*flags, "--training_number_of_steps=1000"], _free_ports(2)
    )
    deadline = time.time() + 300
    while "step 3/1000" not in logs[1].read_text() and time.time() < deadline:
        assert procs[1].poll() is None, logs[1].read_text()[-3000:]
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    outputs = _wait_all(procs, logs)
    steps = []
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "Preemption handler on" in out
        stopped = re.search(STOPPED, out)
        assert stopped, out[-3000:]
        steps.append(int(stopped.group(1)))
        assert "Traceback" not in out
    assert steps[0] == steps[1] >= 3
    step = steps[0]
    latest = tf.train.latest_checkpoint(str(logdir))
    assert latest.endswith(f"ckpt-{step}")
    assert tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE") == step
    assert not list(logdir.glob(".worker_*"))

    procs, logs = _launch_workers(
        tmp_path, "resume", [*flags, f"--training_number_of_steps={step + 2}"],
        _free_ports(2),
    )  # fmt: skip
    for proc, out in zip(procs, _wait_all(procs, logs)):
        assert proc.returncode == 0, out[-3000:]
        assert f"ckpt-{step} at step {step} " in out, out[-3000:]
        assert f"Finished at step {step + 2}" in out
    assert tf.train.latest_checkpoint(str(logdir)).endswith(f"ckpt-{step + 2}")
