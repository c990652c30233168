"""The training loop: DeepLab's `train.py` as a TF2 custom loop under `tf.distribute`.

`train(model_cfg, options, info)` trains the model described by a
`model.model_config` dict with the options of `train_options(...)` on the
dataset `info` (a `data.registry.DatasetInfo`). The loop is DeepLab's:
softmax cross-entropy over non-ignored pixels plus L2 weight decay
(`losses.py`), momentum SGD on the poly schedule (`schedules.py`), batch norm
fine-tuned (training mode) or frozen (inference mode, gamma/beta still
trained, as slim's `is_training=False`), optional initialisation from
`tf_initial_checkpoint` with DeepLab's last-layer exclusion rules.

Deviations from DeepLab, all deliberate:
- Resumable at every checkpoint: the checkpoint holds the model, the
  optimizer (momentum, iteration count, hence the learning rate), the step,
  the data position (global batches consumed), the dropout RNG states
  (`rng`: Keras' SeedGenerator states, which `tf.train.Checkpoint` does not
  reach through the layers) and, with one replica (`one_device`, the
  default), the `tf.data` iterator itself, so a resume costs the same at
  step 10 as at step 10^6 and continues bit-equal to an uninterrupted run on
  CPU. Several replicas (mirrored, multi_worker, TPU) read a distributed
  iterator, which TensorFlow 2.21 cannot checkpoint, and a generator source
  fails the first save and is then saved without it: there the seeded,
  deterministic pipeline skips the consumed batches on restart (one pass of
  the input pipeline over them, no model compute).
- The training input is not deterministic by default
  (`deterministic_input=False`; DeepLab's `tf.data` pipeline was not either):
  parallel shard reads, decodes and augmentations hand over whichever
  element is ready first, so a core never waits on a slow image. Each
  sample still gets one of the seeded augmentations and the data position
  (global batches consumed) stays exact, but which sample lands in which
  batch varies between runs, so two runs with one seed, or a resumed run
  and an uninterrupted one, are not bit-equal, and a resume that skips
  batches (several replicas) may see a few samples of the interrupted
  epoch twice and miss as many. `deterministic_input=True` gives back the
  bit-exact runs and resumes above (the search's pretraining and
  re-ranking use it).
- Multi-worker preemption: TensorFlow's `PreemptionCheckpointHandler`; a
  SIGTERM to any worker makes every worker save the same step and stop.
- `model_config.json` and `train_config.json` (the resolved options) are
  written beside the checkpoints, so eval, vis and export need no model flags.
- A non-finite loss stops training (`NonFiniteLossError`) with the step, the
  learning rate, and the last good checkpoint; nothing is saved after it.
  So does a model variable that is not finite although the loss was (checked
  with the loss on logging steps and before each save): a diverging run's batch-norm variance overflows float32 (or an
  update sends a weight to Inf) a step before the loss does, and the
  checkpoint of that step would be "good" by its loss alone.
  The first non-finite step is recorded in the graph and read with the loss
  on logging steps and before every save, so the run stops up to
  `log_steps` steps after it (those steps are never saved).
- Host work per step: the loss and the learning rate (computed in the
  graph) are read on logging steps only; `steps_per_execution` runs several
  steps per `tf.function` call (`make_train_loop`, as Keras'
  `steps_per_execution`: same losses, bit for bit, as one step per call);
  multi-worker runs agree on saving and stopping every `sync_steps` steps
  instead of every step (a save or a SIGINT takes effect up to that many
  steps later). Checkpoints, summaries and stops happen between calls.
- `freeze_backbone_batch_norm` (new): the backbone's batch norm stays in
  inference mode with gamma and beta fixed while the head's follows
  `fine_tune_batch_norm`; DeepLab has only the all-or-nothing switch, which
  for a folded-BN import either discards the pretrained function (training
  mode) or leaves the fresh head unnormalised (frozen).
- `seed` seeds the weight initialisation too (`keras.utils.set_random_seed`),
  not only the input pipeline.
- SIGINT and SIGTERM (`deeplab_dpc.core.interrupts`) finish the step in flight,
  save a checkpoint at that step and raise `interrupts.Interrupted`, so a
  caller (the search's pretraining and re-ranking) never goes on with a model
  that did not finish its schedule. Under MultiWorkerMirroredStrategy the
  stop is agreed with the save decision: every worker saves the same step.
- Checkpoints are written by `tf.train.CheckpointManager`, which updates its
  state file only after the data files are complete, so a kill at any point
  leaves the previous checkpoint as the latest.
"""

import os
import re
import signal
import time

import keras
import tensorflow as tf
from absl import logging

from deeplab_dpc.core import artefacts, common, errors, interrupts
from deeplab_dpc.modeling import checkpoints
from deeplab_dpc.modeling import model as model_lib
from deeplab_dpc.reporting import summaries
from deeplab_dpc.training import distribute, losses, schedules
from deeplab_dpc.training.options import (
    TrainOptionsError,
    check_options_for,
    check_resume_options,
)

PRECISION_POLICIES = {
    None: "float32",
    "bf16": "mixed_bfloat16",
    "fp16": "mixed_float16",
}


def freeze_batch_norm(layer):
    """Puts every BatchNormalization inside `layer` in inference mode, fixed.

    Keras 3 runs a BatchNormalization with `trainable=False` in inference
    mode even when called with `training=True`, and leaves its gamma and beta
    out of the trainable weights. For a backbone imported with folded batch
    norm (gamma 1, beta = bias, mean 0, var 1) this keeps the pretrained
    function while the head's batch norm still learns from batch statistics.
    Returns the number of layers frozen.
    """
    frozen = 0
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sub, keras.layers.BatchNormalization):
            sub.trainable = False
            frozen += 1
    return frozen


def gradient_multipliers(model, multiplier, logits_only):
    """One factor per trainable variable: DeepLab's `last_layer_gradient_multiplier`.

    The last layers are DeepLab's: the logits alone with `logits_only`, else
    the head (ASPP or DPC), the decoder and the logits; their gradients are
    multiplied by `multiplier`, which with momentum SGD is a learning rate
    `multiplier` times larger for them than for the backbone.
    """
    names = (
        [common.LOGITS] if logits_only else [common.HEAD, common.DECODER, common.LOGITS]
    )
    last = set()
    for layer in model.layers:
        if layer.name in names:
            last.update(id(v) for v in layer.trainable_variables)
    return [
        float(multiplier) if id(v) in last else 1.0 for v in model.trainable_variables
    ]


def seed_generator_states(model):
    """The state variables of the Keras `SeedGenerator`s in `model` (its dropouts).

    In layer order, so a list of them is one checkpoint layout per model.
    """
    states, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", ()):
            if id(generator.state) not in seen:
                seen.add(id(generator.state))
                states.append(generator.state)
    return states


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the message names the step and the likely causes."""


def all_finite(variables):
    """A scalar bool tensor: whether every floating-point variable is finite.

    Called inside a traced function (the trainer's and the Auto-DeepLab
    searcher's), where the host already reads the loss; never per step.
    """
    checks = [
        tf.reduce_all(tf.math.is_finite(v))
        for v in variables
        if v.dtype in ("float16", "bfloat16", "float32", "float64")
    ]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


class BadLabelsError(ValueError):
    """The input pipeline met a bad record (named by shard and index): one line."""


class _Preempted(Exception):
    """Raised by the preemption handler's exit function after its save."""


class Trainer:
    """One training run: strategy, model, optimizer, checkpoints, input, loop."""

    def __init__(self, model_cfg, options, info):
        self.cfg, self.opts, self.info = model_cfg, options, info
        self.strategy = distribute.make_strategy(
            options["distribution_strategy"], options["tpu"]
        )
        _, self.task_id, self.is_chief = distribute.task_info(self.strategy)
        # The multi-worker runtime replaces the SIGTERM handler (natively);
        # put ours back so that a SIGTERM stops the run (interrupts.reinstall).
        interrupts.reinstall()
        self.replicas = self.strategy.num_replicas_in_sync
        self.per_replica_batch = distribute.per_replica_batch_size(
            options["train_batch_size"], self.strategy
        )
        self.logdir = options["train_logdir"]
        if options["seed"] is not None:
            # The seed also fixes the initial weights of whatever is not
            # restored (a fresh head), so two runs with one seed are the same
            # experiment and runs with two seeds are two samples of it.
            keras.utils.set_random_seed(options["seed"])
        with self.strategy.scope():
            self.model = model_lib.build_model(model_cfg)
            if options.get("freeze_backbone_batch_norm"):
                freeze_batch_norm(self.model.get_layer(common.BACKBONE))
            self.schedule = schedules.DeepLabSchedule(**options["schedule"])
            optimizer = keras.optimizers.SGD(
                learning_rate=self.schedule, momentum=options["momentum"]
            )
            if options["mixed_precision"] == "fp16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            self.optimizer = optimizer
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, name="step", trainable=False)
            self.data_position = tf.Variable(
                0, dtype=tf.int64, name="data_position", trainable=False
            )
            # The first step whose loss was not finite (0: none) and that
            # loss, recorded in the graph so that the host reads the loss
            # only on logging steps (not checkpointed: a resume starts clean).
            self.nonfinite_step = tf.Variable(
                0, dtype=tf.int64, name="nonfinite_step", trainable=False
            )
            self.nonfinite_loss = tf.Variable(
                0.0, dtype=tf.float32, name="nonfinite_loss", trainable=False
            )
        self.kernels = losses.decayed_kernels(self.model)
        self.gradient_multipliers = gradient_multipliers(
            self.model,
            options.get("last_layer_gradient_multiplier", 1.0),
            options["last_layers_contain_logits_only"],
        )
        self.sync_bn = options["fine_tune_batch_norm"] and self.replicas > 1
        distribute.set_synchronized_batch_norm(self.model, self.sync_bn)
        if self.sync_bn and options["jit_compile"] and not self._is_tpu():
            raise TrainOptionsError(
                "--jit_compile with batch norm synchronized over "
                f"{self.replicas} replicas is not supported; drop --jit_compile "
                "or use --nofine_tune_batch_norm"
            )
        logging.info(
            "Strategy %s: %d replicas, %d images per replica, batch norm %s",
            options["distribution_strategy"], self.replicas, self.per_replica_batch,
            ("synchronized across replicas" if self.sync_bn
             else ("fine-tuned" if options["fine_tune_batch_norm"] else "frozen"))
            + (" (backbone's frozen)" if options.get("freeze_backbone_batch_norm")
               else ""),
        )  # fmt: skip
        self.checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            step=self.step,
            data_position=self.data_position,
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            self._checkpoint_dir(),
            max_to_keep=options["max_checkpoints_to_keep"],
            step_counter=self.step,
        )
        self.rng_states = seed_generator_states(self.model)
        self.preemption = self.preempted_path = None

    # --- Setup -----------------------------------------------------------------

    def _is_tpu(self):
        return isinstance(self.strategy, tf.distribute.TPUStrategy)

    def _checkpoint_dir(self):
        if self.is_chief:
            return self.logdir
        # Non-chief workers must save too (collectives); into a scratch dir.
        return os.path.join(self.logdir, f".worker_{self.task_id}_tmp")

    def write_configs(self):
        """Writes model_config.json and train_config.json (chief only)."""
        if not self.is_chief:
            return
        artefacts.makedirs(self.logdir)
        artefacts.write_json(self.cfg, artefacts.model_config_path(self.logdir))
        artefacts.write_json(self.opts, artefacts.train_config_path(self.logdir))

    def restore_or_initialize(self):
        """Resumes from the latest checkpoint in train_logdir, else initialises."""
        latest = tf.train.latest_checkpoint(self.logdir)
        if latest:
            status = self.checkpoint.restore(latest)
            status.assert_existing_objects_matched()
            logging.info(
                "Resumed from %s at step %d (learning rate %.6g, data position %d)",
                latest,
                int(self.step.numpy()),
                float(self.schedule(self.step)),
                int(self.data_position.numpy()),
            )
            self._restore_rng(latest)
            return latest
        self._restore_rng(None)
        initial = self.opts["tf_initial_checkpoint"]
        if initial:
            report = checkpoints.initialize_from_checkpoint(
                self.model,
                initial,
                initialize_last_layer=self.opts["initialize_last_layer"],
                backbone_only=not self.opts["initialize_last_layer"]
                and not self.opts["last_layers_contain_logits_only"],
            )
            logging.info(
                "Initialised from %s: %d units loaded, %d fresh, %d unused, "
                "%d mismatched",
                initial,
                len(report["loaded"]),
                len(report["fresh"]),
                len(report["unused"]),
                len(report["mismatched"]),
            )
        return None

    def _has_state(self, prefix, name):
        """Whether checkpoint `prefix` holds the object saved as `name` (a root child)."""
        if not prefix:
            return False
        return any(n.startswith(f"{name}/") for n, _ in tf.train.list_variables(prefix))

    def _restore_rng(self, latest):
        """Restores the dropout RNG states, then saves them with every checkpoint.

        Keras keeps each Dropout's random stream in a `SeedGenerator` whose
        state variable `tf.train.Checkpoint` does not reach through the
        layer, so without this a resumed run would draw the masks of step 1
        again (the loss after a resume differed from an uninterrupted run's).
        A checkpoint written before they were saved restores without them.
        """
        if latest and self.rng_states:
            if self._has_state(latest, "rng"):
                status = tf.train.Checkpoint(rng=self.rng_states).restore(latest)
                status.assert_existing_objects_matched().expect_partial()
            else:
                logging.warning(
                    "%s holds no dropout RNG state (an older checkpoint): the "
                    "resumed run draws other dropout masks than an uninterrupted "
                    "one", latest,
                )  # fmt: skip
        self.checkpoint.rng = self.rng_states

    def _plain_input(self):
        """Whether the loop reads a plain (checkpointable) `tf.data` iterator."""
        return (
            self.replicas == 1
            and not self._is_tpu()
            and not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
        )

    def make_iterator(self):
        """The input iterator, restored from the checkpoint or positioned by skipping.

        One replica (`one_device`, the default, and `mirrored` on one device)
        reads a plain `tf.data` iterator, which is saved with every
        checkpoint and restored on resume: O(1) in the data position. Several
        replicas read a distributed iterator, which TensorFlow 2.21 cannot
        checkpoint: the pipeline skips the consumed batches instead.
        """
        latest = tf.train.latest_checkpoint(self.logdir)
        if not self._plain_input():
            self.skip_batches = True
            return iter(
                self.strategy.distribute_datasets_from_function(self.dataset_fn)
            )
        self.skip_batches = not self._has_state(latest, "iterator")
        options = tf.data.Options()
        # The only external state is the py_function reading the rest of a
        # shard after a corrupt record; it is a pure function of (shard,
        # record index), so the iterator's state is complete without it.
        options.experimental_external_state_policy = (
            tf.data.experimental.ExternalStatePolicy.IGNORE
        )
        dataset = self.dataset_fn(tf.distribute.InputContext()).with_options(options)
        iterator = iter(dataset)
        if not self.skip_batches:
            tf.train.Checkpoint(iterator=iterator).restore(latest).expect_partial()
        self.checkpoint.iterator = iterator
        return iterator

    def dataset_fn(self, input_context):
        """The per-worker input pipeline, positioned after the consumed batches."""
        from deeplab_dpc.data import pipeline, registry

        opts = self.opts
        dataset = pipeline.build_dataset(
            registry.DataSource.from_config(opts),
            opts["train_split"],
            self.info,
            is_training=True,
            batch_size=input_context.get_per_replica_batch_size(
                opts["train_batch_size"]
            ),
            crop_size=opts["train_crop_size"],
            min_scale_factor=opts["min_scale_factor"],
            max_scale_factor=opts["max_scale_factor"],
            scale_factor_step_size=opts["scale_factor_step_size"],
            seed=opts["seed"],
            # Off by default (--deterministic_input): see the module docstring.
            deterministic=opts.get("deterministic_input", True),
            skip_bad_records=opts["skip_bad_records"],
            shard=input_context,
        )
        if not getattr(self, "skip_batches", True):
            return dataset  # the iterator's own state is restored
        local_replicas = (
            input_context.num_replicas_in_sync // input_context.num_input_pipelines
        )
        return dataset.skip(int(self.data_position.numpy()) * local_replicas)

    # --- The step ----------------------------------------------------------------

    def _loss(self, batch):
        logits = self.model(
            batch[common.IMAGE], training=self.opts["fine_tune_batch_norm"]
        )[common.SEMANTIC_LOGITS]
        ce = losses.softmax_cross_entropy(
            logits,
            batch[common.LABEL],
            self.cfg["num_classes"],
            self.info.ignore_label,
            self.opts["label_weights"],
            upsample_logits=self.cfg["upsample_logits"],
        )
        decay = losses.weight_decay_loss(self.kernels, self.opts["weight_decay"])
        return ce, ce + decay

    def _gradients(self, batch):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            ce, total = self._loss(batch)
            scaled = total / self.replicas
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, variables)
        grads = [
            g if m == 1.0 or g is None else g * m
            for g, m in zip(grads, self.gradient_multipliers)
        ]
        return ce / self.replicas, total / self.replicas, grads

    def _replica_step(self):
        gradients = self._gradients
        if self.opts["jit_compile"]:
            # A nested tf.function: fine unless it holds a cross-replica
            # all-reduce (synchronized BN), which __init__ refuses.
            gradients = tf.function(self._gradients, jit_compile=True)
        variables = self.model.trainable_variables

        def replica_step(batch):
            ce, total, grads = gradients(batch)
            self.optimizer.apply_gradients(zip(grads, variables))
            return ce, total

        return replica_step

    def _global_step(self, replica_step, batch):
        """One global step in the graph: (ce, total) as float32, step counters, NaN record."""
        ce, total = self.strategy.run(replica_step, args=(batch,))
        self.step.assign_add(1)
        self.data_position.assign_add(1)
        reduce = tf.distribute.ReduceOp.SUM
        ce = tf.cast(self.strategy.reduce(reduce, ce, axis=None), tf.float32)
        total = tf.cast(self.strategy.reduce(reduce, total, axis=None), tf.float32)
        first = tf.logical_and(
            tf.logical_not(tf.math.is_finite(total)), tf.equal(self.nonfinite_step, 0)
        )
        self.nonfinite_step.assign(tf.where(first, self.step, self.nonfinite_step))
        self.nonfinite_loss.assign(tf.where(first, total, self.nonfinite_loss))
        return ce, total

    @tf.function
    def _variables_finite(self):
        """Whether every floating-point model variable is finite: one traced
        function, run where the host checks the loss (logging steps, before
        each save, at the end), not in every step."""
        return all_finite(self.model.variables)

    def _learning_rate(self):
        """The learning rate of the step just taken, in the graph."""
        return tf.cast(self.schedule(self.step - 1), tf.float32)

    def make_train_step(self):
        """A `tf.function` running one global step on `batch`; returns (ce, total, lr)."""
        replica_step = self._replica_step()

        @tf.function
        def train_step(batch):
            ce, total = self._global_step(replica_step, batch)
            return ce, total, self._learning_rate()

        return train_step

    def make_train_loop(self):
        """A `tf.function` running `num_steps` global steps from `iterator` in one call.

        `steps_per_execution`: one host round trip for several steps, as
        Keras' `Model.fit(steps_per_execution=...)`. Each step is the one of
        `make_train_step` on the next batch of the same iterator, so the
        losses are those of one step per call (tests/test_train_options.py
        compares them bit for bit). `num_steps` is a tensor: one trace for
        every count. Returns the last step's (ce, total, lr).
        """
        replica_step = self._replica_step()

        @tf.function
        def train_loop(iterator, num_steps):
            ce = total = tf.constant(0.0, tf.float32)
            for _ in tf.range(num_steps):
                ce, total = self._global_step(replica_step, next(iterator))
            return ce, total, self._learning_rate()

        return train_loop

    # --- The loop ----------------------------------------------------------------

    def save(self):
        """Saves a checkpoint at the current step (every worker must call it)."""
        try:
            path = self.manager.save(checkpoint_number=self.step)
        except (tf.errors.FailedPreconditionError, tf.errors.UnimplementedError) as e:
            if not hasattr(self.checkpoint, "iterator"):
                raise
            logging.warning(  # a generator source: resumes skip batches instead
                "The input iterator cannot be saved (%s); saving without it",
                errors.one_line(e),
            )
            del self.checkpoint.iterator
            path = self.manager.save(checkpoint_number=self.step)
        if not self.is_chief:
            tf.io.gfile.rmtree(self._checkpoint_dir())
        return path

    def _log_saved(self, path, step):
        if self.is_chief:
            logging.info("Saved checkpoint %s (step %d)", path, step)

    def _check_finite(self, outputs):
        """Raises NonFiniteLossError naming the first step whose loss was not
        finite, or this step if a model variable is not (`outputs`: the last
        step's (ce, total, ...), read only then)."""
        step = int(self.nonfinite_step.numpy())
        if step:
            total = float(self.nonfinite_loss.numpy())
            what = f"loss is {total}"
        elif not bool(self._variables_finite()):
            step = int(self.step.numpy())
            total = float(outputs[1])
            what = f"model variables are not finite (loss {total:.6g})"
        else:
            return
        lr = float(self.schedule(step - 1))
        last = tf.train.latest_checkpoint(self.logdir) or "none yet"
        raise NonFiniteLossError(
            f"{what} at step {step} (learning rate {lr:.6g}): lower "
            f"--base_learning_rate, or check the labels (class ids must be below "
            f"{self.cfg['num_classes']} or the ignore label "
            f"{self.info.ignore_label}); last good checkpoint: {last}"
        )

    def _agree(self, due):
        """(save, stop): the chief's clock decides saves, a signal on any worker stops.

        With a preemption handler (multi-worker) SIGTERM is the handler's, so
        only SIGINT stops here.
        """
        signum = interrupts.requested()
        stop = signum is not None and not (
            self.preemption is not None and signum == signal.SIGTERM
        )
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return due, stop
        # ReduceOp has no MAX: sum [chief's save, stop] over every replica; any
        # non-zero count decides for all workers.
        value = tf.constant([float(due and self.is_chief), float(stop)])
        if getattr(self, "_agree_fn", None) is None:
            # Traced once: run eagerly, every step logged TF's "Using
            # CollectiveAllReduceStrategy eagerly has significant overhead".
            @tf.function
            def agree(v):
                per_replica = self.strategy.run(tf.identity, args=(v,))
                return self.strategy.reduce(
                    tf.distribute.ReduceOp.SUM, per_replica, None
                )

            self._agree_fn = agree
        save_count, stop_count = self._agree_fn(value).numpy().tolist()
        return save_count > 0, stop_count > 0

    def _make_preemption_handler(self):
        """TensorFlow's `PreemptionCheckpointHandler` for a multi-worker run, else None.

        A SIGTERM to any worker (recorded by `interrupts`, which the handler
        polls once a second instead of installing its own signal handler) is
        made known to every worker through the coordination service; all of
        them train to the step the preempted worker names, save there (our
        `save`: the chief into train_logdir) and stop with `_Preempted`.
        """
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return None
        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: interrupts.requested() == signal.SIGTERM,
            exit_fn=self._preempted,
            grace_period=0,
            save_fn=self._preemption_save,
        )
        # The handler adds its run counter to self.checkpoint; restored above
        # (deferred: the counter is restored when attached), so every worker
        # starts from the chief's count, which the handler's step agreement
        # needs.
        handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            self.strategy.cluster_resolver, self.manager, termination_config=config
        )
        logging.info("Preemption handler on: a SIGTERM to any worker saves on all")
        return handler

    def _preemption_save(self, *args, **kwargs):
        del args, kwargs
        self.preempted_path = self.save()
        self._log_saved(self.preempted_path, int(self.step.numpy()))

    def _preempted(self):
        raise _Preempted()

    def _shared_path(self, path):
        """The chief's copy of a checkpoint this worker saved (a non-chief's is deleted)."""
        if self.is_chief:
            return path
        return os.path.join(self.logdir, os.path.basename(path))

    def _stopped(self, path):
        signum = interrupts.requested() or signal.SIGTERM  # MWMS: another worker's
        step = int(self.step.numpy())
        path = self._shared_path(path)
        logging.warning("Stopped at step %d: checkpoint %s", step, path)
        return interrupts.Interrupted(
            signum, f"checkpoint saved at step {step} ({path})"
        )

    def _bad_record(self, e, step):
        """BadLabelsError for a pipeline error naming a bad record, else None."""
        found = re.search(r"bad record: ([^\]]*)", str(e))
        if not found:
            return None
        return BadLabelsError(
            f"input stopped at step {step + 1} "
            f"({found.group(1).strip()}): class ids must be below "
            f"{self.cfg['num_classes']} or the ignore label "
            f"{self.info.ignore_label}; python -m "
            f"deeplab_dpc.tools.check_records lists every bad record, "
            f"--skip_bad_records skips them"
        )

    def _multi_worker(self):
        return isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _steps_in_call(self, step, total_steps):
        """Steps of the next call: up to steps_per_execution, ending on every boundary.

        A call ends at each logging step (the loss is read there), at the last
        step, at each multiple of save_interval_steps and, multi-worker, at
        each agreement step, so that every worker agrees at the same steps.
        """
        log_steps = self.opts["log_steps"]
        n = min(
            self.opts.get("steps_per_execution", 1),
            total_steps - step,
            log_steps - step % log_steps,
        )
        if self._multi_worker():
            sync = self.opts.get("sync_steps", 1)
            n = min(n, sync - step % sync)
        every = self.opts.get("save_interval_steps", 0)
        if every > 0:  # a checkpoint lands on every multiple (a curve's steps)
            n = min(n, every - step % every)
        return max(n, 1)

    def _agree_due(self, step, total_steps):
        """Whether this step holds the save/stop agreement (every step but multi-worker)."""
        if not self._multi_worker() or step == total_steps:
            return True
        return step % self.opts.get("sync_steps", 1) == 0

    def run(self):
        """Trains to `training_number_of_steps`; returns a summary dict.

        Host work per step is what the step needs: the loss, the learning rate
        (computed in the graph) and the non-finite check are read on logging
        steps, before a save and at the end; `steps_per_execution` runs
        several steps per call (`make_train_loop`); multi-worker runs agree
        on saving and stopping every `sync_steps` steps.
        """
        total_steps = self.opts["training_number_of_steps"]
        log_steps = self.opts["log_steps"]
        iterator = self.make_iterator()
        self.preemption = self._make_preemption_handler()
        train_step = self.make_train_step()
        train_loop = None
        if self.opts.get("steps_per_execution", 1) > 1:
            train_loop = self.make_train_loop()
        writer = summaries.SummaryWriter(self.logdir, self.is_chief, self.info)
        step = start_step = int(self.step.numpy())
        progress = summaries.Progress(
            start_step, total_steps, self.opts["train_batch_size"]
        )
        last_save = last_summary = time.time()
        ce = total = float("nan")
        outputs = None
        stop = self._agree(False)[1]
        first = time.perf_counter() if start_step else None
        while step < total_steps and not stop:
            summary_due = (
                self.is_chief
                and time.time() - last_summary >= self.opts["save_summaries_secs"]
            )
            n, batch = self._steps_in_call(step, total_steps), None
            try:
                if n == 1 or train_loop is None or summary_due or first is not None:
                    # One step on a batch read here: the sample summary
                    # shows it, and a resume's first batch is timed.
                    n, batch = 1, next(iterator)
                    if first is not None:  # a resume: what positioning the input cost
                        logging.info(
                            "Input positioned at data position %d in %.2f s (%s)",
                            int(self.data_position.numpy()),
                            time.perf_counter() - first,
                            "skipped the consumed batches" if self.skip_batches
                            else "restored the iterator",
                        )  # fmt: skip
                        first = None
                    outputs = train_step(batch)
                else:
                    outputs = train_loop(iterator, tf.constant(n, tf.int64))
            except tf.errors.InvalidArgumentError as e:
                error = self._bad_record(e, step)
                if error is None:
                    raise
                raise error from None
            step += n
            if step % log_steps == 0 or step == total_steps or summary_due:
                ce, total, lr = (float(t) for t in outputs)
                self._check_finite(outputs)
                progress.update(step, total, lr, log_steps)
            else:
                progress.update(step, None, None, log_steps)
            now = time.time()
            if summary_due:
                writer.scalars(step, ce, total, lr, progress.images_per_sec())
                writer.samples(step, self.model, self.strategy, batch)
                last_summary = now
            every = self.opts.get("save_interval_steps", 0)
            at_interval = every > 0 and step % every == 0 and step < total_steps
            if at_interval or self._agree_due(step, total_steps):
                save, stop = self._agree(
                    now - last_save >= self.opts["save_interval_secs"] or at_interval
                )
                if step < total_steps and save and not stop:
                    self._check_finite(outputs)  # never save after a non-finite loss
                    self._log_saved(self.save(), step)
                    last_save = now
            if self.preemption is not None and not stop:
                try:
                    self.preemption.save_checkpoint_if_preempted()
                except _Preempted:
                    stop = True
        progress.close()
        if outputs is not None:
            ce, total = float(outputs[0]), float(outputs[1])
            self._check_finite(outputs)
        latest = tf.train.latest_checkpoint(self.logdir)
        if self.preempted_path is not None:
            path = self.preempted_path  # saved at this step by the handler
        elif latest and step == start_step:
            path = latest  # nothing trained: a complete run's checkpoint stays as is
        else:
            path = self.save()
            self._log_saved(path, step)
        if self.is_chief:
            writer.scalars(step, ce, total, None, None)
        writer.close()
        if stop:
            raise self._stopped(path)
        return {"step": step, "loss": total, "checkpoint": self._shared_path(path)}


def _check_data(options, info):
    """Fails before the model is built when a real dataset has no shards."""
    from deeplab_dpc.data import pipeline, registry

    if options["dataset_source"] != "tfrecord" or info.name == registry.DEFAULT_DATASET:
        return
    directory = options["dataset_dir"] or pipeline.default_dataset_dir(info)
    split = registry.resolve_split(info, options["train_split"])
    pipeline.find_shards(directory, split)


def train(model_cfg, options, info):
    """Trains (or resumes) and returns {"step", "loss", "checkpoint"}.

    A SIGINT or SIGTERM saves a checkpoint and raises `interrupts.Interrupted`.
    """
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(
        PRECISION_POLICIES[options["mixed_precision"]]
    )
    try:
        check_options_for(model_cfg, options, info)
        _check_data(options, info)
        check_resume_options(options["train_logdir"], model_cfg, options)
        trainer = Trainer(model_cfg, options, info)
        trainer.write_configs()
        trainer.restore_or_initialize()
        with interrupts.handled(), interrupts.deferred():
            return trainer.run()
    finally:
        keras.mixed_precision.set_global_policy(policy)
