"""Tests for the Auto-DeepLab supernet and search (deeplab_dpc/search/auto_deeplab)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc import nas_spec as N
from deeplab_dpc.search.auto_deeplab.supernet import AutoDeepLabSupernet, trellis

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--num_layers=2", "--num_blocks=1", "--filter_multiplier=2", "--num_levels=2",
    "--ops=separable_3x3_2,none,zero", "--stem_filters=4,4,4", "--crop_size=33,33",
    "--batch_size=1", "--arch_start_step=2", "--log_every=1", "--checkpoint_every=2",
]  # fmt: skip


def test_trellis_reachability_rules():
    nodes, edges = trellis(3)
    assert nodes == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]
    assert edges[1] == [(0, 0), (0, 1)]
    assert edges[2] == [(0, 0), (1, 0), (0, 1), (1, 1), (1, 2)]
    assert edges[3] == [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1), (1, 2), (2, 2), (2, 3)]
    # Every edge moves by at most one level; every node of layer l has an
    # incoming edge; no level beyond the limit.
    nodes, edges = trellis(6, num_levels=3)
    for layer in range(1, 7):
        assert all(abs(s - t) <= 1 for s, t in edges[layer])
        assert sorted({t for _, t in edges[layer]}) == nodes[layer]
        assert max(nodes[layer]) <= 2
    # Every legal path is a chain of trellis edges and vice versa.
    paths = list(N.enumerate_paths(6, 3))
    chains = [
        p for p in paths if all((([0] + p)[i], p[i]) in edges[i + 1] for i in range(6))
    ]
    assert chains == paths


def test_supernet_variables_probabilities_and_gradients():
    model = AutoDeepLabSupernet(
        3, num_layers=2, num_blocks=1, filter_multiplier=1, num_levels=2,
        ops=("none", "avg_pool_3x3", "zero"), stem_filters=(4, 4, 4),
    )  # fmt: skip
    images = tf.random.normal((2, 17, 17, 3))
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(tf.square(logits))
    assert tuple(logits.shape) == (2, 17, 17, 3)
    arch = model.architecture_variables()
    assert [tuple(v.shape) for v in arch] == [(2, 3), (2, 2, 3)]  # 2 edges, 3 ops
    ids = {id(v) for v in model.network_variables()}
    assert not ids & {id(v) for v in arch}
    assert len(ids) + 2 == len(model.trainable_variables)
    grads = tape.gradient(loss, arch)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    p = model.beta_probabilities().numpy()
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    assert p[0, 0, 0] < 1e-6 and p[0, 1, 2] < 1e-6  # no edge beyond the levels
    # Recomputing the cells in the backward pass gives the same gradients.
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=True)))
    plain = tape.gradient(loss, variables)
    model.recompute = True
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=True)))
    recomputed = tape.gradient(loss, variables)
    model.recompute = False
    for a, b in zip(plain, recomputed):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    arch_dict = model.decoded_architecture()
    assert N.parse_architecture(arch_dict)["network"] in (
        [0, 0],
        [0, 1],
        [1, 0],
        [1, 1],
    )
    assert len(arch_dict["cell"]) == 1


def test_driver_rejects_bad_flags():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_dpc.search.auto_deeplab", "--ops=conv_9x9"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--ops: unknown ['conv_9x9']" in result.stderr.strip().splitlines()[-1]


def _start(workdir, steps):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    args = [sys.executable, "-m", "deeplab_dpc.search.auto_deeplab",
            f"--workdir={workdir}", f"--num_steps={steps}", *TINY]  # fmt: skip
    return subprocess.Popen(
        args, env=env, cwd=workdir.parent, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_search_killed_and_resumed(tmp_path):
    workdir = tmp_path / "search"
    proc = _start(workdir, 8)
    state = workdir / "checkpoints" / "checkpoint"  # written after the data

    def saved():
        return state.exists() and 'ckpt-2"' in state.read_text()

    deadline = time.time() + 900
    while not saved() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert saved(), proc.communicate()[0][-2000:]
    proc.send_signal(signal.SIGKILL)  # mid-run, no cleanup
    proc.wait()
    assert not (workdir / "trellis.png").exists()
    proc = _start(workdir, 8)
    log = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, log[-2000:]
    resumed = [line for line in log.splitlines() if "resumed from" in line]
    assert resumed and "at step" in resumed[0]
    assert int(resumed[0].rsplit("at step", 1)[1]) >= 2
    assert "step 1/8" not in log  # nothing before the checkpoint was redone
    history = json.loads((workdir / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, 9))
    arch = N.load_architecture(workdir / "architecture.json")
    assert len(arch["network"]) == 2 and len(arch["cell"]) == 1
    for name in ("trellis.png", "cell.png", "alpha.png", "search_config.json"):
        assert (workdir / name).exists()
    assert not [p for p in workdir.iterdir() if p.name.endswith(".tmp")]
