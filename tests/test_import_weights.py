"""Tests for `deeplab_dpc.tools.import_weights` without any downloaded file.

The TF1 path is checked against checkpoints written here with `tf.compat.v1`
variables under the DeepLab scope names and slim's layouts (unfolded batch
norm, kernels [kh, kw, in, out], depthwise [kh, kw, in, 1]). The folded-BN
(TFLite) path is checked against a TFLite flatbuffer written here from a model
with random batch-norm statistics folded into its convs, with DeepLab tensor
names and TFLite's [out, kh, kw, in] layout. The real released TFLite file is
checked in `test_conformance.py`.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_runner import run_module

from deeplab_dpc.core import common
from deeplab_dpc.modeling import naming
from deeplab_dpc.modeling.checkpoints import restore_model
from deeplab_dpc.modeling.model import build_model, model_config
from deeplab_dpc.tools import import_weights as iw
from deeplab_dpc.tools import weight_sources
from deeplab_dpc.tools.weight_sources import BATCH_NORM_LEAVES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(
    model_variant="mobilenet_v2",
    num_classes=5,
    head="aspp",
    atrous_rates=[6],
    output_stride=16,
    depth_multiplier=0.25,
)
TRAINING_STATE = {
    "global_step": np.array(1234, np.int64),
    "MobilenetV2/Conv/weights/Momentum": None,  # filled with the kernel's shape
}


# --- Writing sources -----------------------------------------------------------


def _randomize_batch_norm(model, seed):
    """Random BN statistics and biases, so that folding and copying can be wrong."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        if v.name in ("gamma", "moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        elif v.name in ("beta", "moving_mean", "bias"):
            v.assign(rng.normal(0.0, 0.2, shape).astype(np.float32))
    return model


def _is_depthwise(conv):
    return isinstance(conv, keras.layers.DepthwiseConv2D)


def _scoped_units(model, config):
    for unit in naming.iter_units(model):
        yield (
            unit,
            naming.deeplab_scope(
                model, unit.path, config["model_variant"], config["head"]
            ),
        )


def deeplab_variables(model, config):
    """{TF1 variable name: array} as a slim DeepLab checkpoint would hold them."""
    out = {}
    for unit, scope in _scoped_units(model, config):
        leaf = "depthwise_weights" if _is_depthwise(unit.conv) else "weights"
        out[f"{scope}/{leaf}"] = unit.conv.kernel.numpy()
        if unit.conv.use_bias:
            out[f"{scope}/biases"] = unit.conv.bias.numpy()
        if unit.bn is not None:
            for leaf in BATCH_NORM_LEAVES:
                out[f"{scope}/BatchNorm/{leaf}"] = getattr(unit.bn, leaf).numpy()
    return out


def write_tf1_checkpoint(arrays, prefix):
    """Writes `arrays` as tf.compat.v1 variables with a v1 Saver; returns the prefix."""
    with tf.Graph().as_default():
        feeds = {
            name: tf.compat.v1.placeholder(tf.as_dtype(a.dtype), a.shape)
            for name, a in arrays.items()
        }
        variables = {
            name: tf.compat.v1.get_variable(name, initializer=feed)
            for name, feed in feeds.items()
        }
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as sess:
            sess.run(
                tf.compat.v1.global_variables_initializer(),
                feed_dict={feeds[name]: a for name, a in arrays.items()},
            )
            return saver.save(sess, prefix, write_meta_graph=False, write_state=False)


def _folded(unit):
    kernel = unit.conv.kernel.numpy()
    if unit.bn is None:
        return kernel, unit.conv.bias.numpy()
    bn = {leaf: getattr(unit.bn, leaf).numpy() for leaf in BATCH_NORM_LEAVES}
    scale = bn["gamma"] / np.sqrt(bn["moving_variance"] + unit.bn.epsilon)
    if _is_depthwise(unit.conv):
        kernel = kernel * scale[:, None]
    else:
        kernel = kernel * scale
    return kernel, bn["beta"] - bn["moving_mean"] * scale


def write_folded_tflite(model, config, path):
    """A TFLite flatbuffer holding `model` with BN folded, named like DeepLab's."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    ops = schema.BuiltinOperator
    fb = schema.ModelT()
    fb.version, fb.buffers, fb.operatorCodes = 3, [schema.BufferT()], []
    for code in (ops.CONV_2D, ops.DEPTHWISE_CONV_2D):
        oc = schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, code, 1
        fb.operatorCodes.append(oc)
    graph = schema.SubGraphT()
    graph.tensors, graph.operators, graph.inputs, graph.outputs = [], [], [], []

    def tensor(name, array=None):
        t = schema.TensorT()
        t.name, t.type, t.shape, t.buffer = name.encode(), 0, [1], 0
        if array is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(array.astype(np.float32).tobytes(), np.uint8)
            fb.buffers.append(buffer)
            t.shape, t.buffer = list(array.shape), len(fb.buffers) - 1
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    for unit, scope in _scoped_units(model, config):
        kernel, bias = _folded(unit)
        depthwise = _is_depthwise(unit.conv)
        leaf, bias_leaf = (
            ("depthwise_weights", "depthwise_bias")
            if depthwise
            else ("weights", "Conv2D_bias")
        )
        op = schema.OperatorT()
        op.opcodeIndex = int(depthwise)
        op.inputs = [
            tensor(f"{scope}/input"),
            tensor(f"{scope}/{leaf}", np.transpose(kernel, (3, 0, 1, 2))),
            tensor(f"{scope}/{bias_leaf}", bias),
        ]
        op.outputs = [tensor(f"{scope}/output")]
        if depthwise:
            options = schema.DepthwiseConv2DOptionsT()
            options.depthMultiplier = 1
            op.builtinOptionsType = schema.BuiltinOptions.DepthwiseConv2DOptions
        else:
            options = schema.Conv2DOptionsT()
            op.builtinOptionsType = schema.BuiltinOptions.Conv2DOptions
        options.strideH, options.strideW = unit.conv.strides
        options.dilationHFactor, options.dilationWFactor = unit.conv.dilation_rate
        op.builtinOptions = options
        graph.operators.append(op)
    fb.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(fb.Pack(builder), file_identifier=b"TFL3")
    with open(path, "wb") as f:
        f.write(builder.Output())
    return path


# --- Fixtures ------------------------------------------------------------------


def _image(size=65, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)


def _logits(model, x):
    return model(x, training=False)[common.SEMANTIC_LOGITS].numpy()


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    """(config, model with random BN, TF1 prefix, TFLite path) of the small model."""
    config = model_config(**SMALL)
    model = _randomize_batch_norm(build_model(config), seed=1)
    directory = tmp_path_factory.mktemp("sources")
    arrays = deeplab_variables(model, config)
    extra = dict(TRAINING_STATE)
    extra["MobilenetV2/Conv/weights/Momentum"] = np.ones_like(
        arrays["MobilenetV2/Conv/weights"]
    )
    prefix = write_tf1_checkpoint(
        {**arrays, **extra}, str(directory / "model.ckpt-30000")
    )
    tflite = write_folded_tflite(model, config, str(directory / "model.tflite"))
    return config, model, prefix, tflite


def _import_into_new_model(config, source, **options):
    """`import_into_model` into a freshly built model of `config`; the report."""
    return iw.import_into_model(
        build_model(config), config, weight_sources.read_source(source), **options
    )


def _assert_same_weights(a, b):
    pairs = list(zip(a.weights, b.weights, strict=True))
    differ = [va.path for va, vb in pairs if not np.array_equal(va.numpy(), vb.numpy())]
    assert not differ, f"{len(differ)} of {len(pairs)} weights differ: {differ[:4]}"


# --- TF1 checkpoints -------------------------------------------------------------


def test_tf1_checkpoint_round_trip_loads_every_weight(small_source):
    config, source_model, prefix, _ = small_source
    model = build_model(config)
    report = iw.import_into_model(model, config, weight_sources.read_source(prefix))
    _assert_same_weights(source_model, model)
    x = _image()
    np.testing.assert_array_equal(_logits(model, x), _logits(source_model, x))
    units = list(naming.iter_units(model))
    assert len(report["loaded"]) == len(units) and not report["fresh"]
    assert {e["tensor"] for e in report["unused"]} == set(TRAINING_STATE)
    assert all("training state" in e["reason"] for e in report["unused"])
    total = len(model.weights)
    assert report["used_tensors"] == total  # one TF1 variable per Keras variable
    assert iw.summary_line(report) == (
        f"summary: source tensors: {total} used, 2 unused (of {total + 2}); "
        f"model weights: {total} loaded, 0 initialised fresh (of {total}; "
        f"{len(units)} of {len(units)} layers loaded)"
    )


@pytest.mark.parametrize(
    "config_kwargs",
    [
        dict(head="dpc", dpc_spec="specs/top1.json", decoder_output_stride=4),
        pytest.param(
            dict(model_variant="xception_65", depth_multiplier=1.0, atrous_rates=[]),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["mobilenet_dpc_decoder", "xception_65"],
)
def test_tf1_round_trip_other_scopes(config_kwargs, tmp_path):
    """DPC branches, decoder and Xception's split separable convs map by name."""
    kwargs = {**SMALL, **config_kwargs}
    if kwargs.get("dpc_spec"):
        kwargs["dpc_spec"] = os.path.join(REPO, kwargs["dpc_spec"])
        kwargs.pop("atrous_rates")
    config = model_config(**kwargs)
    source_model = _randomize_batch_norm(build_model(config), seed=2)
    arrays = deeplab_variables(source_model, config)
    prefix = write_tf1_checkpoint(arrays, str(tmp_path / "model.ckpt"))
    model = build_model(config)
    report = iw.import_into_model(model, config, weight_sources.read_source(prefix))
    assert not report["fresh"] and not report["unused"]
    _assert_same_weights(source_model, model)


def test_reads_checkpoint_by_prefix_index_file_or_directory(small_source):
    _, _, prefix, _ = small_source
    for path in (prefix, prefix + ".index", os.path.dirname(prefix)):
        assert weight_sources.detect_kind(path) == (
            weight_sources.TF1_CHECKPOINT,
            prefix,
        )


# --- Folded batch norm (TFLite layout) --------------------------------------------


def test_folded_tflite_reproduces_the_unfolded_model(small_source):
    config, source_model, _, tflite = small_source
    source = weight_sources.read_source(tflite)
    assert source.kind == weight_sources.TFLITE
    model = build_model(config)
    report = iw.import_into_model(model, config, source)
    assert not report["fresh"] and not report["unused"] and not report["warnings"]
    x = _image()
    ours, reference = _logits(model, x), _logits(source_model, x)
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 1e-5
    unit = next(u for u in naming.iter_units(model) if u.path == "backbone/Conv")
    np.testing.assert_array_equal(unit.bn.gamma.numpy(), 1.0)
    np.testing.assert_array_equal(unit.bn.moving_mean.numpy(), 0.0)
    np.testing.assert_allclose(unit.bn.moving_variance.numpy(), 1.0 - unit.bn.epsilon)


def test_other_output_stride_than_the_source_is_a_warning(small_source):
    config, _, _, tflite = small_source
    config = model_config(**{**SMALL, "output_stride": 8})
    report = _import_into_new_model(config, tflite)
    assert any("rate [2, 2] here" in w for w in report["warnings"])
    assert any(line.startswith("warning:") for line in iw.format_report(report))


# --- Partial loading ---------------------------------------------------------------


def test_backbone_only_leaves_head_and_logits_fresh(small_source):
    config, source_model, prefix, _ = small_source
    model = build_model(config)
    head_before = [v.numpy() for v in model.get_layer(common.HEAD).weights]
    report = iw.import_into_model(
        model, config, weight_sources.read_source(prefix), backbone_only=True
    )
    fresh = {e["layer"] for e in report["fresh"]}
    assert fresh and all(not p.startswith(common.BACKBONE) for p in fresh)
    assert all(
        p.startswith(common.BACKBONE) for p in (e["layer"] for e in report["loaded"])
    )
    _assert_same_weights(
        source_model.get_layer("backbone"), model.get_layer("backbone")
    )
    for before, v in zip(head_before, model.get_layer(common.HEAD).weights):
        np.testing.assert_array_equal(before, v.numpy())
    skipped = [e for e in report["unused"] if "--backbone_only" in e["reason"]]
    assert {e["tensor"].split("/")[0] for e in skipped} >= {"aspp0", "logits"}


def test_initialize_last_layer_false_skips_only_logits(small_source):
    config, _, prefix, _ = small_source
    report = _import_into_new_model(config, prefix, initialize_last_layer=False)
    assert [e["layer"] for e in report["fresh"]] == ["logits/semantic"]


def test_other_class_count_gets_fresh_logits_with_a_clear_line(small_source):
    config = model_config(**{**SMALL, "num_classes": 11})
    _, _, prefix, _ = small_source
    report = _import_into_new_model(config, prefix)
    (fresh,) = report["fresh"]
    assert fresh["layer"] == "logits/semantic"
    lines = iw.format_report(report)
    assert any("the source has 5 classes, the model 11" in line for line in lines)


# --- Bad input --------------------------------------------------------------------


# A model that does not fit the source: the error names the first tensor that
# does not fit (and the flag to change where one is to blame).
MISMATCHES = [
    pytest.param(
        {"depth_multiplier": 0.5},
        "checkpoint",
        r"^MobilenetV2/Conv/weights: stored \[3, 3, 3, 8\].*depth_multiplier",
        id="depth_multiplier",
    ),
    pytest.param(
        {"model_variant": "xception_65", "depth_multiplier": 1.0},
        "tflite",
        r"^xception_65/entry_flow/conv1_1/weights: not in .*0 of \d+ xception_65 backbone layers",
        id="other_architecture",
    ),
    pytest.param(
        {"atrous_rates": []},
        "checkpoint",
        r"^concat_projection/weights: .*--atrous_rates",
        id="head",
    ),
]


@pytest.mark.parametrize("overrides, source, message", MISMATCHES)
def test_model_that_does_not_match_the_source_names_the_tensor(
    small_source, overrides, source, message
):
    config = model_config(**{**SMALL, **overrides})
    _, _, prefix, tflite = small_source
    with pytest.raises(iw.WeightImportError, match=message):
        _import_into_new_model(config, prefix if source == "checkpoint" else tflite)


def test_not_a_model_and_our_own_checkpoint_are_refused(tmp_path):
    text = tmp_path / "notes.tflite"
    text.write_text("not a model\n")
    with pytest.raises(weight_sources.WeightSourceError, match="not a model"):
        weight_sources.read_source(str(text))
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 8)
    with pytest.raises(weight_sources.WeightSourceError, match="TFLite"):
        weight_sources.read_source(str(truncated))
    ours = tf.train.Checkpoint(v=tf.Variable([1.0])).save(
        str(tmp_path / "ours" / "ckpt")
    )
    with pytest.raises(weight_sources.WeightSourceError, match="TF2 object-based"):
        weight_sources.read_source(ours)


def test_atrous_rates_flag_values():
    assert iw.parse_atrous_rates(None) is None
    assert iw.parse_atrous_rates([""]) == []
    assert iw.parse_atrous_rates(["6,12,18"]) == [6, 12, 18]
    assert iw.parse_atrous_rates(["6", "12"]) == [6, 12]
    with pytest.raises(iw.WeightImportError, match="--atrous_rates"):
        iw.parse_atrous_rates(["six"])


# --- Command line -------------------------------------------------------------------


def _run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return run_module("deeplab_dpc.tools.import_weights", *args, cwd=REPO, env=env)


def _small_flags(source, output, **overrides):
    values = {
        "source": source,
        "output": output,
        "model_variant": SMALL["model_variant"],
        "depth_multiplier": SMALL["depth_multiplier"],
        "output_stride": SMALL["output_stride"],
        "head": SMALL["head"],
        "atrous_rates": ",".join(str(r) for r in SMALL["atrous_rates"]),
        "num_classes": SMALL["num_classes"],
        **overrides,
    }
    return [f"--{k}={v}" for k, v in values.items()]


def test_cli_writes_a_checkpoint_that_restores_to_the_imported_weights(
    small_source, tmp_path
):
    config, source_model, prefix, _ = small_source
    output = str(tmp_path / "imported")
    result = _run_cli(*_small_flags(prefix, output))
    assert result.returncode == 0, result.stderr
    assert "summary: source tensors:" in result.stdout
    with open(os.path.join(output, iw.REPORT_FILENAME)) as f:
        assert json.load(f)["kind"] == weight_sources.TF1_CHECKPOINT
    model, restored_config, _ = restore_model(output)
    assert restored_config == config
    _assert_same_weights(source_model, model)


def test_cli_error_is_one_line_exit_2_and_leaves_nothing(small_source, tmp_path):
    _, _, prefix, _ = small_source
    output = tmp_path / "imported"
    result = _run_cli(*_small_flags(prefix, str(output), depth_multiplier=0.5))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "import_weights" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith("import_weights: error: MobilenetV2/Conv/weights:")
    assert not output.exists()
    assert os.listdir(tmp_path) == []  # no temporary directory either
