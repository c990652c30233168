"""Checkpoints that explain themselves: weights plus the model config that made them.

A checkpoint directory holds TF2 object checkpoints (`ckpt-N.index`,
`ckpt-N.data-*`, the `checkpoint` state file written by
`tf.train.CheckpointManager`) and `model_config.json`. The model is always
saved under the attribute `model`, so a training checkpoint (which also holds
the optimizer, step and data position) and an imported one restore the same
way, and eval / vis / export / search need no model flags.

Nothing is left half written under its final name: TF writes checkpoint data
before it updates the `checkpoint` state file, and `write_model_checkpoint`
fills a temporary directory that it renames into place.
"""

import os

import numpy as np
import tensorflow as tf

from deeplab_dpc.core import artefacts, common
from deeplab_dpc.modeling import naming
from deeplab_dpc.modeling.model import (
    ModelConfigError,
    build_model,
    load_config,
    save_config,
)


class CheckpointError(ValueError):
    """A checkpoint path that cannot be used; the message says which and why."""


def _reason(error):
    """The first line of an exception's message, printable, with its class."""
    text = getattr(error, "message", None) or str(error) or ""
    lines = text.strip().splitlines()
    first = (
        "".join(c if c.isprintable() else repr(c)[1:-1] for c in lines[0])
        if lines
        else ""
    )
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def resolve_checkpoint(path):
    """Returns the checkpoint prefix for a directory (latest) or a prefix."""
    if path and not artefacts.is_checkpoint_prefix(path) and artefacts.isdir(path):
        try:
            prefix = tf.train.latest_checkpoint(path)
        except Exception as e:  # a damaged `checkpoint` state file
            raise CheckpointError(
                f"{path}: unreadable checkpoint state file ({_reason(e)})"
            ) from None
        if prefix is None:
            raise CheckpointError(f"{path}: no checkpoint in this directory")
        return prefix
    if artefacts.is_checkpoint_prefix(path):
        return path
    raise CheckpointError(
        f"{path}: no such checkpoint (expected a directory or a ckpt-N prefix)"
    )


def config_path_for(path):
    return os.path.join(artefacts.checkpoint_directory(path), artefacts.MODEL_CONFIG)


def read_checkpoint_config(path):
    """The model config stored beside a checkpoint directory or prefix."""
    config_path = config_path_for(path)
    if not artefacts.exists(config_path):
        raise CheckpointError(
            f"{path}: no {artefacts.MODEL_CONFIG} beside the checkpoint"
        )
    try:
        return load_config(config_path)
    except Exception as e:  # model.load_config lets some bad values through
        raise CheckpointError(
            f"{config_path}: not a usable model config ({_reason(e)})"
        ) from None


def restore_model(path, model=None, config=None):
    """Builds (unless given) and restores a model; returns (model, config, prefix)."""
    prefix = resolve_checkpoint(path)
    if config is None:
        config = read_checkpoint_config(path)
    if model is None:
        model = build_model(config)
    try:
        status = tf.train.Checkpoint(model=model).restore(prefix)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:  # TF raises ValueError on shapes
        raise CheckpointError(
            f"{prefix}: does not match the model ({_reason(e)})"
        ) from None
    except Exception as e:  # damaged or missing files: OpError, IndexError, ...
        raise CheckpointError(
            f"{prefix}: cannot be read, damaged or incomplete ({_reason(e)})"
        ) from None
    return model, config, prefix


def write_model_checkpoint(model, config, directory):
    """Writes `model` and its config into `directory` atomically; returns the prefix."""
    directory = artefacts.absolute(directory)
    tmp = artefacts.make_staging_dir(
        os.path.dirname(directory), f".tmp_{os.path.basename(directory)}_"
    )
    try:
        manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model), tmp, max_to_keep=1
        )
        manager.save(checkpoint_number=0)
        save_config(config, artefacts.model_config_path(tmp))
        artefacts.install_dir(tmp, directory, last=("checkpoint",))  # relative paths
    finally:
        if artefacts.exists(tmp):
            artefacts.remove_tree(tmp)
    return os.path.join(directory, "ckpt-0")


def initialize_from_checkpoint(
    model, path, initialize_last_layer=True, backbone_only=False
):
    """Copies weights unit by unit from the checkpoint at `path` into `model`.

    DeepLab's `--tf_initial_checkpoint` semantics: the source may have another
    head or another number of classes. Units are matched by path; a unit whose
    shapes differ (e.g. logits with another class count) stays freshly
    initialised. `initialize_last_layer=False` skips `logits`;
    `backbone_only=True` copies the backbone alone. Returns a dict with the
    lists `loaded`, `fresh` (target units not loaded) and `unused` (source
    units not used) and `mismatched` (path -> reason).
    """
    source, _, _ = restore_model(path)
    source_units = {u.path: u for u in naming.iter_units(source)}
    report = {"loaded": [], "fresh": [], "unused": [], "mismatched": {}}
    used = set()
    for unit in naming.iter_units(model):
        module = naming.top_level(unit.path)
        skip = (backbone_only and module != common.BACKBONE) or (
            not initialize_last_layer and module == common.LOGITS
        )
        src = source_units.get(unit.path)
        if skip or src is None:
            report["fresh"].append(unit.path)
            continue
        reason = _copy_unit(src, unit)
        if reason:
            report["mismatched"][unit.path] = reason
            report["fresh"].append(unit.path)
        else:
            report["loaded"].append(unit.path)
            used.add(unit.path)
    report["unused"] = [p for p in source_units if p not in used]
    return report


def _copy_unit(src, dst):
    pairs = [(src.conv, dst.conv)]
    if (src.bn is None) != (dst.bn is None):
        return "batch norm present in only one of source and target"
    if src.bn is not None:
        pairs.append((src.bn, dst.bn))
    for s_layer, d_layer in pairs:
        s_weights, d_weights = s_layer.get_weights(), d_layer.get_weights()
        if [w.shape for w in s_weights] != [w.shape for w in d_weights]:
            shapes = (
                [tuple(w.shape) for w in s_weights],
                [tuple(w.shape) for w in d_weights],
            )
            return f"shapes differ: source {shapes[0]} vs target {shapes[1]}"
    for s_layer, d_layer in pairs:
        d_layer.set_weights([np.asarray(w) for w in s_layer.get_weights()])
    return None


__all__ = [
    "CheckpointError",
    "ModelConfigError",
    "initialize_from_checkpoint",
    "read_checkpoint_config",
    "resolve_checkpoint",
    "restore_model",
    "write_model_checkpoint",
]
