"""The builder: every variant x head x output stride x decoder builds; config round trip."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.core import common
from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.modeling.model import (
    CONFIG_VERSION,
    ModelConfigError,
    build_deeplab,
    build_model,
    load_config,
    model_config,
    save_config,
)


def _logits_shape(model, size):
    fn = tf.function(model.__call__, autograph=False)
    out = fn.get_concrete_function(tf.TensorSpec([1, size, size, 3])).structured_outputs
    return tuple(out[common.SEMANTIC_LOGITS].shape)


SLOW = pytest.mark.slow
# The small DPC model of the quick tests (with MobileNetV2 and the paper's cell).
SMALL_DPC = dict(head="dpc", dpc_spec=spec_lib.TOP1, depth_multiplier=0.5)


def _check_builds(variant, head, output_stride, decoder):
    kwargs = {"dpc_spec": "specs/top1.json"} if head == "dpc" else {}
    dm = 0.5 if variant == "mobilenet_v2" else 1.0
    model = build_deeplab(
        variant,
        19,
        head=head,
        output_stride=output_stride,
        decoder_output_stride=decoder,
        depth_multiplier=dm,
        **kwargs,
    )
    assert _logits_shape(model, 97) == (1, 97, 97, 19)
    names = {layer.name for layer in model.layers}
    assert {"backbone", "head", "logits"} <= names
    assert ("decoder" in names) == (decoder is not None)


# The whole matrix (3 variants x 2 heads x output stride 8/16 x decoder or not)
# runs with `pytest -m slow`; the default run builds every MobileNetV2 case and
# the most complex Xception ones (each Xception build takes ~5 s on 2 cores).
MATRIX = [
    pytest.param(
        v,
        h,
        s,
        d,
        marks=() if v == "mobilenet_v2" or (h, s, d) == ("dpc", 8, 4) else SLOW,
    )
    for v in ("mobilenet_v2", "xception_65", "xception_71")
    for h in ("dpc", "aspp")
    for s in (8, 16)
    for d in (None, 4)
]


@pytest.mark.parametrize("variant, head, output_stride, decoder", MATRIX)
def test_every_variant_head_stride_and_decoder_builds(
    variant, head, output_stride, decoder
):
    _check_builds(variant, head, output_stride, decoder)


def test_logits_align_with_input_at_deeplab_sizes():
    model = build_deeplab(
        "mobilenet_v2", 3, head="aspp", atrous_rates=[], depth_multiplier=0.5
    )
    for size in (257, 513, 769):
        assert _logits_shape(model, size) == (1, size, size, 3)


def test_small_model_runs_and_upsamples_with_align_corners():
    config = model_config("mobilenet_v2", 4, **SMALL_DPC, upsample_logits=False)
    low = build_model(config)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 97, 97, 3)).astype("float32")
    small = low(x)[common.SEMANTIC_LOGITS].numpy()
    assert small.shape == (1, 7, 7, 4)
    config["upsample_logits"] = True
    full_model = build_model(config)
    full_model.set_weights(low.get_weights())
    full = full_model(x)[common.SEMANTIC_LOGITS].numpy()
    # align_corners=True: pixel 16 * i of the output is feature pixel i exactly.
    np.testing.assert_allclose(full[:, ::16, ::16], small, rtol=1e-5, atol=1e-5)


def test_config_round_trips_through_json(tmp_path):
    config = model_config(
        "xception_65",
        21,
        head="dpc",
        dpc_spec="specs/top1.json",
        output_stride=8,
        decoder_output_stride=4,
    )
    save_config(config, tmp_path / "model_config.json")
    again = load_config(tmp_path / "model_config.json")
    assert again == config
    assert again["dpc_spec"] == spec_lib.TOP1


def test_model_json_round_trip():
    model = build_deeplab("mobilenet_v2", 5, **SMALL_DPC, decoder_output_stride=4)
    clone = keras.models.model_from_json(model.to_json())
    assert clone.count_params() == model.count_params()
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(1).uniform(-1, 1, (1, 33, 33, 3)).astype("float32")
    np.testing.assert_allclose(
        clone(x)[common.SEMANTIC_LOGITS], model(x)[common.SEMANTIC_LOGITS], atol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model_variant="resnet_50"), "model_variant: unknown 'resnet_50'"),
        (dict(head="psp"), "head: unknown 'psp'"),
        (dict(head="dpc"), "dpc_spec: head 'dpc' needs a spec"),
        (
            dict(head="aspp", dpc_spec=spec_lib.TOP1),
            "dpc_spec: given, but head is 'aspp'",
        ),
        (dict(head="aspp", output_stride=4), "output_stride: must be 8, 16 or 32"),
        (
            dict(head="aspp", decoder_output_stride=8),
            "decoder_output_stride: must be None or 4",
        ),
        (dict(head="aspp", num_classes=0), "num_classes: must be positive"),
        (
            dict(head="aspp", nas_architecture="specs/hnasnet.json"),
            "nas_architecture: given, but model_variant is 'mobilenet_v2'",
        ),
        (
            dict(model_variant="nas_hnasnet", head="aspp", nas_architecture={}),
            "nas_architecture: ",
        ),
        (
            dict(
                model_variant="nas_hnasnet",
                head="aspp",
                nas_stem_output_num_conv_filters=0,
            ),
            "nas_stem_output_num_conv_filters: must be positive",
        ),
        (
            dict(model_variant="nas_hnasnet", head="aspp", nas_stem_filters=[8, 8]),
            r"nas_stem_filters: needs three positive integers, got \[8, 8\]",
        ),
        (
            dict(model_variant="nas_hnasnet", head="aspp", nas_stem_filters=[8, 0, 16]),
            "nas_stem_filters: needs three positive integers",
        ),
        (
            dict(head="aspp", nas_stem_filters=[8, 8, 16]),
            "nas_stem_filters: given, but model_variant is 'mobilenet_v2'",
        ),
    ],
)
def test_bad_config_names_the_field(kwargs, message):
    with pytest.raises(ModelConfigError, match=message):
        model_config(**kwargs)


def test_bad_spec_file_names_file_and_branch(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"op": "conv", "kernel": 3, "rate": [1, 5], "input": -1}]')
    with pytest.raises(spec_lib.SpecError, match=r"bad.json.*branch 0.*rate"):
        model_config(head="dpc", dpc_spec=str(path))


def test_load_config_reports_bad_json(tmp_path):
    path = tmp_path / "model_config.json"
    path.write_text("{not json")
    with pytest.raises(
        ModelConfigError, match="model_config.json: invalid JSON at line 1"
    ):
        load_config(path)


@pytest.mark.parametrize(
    "variant, kwargs",
    [
        ("mobilenet_v2", dict(head="aspp")),
        (
            "mobilenet_v2",
            dict(head="dpc", dpc_spec=spec_lib.TOP1, decoder_output_stride=4),
        ),
        ("xception_65", dict(head="aspp", atrous_rates=[])),
    ],
)
def test_checkpoint_holds_every_weight_and_restores_outputs(tmp_path, variant, kwargs):
    """Layers held in lists (ASPP branches, DPC ops, Xception convs) must be saved too."""
    dm = 0.5 if variant == "mobilenet_v2" else 1.0
    config = model_config(variant, 3, depth_multiplier=dm, **kwargs)
    model = build_model(config)
    for w in model.weights:
        w.assign(
            np.random.default_rng(len(w.path))
            .normal(0, 0.05, w.shape)
            .astype("float32")
            + (1.0 if "variance" in w.path else 0.0)
        )
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    saved = [n for n, _ in tf.train.list_variables(prefix) if n.startswith("model/")]
    assert len(saved) == len(model.weights)
    fresh = build_model(config)
    tf.train.Checkpoint(model=fresh).restore(prefix).assert_consumed()
    x = np.random.default_rng(2).uniform(-1, 1, (1, 33, 33, 3)).astype("float32")
    np.testing.assert_allclose(
        fresh(x)[common.SEMANTIC_LOGITS], model(x)[common.SEMANTIC_LOGITS], atol=1e-5
    )


def test_nas_flags_translate_into_the_recorded_config(tmp_path):
    from absl import flags

    from deeplab_dpc import command_line
    from deeplab_dpc.formats import auto_deeplab_spec as nas_spec

    def parsed(*argv):
        values = flags.FlagValues()
        flags.DEFINE_string("model_variant", "mobilenet_v2", "", flag_values=values)
        flags.DEFINE_multi_string("atrous_rates", [], "", flag_values=values)
        flags.DEFINE_integer("decoder_output_stride", None, "", flag_values=values)
        flags.DEFINE_integer(
            "nas_stem_output_num_conv_filters", 20, "", flag_values=values
        )
        flags.DEFINE_string("nas_architecture", None, "", flag_values=values)
        values(["prog", *argv])
        return values

    values = parsed(
        "--model_variant=nas_hnasnet", "--nas_stem_output_num_conv_filters=32",
        "--nas_architecture=specs/hnasnet.json", "--decoder_output_stride=4",
    )  # fmt: skip
    config = command_line.model_config_from_flags(values, 19)
    assert config["model_variant"] == "nas_hnasnet" and config["head"] == "aspp"
    assert config["nas_stem_output_num_conv_filters"] == 32
    assert config["nas_architecture"] == nas_spec.HNASNET  # the file, as data
    assert config["decoder_output_stride"] == 4
    save_config(config, tmp_path / "model_config.json")
    assert load_config(tmp_path / "model_config.json") == config
    default = command_line.model_config_from_flags(parsed(), 19)
    # Regular fields of every config (version 2): other variants hold the defaults.
    assert default["nas_architecture"] is None
    assert default["nas_stem_output_num_conv_filters"] == 20


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.mark.parametrize(
    "name, nas_filters",
    [("model_config_v1_mobilenet.json", 20), ("model_config_v1_nas.json", 4)],
)
def test_version_1_config_files_load_upgraded(name, nas_filters):
    """Files written by version 1 (NAS options only for the NAS variants) load
    as version 2 configs with every field, the same model otherwise."""
    import json

    path = os.path.join(DATA, name)
    old = json.load(open(path))
    assert old["version"] == 1
    config = load_config(path)
    assert config["version"] == CONFIG_VERSION == 2
    assert config["nas_stem_output_num_conv_filters"] == nas_filters
    assert config["nas_architecture"] is None
    assert config["nas_stem_filters"] == [64, 64, 128]  # the paper's stem
    for key, value in old.items():  # nothing else changes
        if key != "version":
            assert config[key] == value, key


def test_nas_stem_filters_build_the_stem_and_round_trip(tmp_path):
    """`nas_stem_filters` sets the three stem convs (3x3: conv0 3 -> a, conv1
    a -> b, conv2 b -> c, no biases), is recorded, and the default stays the
    paper's 64, 64, 128."""
    config = model_config(
        "nas_hnasnet", 5, head="aspp", nas_stem_output_num_conv_filters=2,
        nas_stem_filters=(4, 6, 8), atrous_rates=(),
    )  # fmt: skip
    assert config["nas_stem_filters"] == [4, 6, 8]
    save_config(config, tmp_path / "model_config.json")
    assert load_config(tmp_path / "model_config.json") == config
    backbone = build_model(config).get_layer("backbone")
    kernels = {
        w.path.split("/")[-3]: tuple(w.shape)
        for w in backbone.weights
        if w.path.endswith("kernel")
        and w.path.split("/")[-3] in ("conv0", "conv1", "conv2")
    }
    assert kernels == {
        "conv0": (3, 3, 3, 4),
        "conv1": (3, 3, 4, 6),
        "conv2": (3, 3, 6, 8),
    }
    paper = model_config("nas_hnasnet", 5, head="aspp", nas_stem_filters=[])
    assert paper["nas_stem_filters"] == [64, 64, 128]


def test_a_config_newer_than_the_code_is_refused(tmp_path):
    import json

    path = tmp_path / "model_config.json"
    path.write_text(json.dumps({**model_config("mobilenet_v2", 5, head="aspp"),
                                "version": CONFIG_VERSION + 1}))  # fmt: skip
    with pytest.raises(ModelConfigError, match="version 3 is not one this code reads"):
        load_config(str(path))
