"""Backbone shapes at odd sizes and atrous consistency across output strides.

Atrous consistency (as DeepLab2's tests): with the same weights, features at
output stride s, subsampled every 2 pixels, equal the features at 2s, for
inputs of size k * 32 + 1.
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.backbones import build_backbone
from deeplab_dpc.backbones.mobilenet_v2 import scaled_depth

RNG = np.random.default_rng(1)


def _randomize_bn(model):
    for w in model.weights:
        if "moving_variance" in w.path:
            w.assign(RNG.uniform(0.5, 1.5, size=w.shape).astype("float32"))
        elif "moving_mean" in w.path or "beta" in w.path:
            w.assign(RNG.normal(0, 0.1, size=w.shape).astype("float32"))


def _traced_shapes(model, size):
    fn = tf.function(model.__call__, autograph=False)
    out = fn.get_concrete_function(tf.TensorSpec([1, size, size, 3])).structured_outputs
    return {k: tuple(v.shape) for k, v in out.items()}


# Xception at every output stride runs with `pytest -m slow` (~10 s a build).
_FAST_XCEPTION = {("xception_65", 16), ("xception_71", 8)}
SHAPE_CASES = [
    pytest.param(
        v,
        c,
        s,
        marks=()
        if v == "mobilenet_v2" or (v, s) in _FAST_XCEPTION
        else pytest.mark.slow,
    )
    for v, c in (("mobilenet_v2", 160), ("xception_65", 2048), ("xception_71", 2048))
    for s in (8, 16, 32)
]


@pytest.mark.parametrize("variant, channels, output_stride", SHAPE_CASES)
def test_feature_shapes_at_odd_sizes(variant, channels, output_stride):
    model = build_backbone(
        variant,
        output_stride,
        depth_multiplier=0.5 if variant == "mobilenet_v2" else 1.0,
    )
    # Each size is one more trace of the whole network (~3 s for Xception):
    # Xception takes the smallest and the largest.
    sizes = (97, 257, 513) if variant == "mobilenet_v2" else (97, 513)
    for size in sizes:
        shapes = _traced_shapes(model, size)
        feat = (size - 1) // output_stride + 1
        assert shapes["features"] == (1, feat, feat, channels), (size, shapes)
        low = (size - 1) // 4 + 1
        assert shapes["low_level"][:3] == (1, low, low)


def test_mobilenet_channels_follow_deeplab_rounding():
    assert [scaled_depth(c, 0.5) for c in (32, 16, 24, 32, 64, 96, 160, 320)] == [
        16,
        8,
        12,
        16,
        32,
        48,
        80,
        160,
    ]
    assert [scaled_depth(c, 1.0) for c in (32, 16, 24)] == [32, 16, 24]
    model = build_backbone("mobilenet_v2", 16, depth_multiplier=1.0)
    assert model.get_layer("expanded_conv_16").project.conv.kernel.shape == (
        1,
        1,
        960,
        320,
    )


def test_unknown_variant_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown model_variant 'resnet'"):
        build_backbone("resnet")


def _features(variant, output_stride, weights, x):
    model = build_backbone(
        variant,
        output_stride,
        depth_multiplier=0.5 if variant == "mobilenet_v2" else 1.0,
    )
    model(x[:, :33, :33])
    if weights is None:
        _randomize_bn(model)
    else:
        model.set_weights(weights)
    return model, model(x, training=False)["features"].numpy()


@pytest.mark.parametrize("variant, size", [("mobilenet_v2", 97), ("xception_65", 65)])
def test_atrous_consistency_across_output_strides(variant, size):
    x = RNG.uniform(-1, 1, size=(1, size, size, 3)).astype("float32")
    ref_model, f8 = _features(variant, 8, None, x)
    weights = ref_model.get_weights()
    _, f16 = _features(variant, 16, weights, x)
    _, f32 = _features(variant, 32, weights, x)
    scale = np.abs(f16).max()
    assert scale > 0
    np.testing.assert_allclose(f8[:, ::2, ::2], f16, atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(f16[:, ::2, ::2], f32, atol=1e-4 * scale, rtol=0)
