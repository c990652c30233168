"""Training options: one validated, JSON-ready dict (written as train_config.json).

Mirrors `model.model_config`: `train_options(...)` takes DeepLab's training
flags as explicit arguments, checks them and returns a plain dict, which the
trainer saves as `train_config.json` beside the checkpoints. Eval and vis read
it back (`artefacts.read_train_config`) to find the dataset a checkpoint was
trained on.

Defaults are DeepLab's `train.py` defaults. Errors are `TrainOptionsError`
(a ValueError) with one line naming the option. This module imports no
TensorFlow at load time, so that a bad command line fails in a second.
"""

import json

from absl import logging

from deeplab_dpc.core import artefacts, common, errors

LEARNING_POLICIES = ("poly", "step", "cosine")
STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")
MIN_CROP_SIZE = common.MIN_CROP_SIZE
MIXED_PRECISION = (None, "bf16", "fp16")


class TrainOptionsError(ValueError):
    """Training options that contradict each other or cannot work."""


MAX_CROP_SIDE = common.MAX_CROP_SIDE
MAX_BATCH_SIZE = 65536
MAX_STEPS = 2**62  # the step counter is an int64


def _check_range(name, value, low, high=None):
    errors.check_range(name, value, low, high, error=TrainOptionsError)


def _check_crop(crop_size):
    crop = [int(v) for v in crop_size]
    if len(crop) != 2:
        raise TrainOptionsError(f"train_crop_size: needs 2 values (h,w), got {crop}")
    if max(crop) > MAX_CROP_SIDE:
        raise TrainOptionsError(
            f"train_crop_size: {crop[0]}x{crop[1]} is too large; each side must "
            f"be at most {MAX_CROP_SIDE}"
        )
    if min(crop) < MIN_CROP_SIZE:
        raise TrainOptionsError(
            f"train_crop_size: {crop[0]}x{crop[1]} is too small; each side must "
            f"be at least {MIN_CROP_SIZE} (the backbone downsamples 32x)"
        )
    return crop


def _check_scales(min_scale, max_scale, step):
    _check_range("min_scale_factor", float(min_scale), 0.0)
    _check_range("max_scale_factor", float(max_scale), 0.0)
    if min_scale <= 0 or max_scale < min_scale:
        raise TrainOptionsError(
            f"min_scale_factor/max_scale_factor: need 0 < min <= max, "
            f"got {min_scale} and {max_scale}"
        )
    _check_range("scale_factor_step_size", step, 0.0)


def _check_precision(mixed_precision):
    if mixed_precision not in MIXED_PRECISION:
        raise TrainOptionsError(
            f"mixed_precision: must be empty, bf16 or fp16, got {mixed_precision!r}"
        )
    if mixed_precision != "fp16":
        return
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise TrainOptionsError(
            "mixed_precision=fp16 needs a GPU (none found); use bf16 or leave it empty"
        )


def check_schedule(learning_policy, training_number_of_steps, learning_rate_decay_step):
    """The learning-rate policy arguments that `schedules.DeepLabSchedule` needs."""
    if learning_policy not in LEARNING_POLICIES:
        raise TrainOptionsError(
            f"learning_policy: unknown {learning_policy!r}; "
            f"known: {', '.join(LEARNING_POLICIES)}"
        )
    _check_range("training_number_of_steps", int(training_number_of_steps), 1, MAX_STEPS)
    _check_range("learning_rate_decay_step", int(learning_rate_decay_step), 1, MAX_STEPS)


def _check_values(
    train_logdir, train_batch_size, training_number_of_steps, base_learning_rate,
    momentum, weight_decay, log_steps, max_checkpoints_to_keep,
    distribution_strategy, tpu, mixed_precision,
):  # fmt: skip
    """Range and consistency checks of train_options' scalar arguments."""
    if not train_logdir:
        raise TrainOptionsError("train_logdir: a directory is required")
    _check_range("train_batch_size", int(train_batch_size), 1, MAX_BATCH_SIZE)
    _check_range("training_number_of_steps", int(training_number_of_steps), 1, MAX_STEPS)
    _check_range("base_learning_rate", float(base_learning_rate), 0.0)
    _check_range("momentum", float(momentum), 0.0, 1.0)
    _check_range("weight_decay", float(weight_decay), 0.0)
    _check_range("log_steps", int(log_steps), 1)
    _check_range("max_checkpoints_to_keep", int(max_checkpoints_to_keep), 1)
    _check_precision(mixed_precision or None)
    if distribution_strategy not in STRATEGIES:
        raise TrainOptionsError(
            f"distribution_strategy: unknown {distribution_strategy!r}; "
            f"known: {', '.join(STRATEGIES)}"
        )
    if tpu and distribution_strategy != "tpu":
        raise TrainOptionsError(
            f"tpu: --tpu={tpu} needs --distribution_strategy=tpu "
            f"(got {distribution_strategy})"
        )


def _check_more(o):
    """The numbers `_check_values` does not cover: finite, in range."""
    for name in ("learning_power", "end_learning_rate", "learning_rate_decay_factor",
                 "slow_start_learning_rate", "last_layer_gradient_multiplier",
                 "save_interval_secs", "save_summaries_secs"):  # fmt: skip
        _check_range(name, float(o[name]), 0.0)
    _check_range("slow_start_step", int(o["slow_start_step"]), 0, MAX_STEPS)
    _check_range("save_interval_steps", int(o["save_interval_steps"]), 0, MAX_STEPS)
    _check_range("steps_per_execution", int(o["steps_per_execution"]), 1, MAX_STEPS)
    _check_range("sync_steps", int(o["sync_steps"]), 1, MAX_STEPS)
    if o["seed"] is not None:
        _check_range("seed", int(o["seed"]), 0, 2**32 - 1)
    for i, w in enumerate(o["label_weights"] or ()):
        _check_range(f"label_weights[{i}]", float(w), 0.0)


# The training options, once: (name, kind, default, help). train.py defines
# one flag per row (kind: the flag type; "model": a flag of
# `flags.define_model_flags`, shared with eval and vis) and passes them all to
# `train_options`, whose defaults are the table's. Defaults are DeepLab's.
TRAIN_OPTIONS = (
    ("train_logdir", "string", "runs/train", "Checkpoints and summaries."),
    ("dataset", "model", "synthetic", "Dataset name (registry)."),
    ("dataset_dir", "model", None, "Directory of the TFRecord shards."),
    ("dataset_source", "model", "tfrecord", "Where samples come from."),
    ("tfds_data_dir", "model", None, "TFDS data directory."),
    ("tfds_manual_dir", "model", None, "TFDS manual download directory."),
    ("train_split", "string", "train", "Split to train on."),
    ("train_crop_size", "multi_int", (513, 513), "Crop height,width."),
    ("train_batch_size", "integer", 8, "Global batch size (all replicas)."),
    ("training_number_of_steps", "integer", 30000, "Steps to train."),
    ("learning_policy", ("enum", LEARNING_POLICIES), "poly", "LR policy."),
    ("base_learning_rate", "float", 1e-4, "Base learning rate."),
    ("learning_power", "float", 0.9, "Power of the poly policy."),
    ("end_learning_rate", "float", 0.0, "Final rate of poly and cosine."),
    ("learning_rate_decay_factor", "float", 0.1, "Step policy factor."),
    ("learning_rate_decay_step", "integer", 2000, "Step policy period."),
    ("slow_start_step", "integer", 0, "Steps at the slow-start rate."),
    ("slow_start_learning_rate", "float", 1e-4, "Slow-start rate."),
    ("momentum", "float", 0.9, "SGD momentum."),
    ("weight_decay", "float", 4e-5, "L2 weight decay of conv kernels."),
    ("fine_tune_batch_norm", "boolean", True, "Train batch norm (else frozen)."),
    ("freeze_backbone_batch_norm", "boolean", False,
     "Backbone batch norm frozen, head's as --fine_tune_batch_norm (folded-BN imports)."),
    ("last_layer_gradient_multiplier", "float", 1.0,
     "Gradient multiplier of the last layers."),
    ("min_scale_factor", "float", 0.5, "Minimum random scale."),
    ("max_scale_factor", "float", 2.0, "Maximum random scale."),
    ("scale_factor_step_size", "float", 0.25, "Random scale step (0: any)."),
    ("tf_initial_checkpoint", "string", None, "Checkpoint to start from."),
    ("initialize_last_layer", "boolean", True, "Also load the last layers."),
    ("last_layers_contain_logits_only", "boolean", False, "Last layers = logits only."),
    ("label_weights", "multi_float", None, "Per-class loss weights."),
    ("save_interval_secs", "float", 1200, "Seconds between checkpoints."),
    ("save_interval_steps", "integer", 0,
     "Also a checkpoint every N steps (0: off); with --max_checkpoints_to_keep, "
     "the checkpoints a curve of val mIoU against steps is evaluated on."),
    ("save_summaries_secs", "float", 600, "Seconds between summaries."),
    ("log_steps", "integer", 10, "Steps between progress lines."),
    ("steps_per_execution", "integer", 1,
     "Train steps per compiled call (one host round trip); same losses as 1."),
    ("sync_steps", "integer", 10,
     "multi_worker: steps between the workers' save/stop agreements."),
    ("max_checkpoints_to_keep", "integer", 5, "Checkpoints kept."),
    ("seed", "integer", 0,
     "Seed of the input pipeline and of the weights not restored (exact resume needs one)."),
    ("skip_bad_records", "boolean", False, "Skip unreadable records."),
    ("deterministic_input", "boolean", False,
     "Training input in a fixed order (runs and resumes bit-exact); off: parallel "
     "reads and maps hand over whichever element is ready first (faster)."),
    ("distribution_strategy", ("enum", STRATEGIES), "one_device", "tf.distribute strategy."),
    ("tpu", "string", None, "TPU name or grpc address (strategy tpu)."),
    ("mixed_precision", ("enum", MIXED_PRECISION[1:]), None, "Mixed precision."),
    ("jit_compile", "boolean", False, "Compile the train step with XLA."),
)  # fmt: skip
DEFAULTS = {name: default for name, _, default, _ in TRAIN_OPTIONS}


def train_options(train_logdir, **options):
    """Validates DeepLab's training options and returns them as a dict.

    `options`: any names of `TRAIN_OPTIONS` (the others take its defaults).
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"train_options: unknown options {', '.join(unknown)}")
    o = {**DEFAULTS, **options}
    _check_values(
        train_logdir, o["train_batch_size"], o["training_number_of_steps"],
        o["base_learning_rate"], o["momentum"], o["weight_decay"], o["log_steps"],
        o["max_checkpoints_to_keep"], o["distribution_strategy"], o["tpu"], o["mixed_precision"],
    )  # fmt: skip
    _check_scales(
        o["min_scale_factor"], o["max_scale_factor"], o["scale_factor_step_size"]
    )
    _check_more(o)
    schedule = {
        "learning_policy": o["learning_policy"],
        "base_learning_rate": float(o["base_learning_rate"]),
        "training_number_of_steps": int(o["training_number_of_steps"]),
        "learning_power": float(o["learning_power"]),
        "end_learning_rate": float(o["end_learning_rate"]),
        "learning_rate_decay_factor": float(o["learning_rate_decay_factor"]),
        "learning_rate_decay_step": int(o["learning_rate_decay_step"]),
        "slow_start_step": int(o["slow_start_step"]),
        "slow_start_learning_rate": float(o["slow_start_learning_rate"]),
    }
    check_schedule(
        o["learning_policy"],
        o["training_number_of_steps"],
        o["learning_rate_decay_step"],
    )
    return {
        "train_logdir": artefacts.absolute(train_logdir),
        "dataset": o["dataset"],
        "dataset_dir": artefacts.absolute(o["dataset_dir"] or None),
        "dataset_source": o["dataset_source"],
        "tfds_data_dir": o["tfds_data_dir"],
        "tfds_manual_dir": o["tfds_manual_dir"],
        "train_split": o["train_split"],
        "train_crop_size": _check_crop(o["train_crop_size"]),
        "train_batch_size": int(o["train_batch_size"]),
        "training_number_of_steps": int(o["training_number_of_steps"]),
        "schedule": schedule,
        "momentum": float(o["momentum"]),
        "weight_decay": float(o["weight_decay"]),
        "fine_tune_batch_norm": bool(o["fine_tune_batch_norm"]),
        "freeze_backbone_batch_norm": bool(o["freeze_backbone_batch_norm"]),
        "last_layer_gradient_multiplier": float(o["last_layer_gradient_multiplier"]),
        "min_scale_factor": float(o["min_scale_factor"]),
        "max_scale_factor": float(o["max_scale_factor"]),
        "scale_factor_step_size": float(o["scale_factor_step_size"]),
        "tf_initial_checkpoint": o["tf_initial_checkpoint"] or None,
        "initialize_last_layer": bool(o["initialize_last_layer"]),
        "last_layers_contain_logits_only": bool(o["last_layers_contain_logits_only"]),
        "label_weights": None
        if o["label_weights"] is None
        else [float(w) for w in o["label_weights"]],
        "save_interval_secs": float(o["save_interval_secs"]),
        "save_interval_steps": int(o["save_interval_steps"]),
        "save_summaries_secs": float(o["save_summaries_secs"]),
        "log_steps": int(o["log_steps"]),
        "steps_per_execution": int(o["steps_per_execution"]),
        "sync_steps": int(o["sync_steps"]),
        "max_checkpoints_to_keep": int(o["max_checkpoints_to_keep"]),
        "seed": None if o["seed"] is None else int(o["seed"]),
        "skip_bad_records": bool(o["skip_bad_records"]),
        "deterministic_input": bool(o["deterministic_input"]),
        "distribution_strategy": o["distribution_strategy"],
        "tpu": o["tpu"] or None,
        "mixed_precision": o["mixed_precision"] or None,
        "jit_compile": bool(o["jit_compile"]),
    }


def check_options_for(model_cfg, options, info):
    """Checks that options, model and dataset agree (class counts, label weights)."""
    if model_cfg["num_classes"] != info.num_classes:
        raise TrainOptionsError(
            f"model has {model_cfg['num_classes']} classes but dataset "
            f"{info.name} has {info.num_classes}"
        )
    weights = options["label_weights"]
    if weights is not None and len(weights) != info.num_classes:
        raise TrainOptionsError(
            f"label_weights: {len(weights)} weights given, dataset {info.name} "
            f"has {info.num_classes} classes"
        )


def _as_json(obj):
    return json.loads(json.dumps(obj))


def check_resume_options(train_logdir, model_cfg, options):
    """Refuses to resume a logdir of another model; warns about changed options."""
    import tensorflow as tf

    from deeplab_dpc.modeling.checkpoints import CheckpointError
    from deeplab_dpc.modeling.model import load_config

    if not tf.train.latest_checkpoint(train_logdir):
        return

    stored = _as_json(load_config(artefacts.model_config_path(train_logdir)))
    current = _as_json(model_cfg)
    changed = sorted(k for k in current if stored.get(k) != current.get(k))
    if changed:
        raise CheckpointError(
            f"{train_logdir} holds checkpoints of another model ({', '.join(changed)} "
            "differ); use the same model flags to resume or a new --train_logdir"
        )
    previous = artefacts.read_train_config(train_logdir) or {}
    options = _as_json(options)
    for key in sorted(options):
        if key in previous and previous[key] != options[key]:
            logging.warning(
                "Resuming with %s=%r (was %r)", key, options[key], previous[key]
            )
