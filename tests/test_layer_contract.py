"""The Keras 3 layer contract, for every registered layer and every backbone.

One harness, as keras-hub's `run_layer_test` / `run_vision_backbone_test`:

* registered name: ``deeplab_dpc>ClassName``;
* config round trip: `from_config` of the JSON-serialised config gives a
  layer with an equal config;
* weights round trip: the clone takes `get_weights()` of the original (with
  random weights and batch-norm statistics) and gives the same outputs;
* symbolic call on `keras.Input`s (unknown batch) gives the eager shapes;
* output shape: `compute_output_shape` (where the layer has one) is the
  shape of the output, on odd and on even non-square inputs;
* a call under the `mixed_bfloat16` policy: bfloat16 outputs, all finite.

`CASES` holds each registered layer's cases (tiny channels and inputs);
`test_every_registered_layer_has_cases` enumerates the registry (every
module of the package that registers a class is imported), so a new layer
without cases fails. Backbones: every `MODEL_VARIANTS` entry has a case;
Xception's are slow (~10 s a build; `pytest -m slow`), their modules run
here as layers.
"""

import functools
import importlib
import json
import pathlib

import keras
import numpy as np
import pytest

import deeplab_dpc
from deeplab_dpc.backbones import MODEL_VARIANTS, NAS_VARIANTS, build_backbone
from deeplab_dpc.backbones.auto_deeplab_network import (
    ScaleResize,
    network_output_stride,
)
from deeplab_dpc.backbones.mobilenet_v2 import InvertedResidual
from deeplab_dpc.backbones.xception import XceptionModule
from deeplab_dpc.formats import auto_deeplab_spec as nas_spec
from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.layers import (
    ASPP,
    ConvBN,
    Decoder,
    DensePredictionCell,
    Logits,
    PyramidPooling,
    ResizeLike,
    SeparableConvBN,
)
from deeplab_dpc.layers.auto_deeplab_cell import NASCell
from deeplab_dpc.layers.auto_deeplab_ops import (
    NASAtrous,
    NASConvBN,
    NASPool,
    NASSeparable,
    NASSkip,
)
from deeplab_dpc.layers.base import dtype_policy
from deeplab_dpc.search.auto_deeplab.relaxed_cell import RelaxedCell
from deeplab_dpc.search.auto_deeplab.supernet import EdgeAdapter

SIZES = ((9, 7), (10, 14))  # odd and even, neither square
POOL_SPEC = [
    {"op": "pyramid_pooling", "grid_size": [2, 4], "input": -1},
    {"op": "conv", "kernel": 1, "input": 0},
    {"op": "conv", "kernel": 3, "rate": [3, 21], "input": -1},
]
RELAXED_OPS = ("none", "atrous_3x3", "separable_3x3_2", "max_pool_3x3", "zero")


def image(c):
    """Inputs of one NHWC map with `c` channels."""
    return lambda h, w: [(1, h, w, c)]


def cell_inputs(c_net, c_prev, alpha=None):
    """[H^{l-1}, H^{l-2} (one level finer), softmax(alpha)] of a cell."""

    def inputs(h, w):
        shapes = [(1, h, w, c_net), (1, 2 * h - 1, 2 * w - 1, c_prev)]
        return shapes + ([alpha] if alpha else [])

    return inputs


def decoder_inputs(h, w):
    return [(1, (h + 3) // 4, (w + 3) // 4, 6), (1, h, w, 3)]


# class name -> [(id, make(), input shapes (h, w) -> [shapes], call kwargs (h, w))]
CASES = {
    "ConvBN": [
        ("atrous", lambda: ConvBN(8, 3, rate=2, name="c"), image(4)),
        ("strided", lambda: ConvBN(8, 3, strides=2, explicit_padding=True), image(4)),
        ("depthwise_relu6", lambda: ConvBN(kernel_size=3, rate=(1, 6), depthwise=True,
                                           activation="relu6"), image(4)),
        ("nas_options", lambda: ConvBN(5, 3, strides=2, explicit_padding=True,
                                       use_bias=True, pre_activation=True,
                                       kernel_initializer="he_normal"), image(3)),
    ],
    "SeparableConvBN": [("rate", lambda: SeparableConvBN(8, 3, rate=(1, 6)), image(4))],
    "Logits": [("logits", lambda: Logits(5, name="logits"), image(4))],
    "PyramidPooling": [("grid", lambda: PyramidPooling(8, (2, 4)), image(4))],
    "ResizeLike": [("resize", lambda: ResizeLike(), lambda h, w: [(1, 3, 4, 2),
                                                                   (1, h, w, 5)])],
    "DensePredictionCell": [
        ("top1", lambda: DensePredictionCell(spec_lib.TOP1, filters=8), image(4)),
        ("pool_os8", lambda: DensePredictionCell(POOL_SPEC, output_stride=8, filters=8),
         image(4)),
    ],
    "ASPP": [
        ("rates", lambda: ASPP((6, 12), filters=8, separable=False), image(4)),
        ("lite", lambda: ASPP((), filters=8), image(4)),
    ],
    "Decoder": [("decoder", lambda: Decoder(8, 4), decoder_inputs)],
    "InvertedResidual": [
        ("residual", lambda: InvertedResidual(4, 4, 6, rate=2), image(4)),
        ("strided", lambda: InvertedResidual(4, 8, 1, strides=2), image(4)),
    ],
    "XceptionModule": [
        ("conv", lambda: XceptionModule((8, 8, 8), "conv", False, strides=2), image(4)),
        ("sum", lambda: XceptionModule((4, 4, 4), "sum", True, rate=2), image(4)),
    ],
    "ScaleResize": [("up", lambda: ScaleResize(2.0), image(3))],
    "NASConvBN": [
        ("stem", lambda: NASConvBN(8, 3, strides=2, pre_activation=False), image(3)),
        ("depthwise", lambda: NASConvBN(kernel_size=5, rate=2, depthwise=True,
                                        use_bn=False), image(3)),
    ],
    "NASSeparable": [("strided", lambda: NASSeparable(6, 5, strides=2), image(4))],
    "NASAtrous": [
        ("rate2", lambda: NASAtrous(4, 3), image(4)),
        ("strided", lambda: NASAtrous(4, 5, strides=2), image(3)),
    ],
    "NASPool": [("project", lambda: NASPool(6, "max"), image(4))],
    "NASSkip": [("strided", lambda: NASSkip(4, strides=2), image(4))],
    "NASCell": [("hnasnet", lambda: NASCell(4, strides=2), cell_inputs(8, 3))],
    "RelaxedCell": [
        ("relaxed", lambda: RelaxedCell(3, 2, RELAXED_OPS),
         cell_inputs(5, 4, (nas_spec.num_cell_edges(2), len(RELAXED_OPS)))),
    ],
    "EdgeAdapter": [
        ("down", lambda: EdgeAdapter(4, 1), image(3)),
        ("up", lambda: EdgeAdapter(4, -1), image(3),
         lambda h, w: {"size": (2 * h - 1, 2 * w - 1)}),
    ],
}  # fmt: skip
CASE_PARAMS = [
    pytest.param(name, case[1], case[2], case[3] if len(case) > 3 else None,
                 id=f"{name}-{case[0]}")
    for name, cases in CASES.items()
    for case in cases
]  # fmt: skip


@functools.cache
def registered_layers():
    """{name: class} of every layer the package registers (its modules imported)."""
    root = pathlib.Path(deeplab_dpc.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if path.name != "__main__.py" and "register_keras_serializable" in (
            path.read_text(encoding="utf-8")
        ):
            module = path.relative_to(root.parent).with_suffix("").parts
            importlib.import_module(".".join(module).removesuffix(".__init__"))
    return {
        name.split(">", 1)[1]: cls
        for name, cls in keras.saving.get_custom_objects().items()
        if name.startswith("deeplab_dpc>")
        and cls.__module__.startswith("deeplab_dpc.")
        and issubclass(cls, keras.layers.Layer)
    }


def test_every_registered_layer_has_cases():
    assert sorted(registered_layers()) == sorted(CASES)


def test_every_backbone_has_a_case():
    assert sorted(BACKBONES) == sorted(MODEL_VARIANTS)


def _arrays(shapes, rng):
    return [rng.normal(size=s).astype("float32") for s in shapes]


def _flat(outputs):
    if isinstance(outputs, dict):
        return [outputs[k] for k in sorted(outputs)]
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _shapes(outputs):
    return [tuple(o.shape) for o in _flat(outputs)]


def _randomize(layer, rng):
    for w in layer.weights:
        value = rng.normal(size=w.shape).astype("float32") * 0.3
        if "variance" in w.path:
            value = np.abs(value) + 0.5
        w.assign(value)


def _single(inputs):
    return inputs[0] if len(inputs) == 1 else inputs


def _overrides_output_shape(layer):
    return (
        type(layer).compute_output_shape is not keras.layers.Layer.compute_output_shape
    )


@pytest.mark.parametrize("name, make, shapes, call_kwargs", CASE_PARAMS)
def test_layer_contract(name, make, shapes, call_kwargs):
    rng = np.random.default_rng(0)
    kwargs = call_kwargs or (lambda h, w: {})
    layer = make()
    cls = registered_layers()[name]
    assert type(layer) is cls
    assert keras.saving.get_registered_name(cls) == f"deeplab_dpc>{name}"
    inputs = {hw: _arrays(shapes(*hw), rng) for hw in SIZES}
    for hw, x in inputs.items():  # builds on the first size
        out = layer(_single(x), training=False, **kwargs(*hw))
    _randomize(layer, rng)

    # Config round trip through JSON.
    blob = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    clone = keras.saving.deserialize_keras_object(blob)
    assert type(clone) is cls
    assert clone.get_config() == layer.get_config()

    # Weights round trip, and output shapes at odd and even non-square sizes.
    for hw, x in inputs.items():
        out = layer(_single(x), training=False, **kwargs(*hw))
        if hw == SIZES[0]:
            clone(_single(x), training=False, **kwargs(*hw))
            clone.set_weights(layer.get_weights())
        for a, b in zip(
            _flat(out), _flat(clone(_single(x), training=False, **kwargs(*hw)))
        ):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=0)
        if _overrides_output_shape(layer):
            expected = layer.compute_output_shape(_single([a.shape for a in x]))
            expected = expected if isinstance(expected, list) else [expected]
            assert [tuple(s) for s in expected] == _shapes(out), (hw, expected)

        # Symbolic call: unknown batch (alpha keeps its rows), known sizes.
        symbolic = [
            keras.Input(batch_shape=(None, *a.shape[1:]) if a.ndim == 4 else a.shape)
            for a in x
        ]
        got = _shapes(layer(_single(symbolic), **kwargs(*hw)))
        want = [(None, *s[1:]) for s in _shapes(out)]
        assert len(got) == len(want)
        for g, s in zip(got, want):
            assert len(g) == len(s)
            assert all(a is None or a == b for a, b in zip(g, s)), (got, want)

    # Mixed precision: bfloat16 compute, float32 variables.
    with dtype_policy("mixed_bfloat16"):
        mixed = make()
        x = inputs[SIZES[1]]
        out = mixed(_single(x), training=False, **kwargs(*SIZES[1]))
    assert all(w.dtype == "float32" for w in mixed.weights)
    for o in _flat(out):
        assert o.dtype == "bfloat16", (name, o.dtype)
        assert np.isfinite(np.asarray(o, "float32")).all()


# --- Backbones ---------------------------------------------------------------

SHORT_PATH = {
    nas_spec.NETWORK: [0, 1, 2, 1],
    nas_spec.CELL: nas_spec.HNASNET[nas_spec.CELL],
}
# variant -> (build_backbone kwargs, marks)
BACKBONES = {
    "mobilenet_v2": (dict(depth_multiplier=0.25), ()),
    # A 4-cell path that goes coarser and finer (the paper's 12 cost 3x more).
    "nas_hnasnet": (dict(num_conv_filters=2, architecture=SHORT_PATH), ()),
    "xception_65": ({}, (pytest.mark.slow,)),
    "xception_71": ({}, (pytest.mark.slow,)),
}
BACKBONE_SIZES = ((33, 41), (32, 48))


@pytest.mark.parametrize("variant", [
    pytest.param(v, marks=BACKBONES[v][1]) for v in BACKBONES
])  # fmt: skip
def test_backbone_contract(variant):
    rng = np.random.default_rng(1)
    kwargs = BACKBONES[variant][0]
    model = build_backbone(variant, 16, **kwargs)
    stride = 16
    if variant in NAS_VARIANTS:
        stride = network_output_stride(kwargs["architecture"][nas_spec.NETWORK])
    images = {hw: rng.uniform(-1, 1, (1, *hw, 3)).astype("float32") for hw in
              BACKBONE_SIZES}  # fmt: skip
    model(images[BACKBONE_SIZES[0]], training=False)
    _randomize(model, rng)

    config = json.dumps(model.get_config(), sort_keys=True)  # Keras's own has tuples
    clone = keras.Model.from_config(json.loads(config))
    assert json.dumps(clone.get_config(), sort_keys=True) == config
    clone.set_weights(model.get_weights())
    for (h, w), x in images.items():
        out = model(x, training=False)
        assert sorted(out) == ["features", "low_level"]
        for a, b in zip(_flat(out), _flat(clone(x, training=False))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=0)
        # A NAS path that goes finer upsamples to (n - 1) * 2 + 1 (DeepLab's
        # scale_dimension): ceil(n / stride) holds on sizes 32k + 1 only.
        for n, got in zip((h, w), out["features"].shape[1:3]):
            if variant not in NAS_VARIANTS or (n - 1) % 32 == 0:
                assert got == (n - 1) // stride + 1, (n, got)
        assert out["low_level"].shape[1:3] == ((h - 1) // 4 + 1, (w - 1) // 4 + 1)
        symbolic = model(keras.Input(batch_shape=(None, h, w, 3)))
        assert [s[1:] for s in _shapes(symbolic)] == [s[1:] for s in _shapes(out)]

    with dtype_policy("mixed_bfloat16"):
        mixed = build_backbone(variant, 16, **kwargs)
    out = mixed(images[BACKBONE_SIZES[1]], training=False)
    for o in _flat(out):
        assert o.dtype == "bfloat16"
        assert np.isfinite(np.asarray(o, "float32")).all()
