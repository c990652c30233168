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

from deeplab_dpc.core import artefacts, option_table
from deeplab_dpc.core.option_table import Option

LEARNING_POLICIES = ("poly", "step", "cosine")
STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")
MIXED_PRECISION = (None, "bf16", "fp16")


class TrainOptionsError(ValueError):
    """Training options that contradict each other or cannot work."""


MAX_BATCH_SIZE = 65536
MAX_STEPS = 2**62  # the step counter is an int64


def _check_crop(crop_size):
    return option_table.check_crop("train_crop_size", crop_size, TrainOptionsError)


def _check_scales(min_scale, max_scale):
    if min_scale <= 0 or max_scale < min_scale:
        raise TrainOptionsError(
            f"min_scale_factor/max_scale_factor: need 0 < min <= max, "
            f"got {min_scale} and {max_scale}"
        )


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
    option_table.check_values(
        TRAIN_OPTIONS,
        {"learning_policy": learning_policy,
         "training_number_of_steps": int(training_number_of_steps),
         "learning_rate_decay_step": int(learning_rate_decay_step)},
        prefix="", error=TrainOptionsError,
    )  # fmt: skip


def _check_values(o):
    """The ranges and choices of the table, then what no single row can say."""
    numbers = {
        option.name: _number(option, o[option.name])
        for option in TRAIN_OPTIONS
        if not option.shared
    }
    numbers["mixed_precision"] = o["mixed_precision"] or None
    option_table.check_values(TRAIN_OPTIONS, numbers, "", TrainOptionsError)
    _check_precision(o["mixed_precision"] or None)
    if o["tpu"] and o["distribution_strategy"] != "tpu":
        raise TrainOptionsError(
            f"tpu: --tpu={o['tpu']} needs --distribution_strategy=tpu "
            f"(got {o['distribution_strategy']})"
        )


def _number(option, value):
    """A number option's value as its type (a bad literal: the option's error)."""
    if value is None or option.kind not in ("integer", "float"):
        return value
    try:
        return int(value) if option.kind == "integer" else float(value)
    except (TypeError, ValueError):
        raise TrainOptionsError(
            f"{option.name}: must be a number, got {value!r}"
        ) from None


# The training options, once (`option_table.Option` rows): train.py defines one
# flag per row (rows marked `shared`: flags of `command_line`'s dataset group,
# shared with eval and vis) and passes them all to `train_options`, whose
# defaults, ranges and choices are the table's. Defaults are DeepLab's.
_STEPS = {"low": 1, "high": MAX_STEPS}
TRAIN_OPTIONS = (
    Option("train_logdir", "string", "runs/train", "Checkpoints and summaries.",
           required=True),
    Option("dataset", "string", "synthetic", "Dataset name (registry).", shared=True),
    Option("dataset_dir", "string", None, "Directory of the TFRecord shards.",
           shared=True),
    Option("dataset_source", "enum", "tfrecord", "Where samples come from.",
           choices=("tfrecord", "tfds"), shared=True),
    Option("tfds_data_dir", "string", None, "TFDS data directory.", shared=True),
    Option("tfds_manual_dir", "string", None, "TFDS manual download directory.",
           shared=True),
    Option("train_split", "string", "train", "Split to train on."),
    Option("train_crop_size", "ints", (513, 513), "Crop height,width."),
    Option("train_batch_size", "integer", 8, "Global batch size (all replicas).",
           low=1, high=MAX_BATCH_SIZE),
    Option("training_number_of_steps", "integer", 30000, "Steps to train.", **_STEPS),
    Option("learning_policy", "enum", "poly", "LR policy.", choices=LEARNING_POLICIES),
    Option("base_learning_rate", "float", 1e-4, "Base learning rate.", low=0.0),
    Option("learning_power", "float", 0.9, "Power of the poly policy.", low=0.0),
    Option("end_learning_rate", "float", 0.0, "Final rate of poly and cosine.", low=0.0),
    Option("learning_rate_decay_factor", "float", 0.1, "Step policy factor.", low=0.0),
    Option("learning_rate_decay_step", "integer", 2000, "Step policy period.", **_STEPS),
    Option("slow_start_step", "integer", 0, "Steps at the slow-start rate.",
           low=0, high=MAX_STEPS),
    Option("slow_start_learning_rate", "float", 1e-4, "Slow-start rate.", low=0.0),
    Option("momentum", "float", 0.9, "SGD momentum.", low=0.0, high=1.0),
    Option("weight_decay", "float", 4e-5, "L2 weight decay of conv kernels.", low=0.0),
    Option("fine_tune_batch_norm", "boolean", True, "Train batch norm (else frozen)."),
    Option("freeze_backbone_batch_norm", "boolean", False,
           "Backbone batch norm frozen, head's as --fine_tune_batch_norm (folded-BN imports)."),
    Option("last_layer_gradient_multiplier", "float", 1.0,
           "Gradient multiplier of the last layers.", low=0.0),
    Option("min_scale_factor", "float", 0.5, "Minimum random scale.", low=0.0),
    Option("max_scale_factor", "float", 2.0, "Maximum random scale.", low=0.0),
    Option("scale_factor_step_size", "float", 0.25, "Random scale step (0: any).",
           low=0.0),
    Option("tf_initial_checkpoint", "string", None, "Checkpoint to start from."),
    Option("initialize_last_layer", "boolean", True, "Also load the last layers."),
    Option("last_layers_contain_logits_only", "boolean", False,
           "Last layers = logits only."),
    Option("label_weights", "floats", None, "Per-class loss weights.", low=0.0),
    Option("save_interval_secs", "float", 1200, "Seconds between checkpoints.", low=0.0),
    Option("save_interval_steps", "integer", 0,
           "Also a checkpoint every N steps (0: off); with --max_checkpoints_to_keep, "
           "the checkpoints a curve of val mIoU against steps is evaluated on.",
           low=0, high=MAX_STEPS),
    Option("save_summaries_secs", "float", 600, "Seconds between summaries.", low=0.0),
    Option("log_steps", "integer", 10, "Steps between progress lines.", low=1),
    Option("steps_per_execution", "integer", 1,
           "Train steps per compiled call (one host round trip); same losses as 1.",
           **_STEPS),
    Option("sync_steps", "integer", 10,
           "multi_worker: steps between the workers' save/stop agreements.", **_STEPS),
    Option("max_checkpoints_to_keep", "integer", 5, "Checkpoints kept.", low=1),
    Option("seed", "integer", 0,
           "Seed of the input pipeline and of the weights not restored (exact resume needs one).",
           low=0, high=2**32 - 1),
    Option("skip_bad_records", "boolean", False, "Skip unreadable records."),
    Option("deterministic_input", "boolean", False,
           "Training input in a fixed order (runs and resumes bit-exact); off: parallel "
           "reads and maps hand over whichever element is ready first (faster)."),
    Option("distribution_strategy", "enum", "one_device", "tf.distribute strategy.",
           choices=STRATEGIES),
    Option("tpu", "string", None, "TPU name or grpc address (strategy tpu)."),
    Option("mixed_precision", "enum", None, "Mixed precision.",
           choices=MIXED_PRECISION[1:]),
    Option("jit_compile", "boolean", False, "Compile the train step with XLA."),
)  # fmt: skip
DEFAULTS = option_table.defaults(TRAIN_OPTIONS)


def train_options(train_logdir, **options):
    """Validates DeepLab's training options and returns them as a dict.

    `options`: any names of `TRAIN_OPTIONS` (the others take its defaults).
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"train_options: unknown options {', '.join(unknown)}")
    o = {**DEFAULTS, **options, "train_logdir": train_logdir}
    _check_values(o)
    _check_scales(o["min_scale_factor"], o["max_scale_factor"])
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
