"""Training options: one validated, JSON-ready dict (written as train_config.json).

Mirrors `model.model_config`: `train_options(...)` takes DeepLab's training
flags as explicit arguments, checks them and returns a plain dict, which the
trainer saves as `train_config.json` beside the checkpoints. Eval and vis read
it back (`load_train_config`) to find the dataset a checkpoint was trained on.

Defaults are DeepLab's `train.py` defaults. Errors are `TrainOptionsError`
(a ValueError) with one line naming the option. This module imports no
TensorFlow at load time, so that a bad command line fails in a second.
"""

import json
import os

from absl import logging

from deeplab_dpc import common

TRAIN_CONFIG_FILENAME = "train_config.json"
LEARNING_POLICIES = ("poly", "step", "cosine")
STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")
MIN_CROP_SIZE = 33  # 32x downsampling in the backbone needs at least 1 + 32 pixels
MIXED_PRECISION = (None, "bf16", "fp16")


class TrainOptionsError(ValueError):
    """Training options that contradict each other or cannot work."""


def _check_range(name, value, low, high=None):
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise TrainOptionsError(f"{name}: must be {bound}, got {value}")


def _check_crop(crop_size):
    crop = [int(v) for v in crop_size]
    if len(crop) != 2:
        raise TrainOptionsError(f"train_crop_size: needs 2 values (h,w), got {crop}")
    if min(crop) < MIN_CROP_SIZE:
        raise TrainOptionsError(
            f"train_crop_size: {crop[0]}x{crop[1]} is too small; each side must "
            f"be at least {MIN_CROP_SIZE} (the backbone downsamples 32x)"
        )
    return crop


def _check_scales(min_scale, max_scale, step):
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
    _check_range("training_number_of_steps", int(training_number_of_steps), 1)
    if learning_policy == "step":
        _check_range("learning_rate_decay_step", int(learning_rate_decay_step), 1)


def _check_values(
    train_logdir, train_batch_size, training_number_of_steps, base_learning_rate,
    momentum, weight_decay, log_steps, max_checkpoints_to_keep,
    distribution_strategy, tpu, mixed_precision,
):  # fmt: skip
    """Range and consistency checks of train_options' scalar arguments."""
    if not train_logdir:
        raise TrainOptionsError("train_logdir: a directory is required")
    _check_range("train_batch_size", int(train_batch_size), 1)
    _check_range("training_number_of_steps", int(training_number_of_steps), 1)
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


def train_options(
    train_logdir,
    dataset_dir=None,
    train_split="train",
    train_crop_size=(513, 513),
    train_batch_size=8,
    training_number_of_steps=30000,
    learning_policy="poly",
    base_learning_rate=1e-4,
    learning_power=0.9,
    end_learning_rate=0.0,
    learning_rate_decay_factor=0.1,
    learning_rate_decay_step=2000,
    slow_start_step=0,
    slow_start_learning_rate=1e-4,
    momentum=0.9,
    weight_decay=4e-5,
    fine_tune_batch_norm=True,
    freeze_backbone_batch_norm=False,
    last_layer_gradient_multiplier=1.0,
    min_scale_factor=0.5,
    max_scale_factor=2.0,
    scale_factor_step_size=0.25,
    tf_initial_checkpoint=None,
    initialize_last_layer=True,
    last_layers_contain_logits_only=False,
    label_weights=None,
    save_interval_secs=1200,
    save_summaries_secs=600,
    log_steps=10,
    max_checkpoints_to_keep=5,
    seed=0,
    skip_bad_records=False,
    dataset="synthetic",
    dataset_source="tfrecord",
    tfds_data_dir=None,
    tfds_manual_dir=None,
    distribution_strategy="one_device",
    tpu=None,
    mixed_precision=None,
    jit_compile=False,
):
    """Validates DeepLab's training options and returns them as a dict."""
    _check_values(
        train_logdir, train_batch_size, training_number_of_steps,
        base_learning_rate, momentum, weight_decay, log_steps,
        max_checkpoints_to_keep, distribution_strategy, tpu, mixed_precision,
    )  # fmt: skip
    _check_scales(min_scale_factor, max_scale_factor, scale_factor_step_size)
    schedule = {
        "learning_policy": learning_policy,
        "base_learning_rate": float(base_learning_rate),
        "training_number_of_steps": int(training_number_of_steps),
        "learning_power": float(learning_power),
        "end_learning_rate": float(end_learning_rate),
        "learning_rate_decay_factor": float(learning_rate_decay_factor),
        "learning_rate_decay_step": int(learning_rate_decay_step),
        "slow_start_step": int(slow_start_step),
        "slow_start_learning_rate": float(slow_start_learning_rate),
    }
    check_schedule(learning_policy, training_number_of_steps, learning_rate_decay_step)
    return {
        "train_logdir": os.path.abspath(train_logdir),
        "dataset": dataset,
        "dataset_dir": os.path.abspath(dataset_dir) if dataset_dir else None,
        "dataset_source": dataset_source,
        "tfds_data_dir": tfds_data_dir,
        "tfds_manual_dir": tfds_manual_dir,
        "train_split": train_split,
        "train_crop_size": _check_crop(train_crop_size),
        "train_batch_size": int(train_batch_size),
        "training_number_of_steps": int(training_number_of_steps),
        "schedule": schedule,
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "fine_tune_batch_norm": bool(fine_tune_batch_norm),
        "freeze_backbone_batch_norm": bool(freeze_backbone_batch_norm),
        "last_layer_gradient_multiplier": float(last_layer_gradient_multiplier),
        "min_scale_factor": float(min_scale_factor),
        "max_scale_factor": float(max_scale_factor),
        "scale_factor_step_size": float(scale_factor_step_size),
        "tf_initial_checkpoint": tf_initial_checkpoint or None,
        "initialize_last_layer": bool(initialize_last_layer),
        "last_layers_contain_logits_only": bool(last_layers_contain_logits_only),
        "label_weights": None
        if label_weights is None
        else [float(w) for w in label_weights],
        "save_interval_secs": float(save_interval_secs),
        "save_summaries_secs": float(save_summaries_secs),
        "log_steps": int(log_steps),
        "max_checkpoints_to_keep": int(max_checkpoints_to_keep),
        "seed": None if seed is None else int(seed),
        "skip_bad_records": bool(skip_bad_records),
        "distribution_strategy": distribution_strategy,
        "tpu": tpu or None,
        "mixed_precision": mixed_precision or None,
        "jit_compile": bool(jit_compile),
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


def load_train_config(directory):
    """The train_config.json of a train_logdir (or a checkpoint prefix), or None."""
    if directory and not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    path = os.path.join(directory or ".", TRAIN_CONFIG_FILENAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _as_json(obj):
    return json.loads(json.dumps(obj))


def check_resume_options(train_logdir, model_cfg, options):
    """Refuses to resume a logdir of another model; warns about changed options."""
    import tensorflow as tf

    from deeplab_dpc.checkpoints import CheckpointError
    from deeplab_dpc.model import load_config

    if not tf.train.latest_checkpoint(train_logdir):
        return

    stored = _as_json(
        load_config(os.path.join(train_logdir, common.MODEL_CONFIG_FILENAME))
    )
    current = _as_json(model_cfg)
    changed = sorted(k for k in current if stored.get(k) != current.get(k))
    if changed:
        raise CheckpointError(
            f"{train_logdir} holds checkpoints of another model ({', '.join(changed)} "
            "differ); use the same model flags to resume or a new --train_logdir"
        )
    previous = load_train_config(train_logdir) or {}
    options = _as_json(options)
    for key in sorted(options):
        if key in previous and previous[key] != options[key]:
            logging.warning(
                "Resuming with %s=%r (was %r)", key, options[key], previous[key]
            )
