"""Files written before the package moves of issue 29 still load and restore.

`tests/data/pre_issue29/` was written by the code as it stood before the
moves (commit 2af29f5, modules still directly in `deeplab_dpc/`): for two
models (MobileNetV2 with a DPC head; the Auto-DeepLab `nas_hnasnet` network
with ASPP and the decoder), the `model_config.json` that
`checkpoints.write_model_checkpoint` stored, the keys and shapes of the
checkpoint it wrote (`tf.train.list_variables`, the `/.ATTRIBUTES/VARIABLE_VALUE`
suffix dropped), and each unit's DeepLab variable scope (what weight import
maps); and the Keras registered names of every layer. A checkpoint restores
into a model exactly when their keys and shapes agree, so the same keys from
the same config mean the old checkpoints restore; the Keras names are what a
serialised layer config looks up.
"""

import json
import os

import pytest

from deeplab_dpc.modeling import naming
from deeplab_dpc.modeling.checkpoints import (
    read_checkpoint_config,
    write_model_checkpoint,
)
from deeplab_dpc.modeling.model import build_model, load_config

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "pre_issue29")
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def _read(*parts):
    with open(os.path.join(DATA, *parts), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("name", ["mobilenet_dpc", "hnasnet_aspp_decoder"])
def test_an_old_model_config_builds_the_old_checkpoint_layout(name, tmp_path):
    import tensorflow as tf

    config = load_config(os.path.join(DATA, name, "model_config.json"))
    model = build_model(config)
    prefix = write_model_checkpoint(model, config, str(tmp_path / "ckpt"))
    keys = {
        k.removesuffix(SUFFIX): list(shape)
        for k, shape in tf.train.list_variables(prefix)
        if k.startswith("model/")
    }
    assert keys == _read(name, "checkpoint_keys.json")
    scopes = {
        unit.path: naming.deeplab_scope(
            model, unit.path, config["model_variant"], config["head"]
        )
        for unit in naming.iter_units(model)
    }
    assert scopes == _read(name, "deeplab_scopes.json")
    # The stored config is the one the checkpoint directory now carries.
    assert read_checkpoint_config(prefix) == config


def test_the_keras_registered_names_of_every_layer_are_kept():
    import importlib

    import keras

    for module in (
        "deeplab_dpc.modeling.model",
        "deeplab_dpc.backbones.xception",
        "deeplab_dpc.backbones.mobilenet_v2",
        "deeplab_dpc.backbones.auto_deeplab_network",
        "deeplab_dpc.training.schedules",
        "deeplab_dpc.search.auto_deeplab.relaxed_cell",
        "deeplab_dpc.search.auto_deeplab.supernet",
    ):
        importlib.import_module(module)
    names = set(keras.saving.get_custom_objects())
    missing = sorted(set(_read("registered_names.json")) - names)
    assert not missing, f"registered names no longer defined: {missing}"
