"""The Auto-DeepLab bi-level search (Sec. 4.2, 5.1) as one library call.

`run_search(workdir, ...)` splits the training split into two disjoint
halves (trainA: record/shard half 0 for the network weights, trainB: half 1
for alpha and beta), and alternates, first order as DARTS: one SGD step of
the weights on trainA (momentum 0.9, cosine learning rate 0.025 -> 0.001,
weight decay 3e-4), then, from `arch_start_step` on, one Adam step of alpha
and beta on trainB (learning rate 3e-3, weight decay 1e-3 as an L2 term, the
PyTorch Adam `weight_decay` the paper's numbers come from).

Under `workdir`:
  checkpoints/     tf.train.CheckpointManager (model, both optimizers, step);
                   a killed run resumes from the latest one;
  architecture.json  the decoded architecture (`nas_spec` format), rewritten
                   atomically at every log step;
  history.json     alpha / beta / losses at every log step (for the figures),
                   written atomically with each checkpoint;
  search_config.json  the arguments of the run;
  train/           TensorBoard scalars: weight_loss, arch_loss,
                   learning_rate, arch_miou (mIoU of the architecture
                   steps' predictions on trainB since the last log step),
                   alpha_entropy, beta_entropy (mean entropy of the softmax
                   rows, in nats);
  trellis.png, cell.png, alpha.png  the figures (`figures.py`).

Deviations, with reasons:
* Batch norm decay 0.9 in the supernet (`bn_momentum`), not the found
  network's 0.9997: a search of a few hundred steps would otherwise evaluate
  with moving statistics still at their initial values.
* On resume the input pipelines restart, reseeded with the restored step
  (the data position is not checkpointed, so the resumed run sees fresh
  random crops rather than replaying the killed run's exact batches).
"""

import json
import os
import secrets
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deeplab_dpc import common, metrics, nas_spec, summaries
from deeplab_dpc.data import registry
from deeplab_dpc.data.pipeline import build_dataset
from deeplab_dpc.search.auto_deeplab.supernet import AutoDeepLabSupernet
from deeplab_dpc.training import losses

ARCHITECTURE_FILE = "architecture.json"
HISTORY_FILE = "history.json"
CONFIG_FILE = "search_config.json"


class _Half:
    """An input context selecting half `index` of the records (tf.distribute style)."""

    def __init__(self, index):
        self.num_input_pipelines = 2
        self.input_pipeline_id = index


def _write_json_atomic(obj, path):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp"
    )
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _entropy(probabilities, mask=None):
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    rows = terms.sum(axis=-1)
    if mask is not None:
        rows = rows[mask]
    return float(rows.mean())


def _reachable_mask(model):
    """[L, levels] booleans: nodes of layer l - 1 that have outgoing edges."""
    mask = np.zeros((model.num_layers, model.num_levels), bool)
    for layer in range(1, model.num_layers + 1):
        for source, _ in model.edges[layer]:
            mask[layer - 1, source] = True
    return mask


def search_config(**kwargs):
    """The run's arguments as a JSON-ready dict (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def run_search(
    workdir,
    *,
    dataset=registry.DEFAULT_DATASET,
    dataset_dir=None,
    split="train",
    num_layers=3,
    num_blocks=5,
    filter_multiplier=4,
    num_levels=4,
    ops=nas_spec.SEARCH_OPS,
    stem_filters=(16, 16, 32),
    crop_size=(65, 65),
    batch_size=2,
    num_steps=120,
    arch_start_step=40,
    weight_learning_rate=0.025,
    weight_learning_rate_end=0.001,
    momentum=0.9,
    weight_decay=3e-4,
    arch_learning_rate=3e-3,
    arch_weight_decay=1e-3,
    bn_momentum=0.9,
    recompute=False,
    seed=0,
    log_every=10,
    checkpoint_every=20,
    make_figures=True,
    graph_optimizer=False,
):
    """Runs (or resumes) a search; returns the decoded architecture.

    The defaults are the small synthetic search (a few minutes on 2 CPU
    cores): L = 3 layers, F = 4, a (16, 16, 32) stem, 65 x 65 crops, 120
    steps with the architecture updated from step 40 (the paper: L = 12,
    F = 8, the (64, 64, 128) stem, 321 x 321 crops, 40 epochs from epoch 20).
    """
    config = search_config(**{k: v for k, v in locals().items() if k != "workdir"})
    os.makedirs(workdir, exist_ok=True)
    info = registry.get_dataset_info(dataset)
    model = AutoDeepLabSupernet(
        info.num_classes,
        num_layers=num_layers,
        num_blocks=num_blocks,
        filter_multiplier=filter_multiplier,
        num_levels=num_levels,
        ops=ops,
        stem_filters=stem_filters,
        recompute=recompute,
        bn_momentum=bn_momentum,
    )

    # Built eagerly from the channel counts: variables created inside a
    # tf.function trace each get an initialisation graph (most of the
    # trace time), and a build by symbolic call is one more trace.
    model.build((batch_size, crop_size[0], crop_size[1], 3))
    schedule = keras.optimizers.schedules.CosineDecay(
        weight_learning_rate,
        num_steps,
        alpha=weight_learning_rate_end / weight_learning_rate,
    )
    weight_opt = keras.optimizers.SGD(learning_rate=schedule, momentum=momentum)
    arch_opt = keras.optimizers.Adam(learning_rate=arch_learning_rate)
    weight_opt.build(model.network_variables())
    arch_opt.build(model.architecture_variables())
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(
        model=model, weight_optimizer=weight_opt, arch_optimizer=arch_opt, step=step
    )
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(workdir, "checkpoints"), max_to_keep=2
    )
    history = []
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        history_path = os.path.join(workdir, HISTORY_FILE)
        if os.path.exists(history_path):
            with open(history_path, encoding="utf-8") as f:
                history = [h for h in json.load(f) if h["step"] <= int(step.numpy())]
        logging.info("resumed from %s at step %d", manager.latest_checkpoint, int(step))
    _write_json_atomic(config, os.path.join(workdir, CONFIG_FILE))
    start = int(step.numpy())

    def data(half):
        ds = build_dataset(
            dataset_dir, split, info, is_training=True, batch_size=batch_size,
            crop_size=crop_size, seed=seed * 1000 + 2 * start + half, shard=_Half(half),
        )  # fmt: skip
        return iter(ds)

    train_a, train_b = data(0), data(1)
    kernels = losses.decayed_kernels(model) + model.stacked_kernels()
    network_vars = model.network_variables()
    arch_vars = model.architecture_variables()
    step_fn = _make_step(
        model, info, kernels, network_vars, arch_vars, weight_opt, arch_opt,
        weight_decay, arch_weight_decay,
    )  # fmt: skip
    weight_update, arch_update = tf.constant(False), tf.constant(True)

    confusion = metrics.StreamingConfusionMatrix(info.num_classes, info.ignore_label)

    def run_step(batch, is_arch):
        loss, predictions = step_fn(batch[common.IMAGE], batch[common.LABEL], is_arch)
        if is_arch is arch_update:
            confusion.update(batch[common.LABEL].numpy()[..., 0], predictions.numpy())
        return float(loss)

    writer = tf.summary.create_file_writer(os.path.join(workdir, "train"))
    progress = summaries.Progress(start, num_steps, batch_size)
    mask = _reachable_mask(model)
    arch_path = os.path.join(workdir, ARCHITECTURE_FILE)
    arch_loss = float("nan")
    t0 = time.time()
    # Grappler (TF's graph optimizer) off while the search runs, unless
    # asked: on the supernet's graph it costs more than it saves (it doubled
    # the first call; steps within 5%; g3doc/autodeeplab.md). The option is
    # process-wide, so the previous value comes back afterwards.
    previous = tf.config.optimizer.get_experimental_options().get(
        "disable_meta_optimizer", False
    )
    if not graph_optimizer:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        for current in range(start + 1, num_steps + 1):
            loss = run_step(next(train_a), weight_update)
            if current == start + 1:
                logging.info(
                    "first step (tracing the step function) done after %.1f s",
                    time.time() - t0,
                )
            if current > arch_start_step:
                arch_loss = run_step(next(train_b), arch_update)
            step.assign(current)
            if current % log_every == 0 or current == num_steps:
                progress.update(current, loss, float(schedule(current)), log_every)
                # mIoU of the architecture steps' own predictions over the
                # interval (none before arch_start_step)
                miou = confusion.result()["miou"] if confusion.matrix.any() else np.nan
                confusion.matrix[...] = 0
                entry = _history_entry(model, current, loss, arch_loss, miou, mask)
                history.append(entry)
                with writer.as_default(step=current):
                    for name in (
                        "weight_loss",
                        "arch_loss",
                        "arch_miou",
                        "alpha_entropy",
                        "beta_entropy",
                    ):
                        if not np.isnan(entry[name]):
                            summaries.write_scalar(name, entry[name], current)
                    summaries.write_scalar(
                        "learning_rate", float(schedule(current)), current
                    )
                nas_spec.save_architecture(model.decoded_architecture(), arch_path)
            if current % checkpoint_every == 0 or current == num_steps:
                # History first: a kill in between leaves entries past the
                # checkpoint, which the resume drops.
                _write_json_atomic(history, os.path.join(workdir, HISTORY_FILE))
                manager.save(checkpoint_number=current)
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": previous}
        )
    writer.flush()
    architecture = model.decoded_architecture()
    nas_spec.save_architecture(architecture, arch_path)
    logging.info(
        "search done: %d steps in %.1f s; architecture:\n%s",
        num_steps - start, time.time() - t0, nas_spec.describe_architecture(architecture),
    )  # fmt: skip
    if make_figures:
        from deeplab_dpc.search.auto_deeplab import figures

        figures.write_figures(workdir, model, history, architecture)
    return architecture


def _make_step(
    model, info, kernels, network_vars, arch_vars, weight_opt, arch_opt,
    weight_decay, arch_weight_decay,
):  # fmt: skip
    """One traced search step; `is_arch` (a bool tensor) selects the update.

    False: cross-entropy + weight decay, SGD on the network weights; True:
    cross-entropy + the L2 term on alpha and beta, Adam on them (first
    order). One trace serves both, so the supernet's forward and backward
    graph is built once, not once per update (most of a small search's
    time, issue 13); the price is that each step computes the gradients of
    both variable sets (the architecture step's weight gradients and the
    weight step's alpha/beta gradients are thrown away).
    """

    def weight_update(grads):
        weight_opt.apply_gradients(zip(grads[: len(network_vars)], network_vars))
        return tf.constant(0)

    def arch_update(grads):
        arch_opt.apply_gradients(zip(grads[len(network_vars) :], arch_vars))
        return tf.constant(1)

    @tf.function(reduce_retracing=True)
    def step(images, labels, is_arch):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = losses.softmax_cross_entropy(
                logits, labels, info.num_classes, info.ignore_label
            )
            decay = losses.weight_decay_loss(kernels, weight_decay)
            l2 = arch_weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in arch_vars])
            total = loss + tf.where(is_arch, l2, decay)
        grads = tape.gradient(total, network_vars + arch_vars)
        grads = [
            tf.zeros_like(v) if g is None else g
            for g, v in zip(grads, network_vars + arch_vars)
        ]
        tf.cond(is_arch, lambda: arch_update(grads), lambda: weight_update(grads))
        return loss, tf.argmax(logits, axis=-1, output_type=tf.int32)

    return step


def _history_entry(model, current, loss, arch_loss, miou, mask):
    alpha = model.alpha_weights().numpy()
    beta = model.beta_probabilities().numpy()
    return {
        "step": current,
        "weight_loss": loss,
        "arch_loss": arch_loss,
        "arch_miou": miou,
        "alpha_entropy": _entropy(alpha),
        "beta_entropy": _entropy(beta, mask),
        "alpha": alpha.round(6).tolist(),
        "beta": beta.round(6).tolist(),
    }
