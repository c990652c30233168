"""The Auto-DeepLab bi-level search (Sec. 4.2, 5.1): `AutoDeepLabSearcher`.

`AutoDeepLabSearcher(workdir, options).run()` (options from
`options.search_options`; `run_search(workdir, **kwargs)` does both) splits
the training split into two disjoint halves (trainA: record/shard half 0
for the network weights, trainB: half 1 for alpha and beta) and alternates,
first order as DARTS: one SGD step of the weights on trainA (momentum 0.9,
cosine learning rate 0.025 -> 0.001 from `training.schedules`, weight decay
3e-4), then, after `arch_start_step` (the warm-up), one Adam step of alpha
and beta on the mean gradient of `arch_batches` trainB batches (learning
rate `arch_learning_rate`, constant as the paper or cosine to zero; weight
decay 1e-3 as an L2 term, the PyTorch Adam `weight_decay` the paper's
numbers come from). Paper settings and the small-budget ones: `options`.

Under `workdir` (names in `artefacts`):
  checkpoints/     tf.train.CheckpointManager (model, both optimizers, the
                   gradient accumulators, step); a killed run resumes from
                   the latest one, refused when an option that defines the
                   search differs from search_config.json
                   (`options.check_resume`);
  architecture.json  the decoded architecture (`auto_deeplab_spec` format) of alpha
                   and beta averaged over the last `average_logs` log steps,
                   rewritten atomically at every log step;
  history.json     per log step: losses, alpha / beta, their entropies, the
                   decoded cell and path, for how many logs they have been
                   unchanged, how many parameter-free operators the cell
                   holds (the collapse measure); written atomically with
                   each checkpoint;
  search_config.json  the resolved options;
  train/           TensorBoard scalars: weight_loss, arch_loss,
                   learning_rate, arch_learning_rate, arch_miou (mIoU of the
                   architecture steps' predictions on trainB since the last
                   log step), alpha_entropy, beta_entropy (mean entropy of
                   the softmax rows, in nats);
  trellis.png, cell.png, alpha.png  the figures (`figures.py`).

Stops: after `num_steps`; earlier when the decoded architecture has been
unchanged for `stop_after_stable_logs` log steps, or when the cell holds
`max_parameter_free_ops` parameter-free operators (DARTS+ early stopping,
Liang et al. 2019, against the collapse onto skip / pooling); on SIGINT /
SIGTERM after the step in flight, with a checkpoint at that step and the
trainer's one line (`interrupts`); on a non-finite loss, or a non-finite
variable behind finite losses (`NonFiniteLossError`, checked at every log
and checkpoint step, before anything is saved).

Deviations, with reasons:
* Batch norm decay 0.9 in the supernet (`bn_momentum`), not the found
  network's 0.9997: a search of a few hundred steps would otherwise evaluate
  with moving statistics still at their initial values.
* On resume the input pipelines restart, reseeded with the restored step
  (the data position is not checkpointed, so the resumed run sees fresh
  random crops rather than replaying the killed run's exact batches).
* Losses and the trainB confusion matrix accumulate on the device and are
  read at log steps only (one host read per log, not two per step); so a
  non-finite loss is noticed at the next log or checkpoint step.
* TF's graph optimizer (Grappler) is off on CPU by default (on the
  supernet's graph it doubled the first call; steps within 5%;
  g3doc/auto_deeplab.md) and on where a GPU or TPU runs the search
  (`graph_optimizer`: auto, on, off).
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deeplab_dpc.core import artefacts, common, interrupts
from deeplab_dpc.data import registry
from deeplab_dpc.data.pipeline import build_dataset
from deeplab_dpc.formats import auto_deeplab_spec as nas_spec
from deeplab_dpc.layers.base import dtype_policy
from deeplab_dpc.reporting import metrics, summaries
from deeplab_dpc.search.auto_deeplab.options import (
    MIXED_PRECISION,
    check_resume,
    search_options,
)
from deeplab_dpc.search.auto_deeplab.supernet import AutoDeepLabSupernet
from deeplab_dpc.training import losses, schedules
from deeplab_dpc.training.trainer import (  # the trainer's stop and its check
    NonFiniteLossError,
    all_finite,
)

PARAMETER_FREE_OPS = (
    nas_spec.SKIP,
    nas_spec.AVG_POOL_3X3,
    nas_spec.MAX_POOL_3X3,
    nas_spec.ZERO,
)


class _Half:
    """An input context selecting half `index` of the records (tf.distribute style)."""

    def __init__(self, index):
        self.num_input_pipelines = 2
        self.input_pipeline_id = index


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


def decode_averaged(history, ops, num_levels):
    """(cell, path) decoded from alpha and beta averaged over `history`'s entries.

    The entries' softmax weights are averaged; decoding their logarithm is
    decoding the averages (both decoders are softmax-argmax based).
    """
    alpha = np.mean([np.asarray(h["alpha"], np.float64) for h in history], axis=0)
    beta = np.mean([np.asarray(h["beta"], np.float64) for h in history], axis=0)
    cell = nas_spec.decode_cell(np.log(np.maximum(alpha, 1e-30)), ops)
    full = np.full((beta.shape[0], nas_spec.NUM_LEVELS, 3), -1e9)
    full[:, :num_levels] = np.where(beta > 0, np.log(np.maximum(beta, 1e-30)), -1e9)
    full[:, num_levels - 1, 2] = -1e9  # no edge beyond the last level
    return cell, nas_spec.decode_network(full)


def parameter_free_count(cell):
    """How many branches of a decoded cell are parameter-free (skip, pooling)."""
    return sum(b[nas_spec.OP] in PARAMETER_FREE_OPS for block in cell for b in block)


class AutoDeepLabSearcher:
    """One search in `workdir` (see the module docstring); `run()` runs or resumes it.

    `options` come from `options.search_options`; `info` (a `DatasetInfo`)
    defaults to the registered dataset `options["dataset"]`.
    """

    def __init__(self, workdir, options, info=None):
        self.workdir = workdir
        self.opts = dict(options)
        self.info = info or registry.get_dataset_info(self.opts["dataset"])
        self.policy = MIXED_PRECISION[self.opts["mixed_precision"]]
        with self._precision():  # layers take the policy at construction
            self._build()

    def _precision(self):
        """The options' Keras dtype policy for the block, the previous one after it."""
        return dtype_policy(self.policy)

    def _build(self):
        o = self.opts
        self.model = AutoDeepLabSupernet(
            self.info.num_classes,
            num_layers=o["num_layers"],
            num_blocks=o["num_blocks"],
            filter_multiplier=o["filter_multiplier"],
            num_levels=o["num_levels"],
            ops=tuple(o["ops"]),
            stem_filters=tuple(o["stem_filters"]),
            recompute=o["recompute"],
            bn_momentum=o["bn_momentum"],
        )
        # Built eagerly from the channel counts: variables created inside a
        # tf.function trace each get an initialisation graph (most of the
        # trace time), and a build by symbolic call is one more trace.
        self.model.build((o["batch_size"], *o["crop_size"], 3))
        self.schedule = schedules.DeepLabSchedule(
            "cosine",
            base_learning_rate=o["weight_learning_rate"],
            training_number_of_steps=o["num_steps"],
            end_learning_rate=o["weight_learning_rate_end"],
        )
        arch_steps = o["num_steps"] - o["arch_start_step"]
        self.arch_schedule = schedules.DeepLabSchedule(
            "cosine" if o["arch_learning_rate_schedule"] == "cosine" else "poly",
            base_learning_rate=o["arch_learning_rate"],
            training_number_of_steps=arch_steps,
            learning_power=0.0,  # "constant": poly with power 0
            end_learning_rate=0.0,
        )
        weight_opt = keras.optimizers.SGD(
            learning_rate=self.schedule, momentum=o["momentum"]
        )
        arch_opt = keras.optimizers.Adam(learning_rate=self.arch_schedule)
        if o["mixed_precision"] == "fp16":
            weight_opt = keras.optimizers.LossScaleOptimizer(weight_opt)
            arch_opt = keras.optimizers.LossScaleOptimizer(arch_opt)
        self.weight_opt, self.arch_opt = weight_opt, arch_opt
        self.network_vars = self.model.network_variables()
        self.arch_vars = self.model.architecture_variables()
        weight_opt.build(self.network_vars)
        arch_opt.build(self.arch_vars)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.accumulated = [
            tf.Variable(tf.zeros_like(v), trainable=False, name=f"{v.name}_grad_sum")
            for v in self.arch_vars
        ]
        self.accumulated_batches = tf.Variable(0, dtype=tf.int32, trainable=False)
        # Log-step statistics, on the device: [weight loss sum, weight steps,
        # arch loss sum, arch batches] and trainB's confusion matrix.
        self.sums = tf.Variable(tf.zeros([4], tf.float64), trainable=False)
        n = self.info.num_classes
        self.confusion = tf.Variable(tf.zeros([n, n], tf.int64), trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, weight_optimizer=weight_opt, arch_optimizer=arch_opt,
            step=self.step, arch_gradient_sums=self.accumulated,
            arch_gradient_batches=self.accumulated_batches,
        )  # fmt: skip
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(self.workdir, "checkpoints"), max_to_keep=2
        )
        self.history = []
        self.mask = _reachable_mask(self.model)
        self._step_fn = None

    # --- Paths ------------------------------------------------------------
    def path(self, name):
        return os.path.join(self.workdir, name)

    # --- State ------------------------------------------------------------
    def restore_or_initialize(self):
        """Restores the latest checkpoint and the history up to it; returns the step."""
        artefacts.makedirs(self.workdir)
        if self.manager.latest_checkpoint:
            config_path = self.path(artefacts.SEARCH_CONFIG)
            if artefacts.exists(config_path):  # the same search, or a clear refusal
                check_resume(artefacts.read_json(config_path), self.opts, self.workdir)
            self.checkpoint.restore(self.manager.latest_checkpoint).expect_partial()
            step = int(self.step.numpy())
            history_path = self.path(artefacts.SEARCH_HISTORY)
            if artefacts.exists(history_path):
                self.history = [
                    h for h in artefacts.read_json(history_path) if h["step"] <= step
                ]
            logging.info(
                "resumed from %s at step %d", self.manager.latest_checkpoint, step
            )
        artefacts.write_json(self.opts, self.path(artefacts.SEARCH_CONFIG))
        return int(self.step.numpy())

    def save(self):
        """history.json, then the checkpoint (a kill between leaves entries the resume drops)."""
        artefacts.write_json(self.history, self.path(artefacts.SEARCH_HISTORY))
        return self.manager.save(checkpoint_number=int(self.step.numpy()))

    # --- Data -------------------------------------------------------------
    def _data(self, half, start):
        o = self.opts
        ds = build_dataset(
            o["dataset_dir"], o["split"], self.info, is_training=True,
            batch_size=o["batch_size"], crop_size=tuple(o["crop_size"]),
            seed=o["seed"] * 1000 + 2 * start + half, shard=_Half(half),
        )  # fmt: skip
        return iter(ds)

    # --- The step -----------------------------------------------------------
    def make_step(self):
        """The traced search step `step(images, labels, is_arch, apply_arch)`.

        is_arch False: cross-entropy + weight decay, SGD on the network
        weights. True: cross-entropy + the L2 term on alpha and beta; the
        gradient is added to the accumulators, and with `apply_arch` their
        mean over the accumulated batches goes to Adam (first order). One
        trace serves both, so the supernet's forward and backward graph is
        built once (issue 13); the price is that each step computes the
        gradients of both variable sets. With `jit_compile` the forward and
        backward pass is compiled by XLA (the updates stay outside, as the
        trainer's).
        """
        model, info, o = self.model, self.info, self.opts
        network_vars, arch_vars = self.network_vars, self.arch_vars
        kernels = losses.decayed_kernels(model) + model.stacked_kernels()
        weight_opt, arch_opt = self.weight_opt, self.arch_opt
        fp16 = o["mixed_precision"] == "fp16"
        num_classes = info.num_classes

        def gradients(images, labels, is_arch):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(images, training=True), tf.float32)
                loss = losses.softmax_cross_entropy(
                    logits, labels, num_classes, info.ignore_label
                )
                decay = losses.weight_decay_loss(kernels, o["weight_decay"])
                l2 = o["arch_weight_decay"] * tf.add_n(
                    [tf.nn.l2_loss(v) for v in arch_vars]
                )
                total = loss + tf.where(is_arch, l2, tf.cast(decay, tf.float32))
                if fp16:
                    total = tf.where(
                        is_arch,
                        arch_opt.scale_loss(total),
                        weight_opt.scale_loss(total),
                    )
            grads = tape.gradient(total, network_vars + arch_vars)
            grads = [
                tf.zeros_like(v) if g is None else g
                for g, v in zip(grads, network_vars + arch_vars)
            ]
            return loss, grads, tf.argmax(logits, axis=-1, output_type=tf.int32)

        if o["jit_compile"]:
            gradients = tf.function(gradients, jit_compile=True)
        accumulated, count = self.accumulated, self.accumulated_batches

        def weight_update(grads):
            weight_opt.apply_gradients(zip(grads[: len(network_vars)], network_vars))
            return tf.constant(0)

        def arch_update(grads, apply_arch):
            for acc, g in zip(accumulated, grads[len(network_vars) :]):
                acc.assign_add(tf.cast(g, acc.dtype))
            count.assign_add(1)

            def apply():
                n = tf.cast(count, tf.float32)
                arch_opt.apply_gradients(
                    [(acc / n, v) for acc, v in zip(accumulated, arch_vars)]
                )
                for acc in accumulated:
                    acc.assign(tf.zeros_like(acc))
                count.assign(0)
                return tf.constant(1)

            return tf.cond(apply_arch, apply, lambda: tf.constant(0))

        @tf.function(reduce_retracing=True)
        def step(images, labels, is_arch, apply_arch):
            loss, grads, predictions = gradients(images, labels, is_arch)
            tf.cond(
                is_arch,
                lambda: arch_update(grads, apply_arch),
                lambda: weight_update(grads),
            )
            arch = tf.cast(is_arch, tf.float64)
            loss64 = tf.cast(loss, tf.float64)
            self.sums.assign_add(
                tf.stack([(1 - arch) * loss64, 1 - arch, arch * loss64, arch])
            )

            def count_pixels():
                y = tf.reshape(labels, [-1])
                p = tf.reshape(predictions, [-1])
                keep = tf.not_equal(y, info.ignore_label)
                m = tf.math.confusion_matrix(
                    tf.boolean_mask(y, keep), tf.boolean_mask(p, keep),
                    num_classes=num_classes, dtype=tf.int64,
                )  # fmt: skip
                self.confusion.assign_add(m)
                return tf.constant(0)

            tf.cond(is_arch, count_pixels, lambda: tf.constant(0))
            return loss

        return step

    # --- Logging ------------------------------------------------------------
    def _read_sums(self, reset):
        """(weight loss, arch loss) means since the last log (NaN when none)."""
        w, nw, a, na = self.sums.numpy()
        if reset:
            self.sums.assign(tf.zeros_like(self.sums))
        return (w / nw if nw else float("nan")), (a / na if na else float("nan"))

    @tf.function
    def _variables_finite(self):
        """Whether every floating-point supernet variable (alpha and beta
        included) is finite; run with the host's loss check, not per step."""
        return all_finite(self.model.variables)

    def _check_finite(self, losses, current):
        """Raises NonFiniteLossError if a loss of `losses` is not finite, or,
        with finite losses, a variable (a batch-norm variance that overflowed,
        which training-mode batch norm never reads): never saved after it."""
        bad = next((v for v in losses if not np.isfinite(v)), None)
        if bad is not None:
            what = f"loss is {bad} at step {current} or before"
        elif not bool(self._variables_finite()):
            loss = losses[0]
            what = f"model variables are not finite (loss {loss:.6g}) at step {current}"
        else:
            return
        last = self.manager.latest_checkpoint or "none yet"
        raise NonFiniteLossError(
            f"{what} (learning rate "
            f"{float(self.schedule(current)):.6g}, architecture learning rate "
            f"{self.opts['arch_learning_rate']:.6g}): lower them, or check the "
            f"labels (class ids must be below {self.info.num_classes} or the "
            f"ignore label {self.info.ignore_label}); last good checkpoint: {last}"
        )

    def _history_entry(self, current, loss, arch_loss):
        o = self.opts
        confusion = self.confusion.numpy()
        self.confusion.assign(tf.zeros_like(self.confusion))
        miou = float(metrics.mean_iou(confusion)) if confusion.any() else float("nan")
        alpha = self.model.alpha_weights().numpy()
        beta = self.model.beta_probabilities().numpy()
        entry = {
            "step": current,
            "weight_loss": loss,
            "arch_loss": arch_loss,
            "arch_miou": miou,
            "alpha_entropy": _entropy(alpha),
            "beta_entropy": _entropy(beta, self.mask),
            "alpha": alpha.round(6).tolist(),
            "beta": beta.round(6).tolist(),
        }
        window = (self.history + [entry])[-o["average_logs"] :]
        cell, path = decode_averaged(window, o["ops"], o["num_levels"])
        previous = self.history[-1] if self.history else None
        # counted in the architecture phase only (the warm-up leaves alpha
        # and beta at their initialisation, which would count as stable)
        same = (
            current > o["arch_start_step"]
            and previous is not None
            and previous.get("cell") == cell
            and previous.get("network") == path
        )
        entry.update(
            cell=cell,
            network=path,
            unchanged_logs=(previous.get("unchanged_logs", 0) + 1) if same else 0,
            parameter_free_ops=parameter_free_count(cell),
        )
        return entry

    def _log(self, writer, current, entry):
        with writer.as_default(step=current):
            for name in (
                "weight_loss", "arch_loss", "arch_miou", "alpha_entropy",
                "beta_entropy",
            ):  # fmt: skip
                if not np.isnan(entry[name]):
                    summaries.write_scalar(name, entry[name], current)
            summaries.write_scalar(
                "learning_rate", float(self.schedule(current)), current
            )
            arch_step = max(0, current - self.opts["arch_start_step"])
            summaries.write_scalar(
                "arch_learning_rate", float(self.arch_schedule(arch_step)), current
            )

    def _stop_reason(self, entry, current):
        o = self.opts
        if current <= o["arch_start_step"]:
            return None
        if 0 < o["stop_after_stable_logs"] <= entry["unchanged_logs"]:
            return (
                f"decoded cell and path unchanged for {entry['unchanged_logs']} "
                f"log steps (stop_after_stable_logs)"
            )
        if 0 < o["max_parameter_free_ops"] <= entry["parameter_free_ops"]:
            return (
                f"the decoded cell holds {entry['parameter_free_ops']} parameter-free "
                "operators (max_parameter_free_ops; DARTS+ early stopping)"
            )
        return None

    def architecture(self):
        """The decoded architecture: of the averaged log steps, or of alpha/beta now."""
        if self.history and "cell" in self.history[-1]:
            last = self.history[-1]
            return {nas_spec.CELL: last["cell"], nas_spec.NETWORK: last["network"]}
        return self.model.decoded_architecture()

    # --- The loop -----------------------------------------------------------
    def run(self):
        """Runs (or resumes) the search; returns the decoded architecture.

        A SIGINT / SIGTERM (`interrupts`) stops it after the step in flight
        with a checkpoint at that step and raises `interrupts.Interrupted`.
        """
        previous = tf.config.optimizer.get_experimental_options().get(
            "disable_meta_optimizer", False
        )
        graph_optimizer = self.opts["graph_optimizer"]
        if graph_optimizer == "auto":
            accelerated = tf.config.list_logical_devices(
                "GPU"
            ) or tf.config.list_logical_devices("TPU")
            graph_optimizer = "on" if accelerated else "off"
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": graph_optimizer == "off"}
        )
        try:
            with self._precision(), interrupts.handled(), interrupts.deferred():
                return self._run()
        finally:
            tf.config.optimizer.set_experimental_options(
                {"disable_meta_optimizer": previous}
            )

    def _run(self):
        o = self.opts
        start = self.restore_or_initialize()
        num_steps = o["num_steps"]
        if self._step_fn is None:
            self._step_fn = self.make_step()
        train_a, train_b = self._data(0, start), self._data(1, start)
        writer = tf.summary.create_file_writer(self.path("train"))
        progress = summaries.Progress(start, num_steps, o["batch_size"])
        arch_path = self.path(artefacts.SEARCH_ARCHITECTURE)
        false, true = tf.constant(False), tf.constant(True)
        last_saved = start
        stop = None
        t0 = time.time()
        current = start
        for current in range(start + 1, num_steps + 1):
            batch = next(train_a)
            self._step_fn(batch[common.IMAGE], batch[common.LABEL], false, false)
            if current == start + 1:
                logging.info(
                    "first step (tracing the step function) done after %.1f s",
                    time.time() - t0,
                )
            if current > o["arch_start_step"]:
                for k in range(o["arch_batches"]):
                    batch = next(train_b)
                    last = tf.constant(k == o["arch_batches"] - 1)
                    self._step_fn(batch[common.IMAGE], batch[common.LABEL], true, last)
            self.step.assign(current)
            logged = current % o["log_every"] == 0 or current == num_steps
            saving = current % o["checkpoint_every"] == 0 or current == num_steps
            if logged or saving:
                # the only host read of the losses: at log and checkpoint steps
                loss, arch_loss = self._read_sums(reset=logged)
                arch_phase = current > o["arch_start_step"]
                self._check_finite(
                    (loss, arch_loss) if arch_phase else (loss,), current
                )
            if logged:
                progress.update(
                    current, loss, float(self.schedule(current)), o["log_every"]
                )
                entry = self._history_entry(current, loss, arch_loss)
                self.history.append(entry)
                self._log(writer, current, entry)
                nas_spec.save_architecture(self.architecture(), arch_path)
                stop = self._stop_reason(entry, current)
            if saving or stop:
                self.save()
                last_saved = current
            if stop:
                logging.info("search stopped at step %d: %s", current, stop)
                break
            signum = interrupts.requested()
            if signum is not None:
                if last_saved != current:
                    self.save()
                writer.flush()
                path = self.manager.latest_checkpoint
                logging.warning("Stopped at step %d: checkpoint %s", current, path)
                raise interrupts.Interrupted(
                    signum, f"checkpoint saved at step {current} ({path})"
                )
        writer.flush()
        architecture = self.architecture()
        nas_spec.save_architecture(architecture, arch_path)
        logging.info(
            "search done: %d steps in %.1f s; architecture:\n%s",
            current - start, time.time() - t0, nas_spec.describe_architecture(architecture),
        )  # fmt: skip
        if o["make_figures"]:
            from deeplab_dpc.search.auto_deeplab import figures

            figures.write_figures(
                self.workdir,
                self.model,
                self.history,
                architecture,
                o["arch_start_step"],
            )
        return architecture


def run_search(workdir, **kwargs):
    """Checks `kwargs` (`options.search_options`), runs or resumes the search.

    Returns the decoded architecture.
    """
    return AutoDeepLabSearcher(workdir, search_options(**kwargs)).run()


__all__ = [
    "AutoDeepLabSearcher",
    "NonFiniteLossError",
    "PARAMETER_FREE_OPS",
    "decode_averaged",
    "parameter_free_count",
    "run_search",
]
