"""Loss, weight decay and learning-rate schedule: known answers by hand."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.modeling.model import build_deeplab
from deeplab_dpc.training import losses, schedules


def _numpy_ce(logits, labels, ignore, weights=None):
    logits = logits.astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    total, count = 0.0, 0
    for idx in np.ndindex(labels.shape):
        label = labels[idx]
        if label == ignore:
            continue
        w = 1.0 if weights is None else weights[label]
        total += -w * log_probs[idx][label]
        count += w > 0
    return total / count


def test_cross_entropy_matches_numpy_and_skips_ignored_pixels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 5, 6)).astype(np.int32)
    labels[0, :2] = 255
    got = losses.softmax_cross_entropy(logits, labels[..., None], 3, 255)
    np.testing.assert_allclose(float(got), _numpy_ce(logits, labels, 255), rtol=1e-5)
    weights = [0.5, 2.0, 0.0]
    got = losses.softmax_cross_entropy(logits, labels[..., None], 3, 255, weights)
    np.testing.assert_allclose(
        float(got), _numpy_ce(logits, labels, 255, weights), rtol=1e-5
    )


def test_cross_entropy_all_ignored_is_zero_and_bad_label_is_nan():
    logits = tf.zeros([1, 4, 4, 3])
    ignored = tf.fill([1, 4, 4, 1], 255)
    assert float(losses.softmax_cross_entropy(logits, ignored, 3, 255)) == 0.0
    bad = tf.fill([1, 4, 4, 1], 7)
    assert np.isnan(float(losses.softmax_cross_entropy(logits, bad, 3, 255)))


def test_logits_upsampled_or_labels_downsampled():
    logits = tf.random.normal([1, 5, 5, 2], seed=1)
    labels = tf.ones([1, 9, 9, 1], tf.int32)
    up = losses.softmax_cross_entropy(logits, labels, 2, 255, upsample_logits=True)
    down = losses.softmax_cross_entropy(logits, labels, 2, 255, upsample_logits=False)
    # Labels all ones: downsampling labels = ce of the 5x5 logits themselves.
    expected = _numpy_ce(logits.numpy(), np.ones((1, 5, 5), np.int64), 255)
    np.testing.assert_allclose(float(down), expected, rtol=1e-5)
    assert abs(float(up) - float(down)) > 1e-4


def test_weight_decay_is_half_l2_of_non_depthwise_kernels():
    # MobileNetV2 and its ASPP: DeepLab's regularize_depthwise=False.
    model = build_deeplab("mobilenet_v2", 3, head="aspp", depth_multiplier=0.5)
    kernels = losses.decayed_kernels(model)
    depthwise = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.DepthwiseConv2D)
    ]
    assert depthwise and all(k is not d.kernel for d in depthwise for k in kernels)
    expected = 4e-5 * sum(0.5 * np.sum(np.square(k.numpy())) for k in kernels)
    got = float(losses.weight_decay_loss(kernels, 4e-5))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert float(losses.weight_decay_loss(kernels, 0.0)) == 0.0


def test_poly_step_cosine_and_slow_start_schedules():
    poly = schedules.DeepLabSchedule("poly", 0.01, 100, learning_power=0.9)
    np.testing.assert_allclose(float(poly(0)), 0.01, rtol=1e-6)
    np.testing.assert_allclose(float(poly(50)), 0.01 * 0.5**0.9, rtol=1e-5)
    assert float(poly(100)) == 0.0 and float(poly(150)) == 0.0
    step = schedules.DeepLabSchedule(
        "step", 0.1, 1000, learning_rate_decay_factor=0.1, learning_rate_decay_step=10
    )
    np.testing.assert_allclose(
        [float(step(s)) for s in (9, 10, 25)], [0.1, 0.01, 0.001]
    )
    cosine = schedules.DeepLabSchedule("cosine", 1.0, 10)
    np.testing.assert_allclose(float(cosine(5)), 0.5, rtol=1e-6)
    slow = schedules.DeepLabSchedule(
        "poly", 0.01, 110, slow_start_step=10, slow_start_learning_rate=1e-4
    )
    np.testing.assert_allclose(float(slow(9)), 1e-4, rtol=1e-6)
    np.testing.assert_allclose(float(slow(60)), 0.01 * 0.5**0.9, rtol=1e-5)
    rebuilt = schedules.DeepLabSchedule(**slow.get_config())
    assert float(rebuilt(60)) == float(slow(60))


@pytest.mark.parametrize(
    "kwargs",
    [{"learning_policy": "exp"}, {"training_number_of_steps": 0}],
)
def test_schedule_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        schedules.DeepLabSchedule(**kwargs)


def test_trainer_seed_fixes_the_initial_weights(tmp_path):
    from deeplab_dpc.data import registry
    from deeplab_dpc.modeling.model import model_config
    from deeplab_dpc.training import options as options_lib
    from deeplab_dpc.training.trainer import Trainer

    info = registry.get_dataset_info("synthetic")
    cfg = model_config("mobilenet_v2", 5, head="aspp", depth_multiplier=0.35)

    def head_kernel(seed, name):
        opts = options_lib.train_options(str(tmp_path / name), seed=seed)
        model = Trainer(cfg, opts, info).model
        return model.get_layer("logits").get_weights()[0]

    first, again, other = head_kernel(0, "a"), head_kernel(0, "b"), head_kernel(1, "c")
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_frozen_backbone_batch_norm_keeps_its_statistics_and_the_head_learns(tmp_path):
    from deeplab_dpc.core import common
    from deeplab_dpc.data import registry
    from deeplab_dpc.modeling.model import model_config
    from deeplab_dpc.training import options as options_lib
    from deeplab_dpc.training.trainer import Trainer

    info = registry.get_dataset_info("synthetic")
    cfg = model_config(
        "mobilenet_v2", 5, head="aspp", depth_multiplier=0.35, batch_norm_decay=0.5
    )
    opts = options_lib.train_options(str(tmp_path), freeze_backbone_batch_norm=True)
    model = Trainer(cfg, opts, info).model

    def bn_layers(name):
        layers = model.get_layer(name)._flatten_layers(recursive=True)
        return [bn for bn in layers if isinstance(bn, keras.layers.BatchNormalization)]

    backbone, head = bn_layers(common.BACKBONE), bn_layers(common.HEAD)
    assert backbone and head
    assert not any(bn.trainable for bn in backbone) and all(bn.trainable for bn in head)
    trainable = {id(v) for v in model.trainable_variables}
    assert all(id(bn.gamma) not in trainable for bn in backbone)
    assert all(id(bn.gamma) in trainable for bn in head)
    before = [bn.moving_mean.numpy().copy() for bn in backbone + head]
    images = tf.random.uniform([2, 65, 65, 3], -1.0, 1.0, seed=1)
    model(images, training=True)
    after = [bn.moving_mean.numpy() for bn in backbone + head]
    moved = [not np.array_equal(b, a) for b, a in zip(before, after)]
    assert not any(moved[: len(backbone)]) and all(moved[len(backbone) :])


def test_last_layer_gradient_multiplier_scales_the_head_and_logits_only(tmp_path):
    from deeplab_dpc.core import common
    from deeplab_dpc.data import registry
    from deeplab_dpc.modeling.model import model_config
    from deeplab_dpc.training import options as options_lib
    from deeplab_dpc.training.trainer import Trainer

    info = registry.get_dataset_info("synthetic")
    cfg = model_config("mobilenet_v2", 5, head="aspp", depth_multiplier=0.35)
    batch = {
        common.IMAGE: tf.random.uniform([2, 33, 33, 3], -1.0, 1.0, seed=2),
        common.LABEL: tf.random.uniform([2, 33, 33, 1], 0, 5, tf.int32, seed=3),
    }

    def grads(name, multiplier, logits_only=False):
        opts = options_lib.train_options(
            str(tmp_path / name), fine_tune_batch_norm=False, seed=0,
            last_layer_gradient_multiplier=multiplier,
            last_layers_contain_logits_only=logits_only,
        )  # fmt: skip
        trainer = Trainer(cfg, opts, info)
        names = [v.path for v in trainer.model.trainable_variables]
        return names, trainer.model, [g.numpy() for g in trainer._gradients(batch)[2]]

    names, model, one = grads("one", 1.0)
    _, _, ten = grads("ten", 10.0)
    _, _, logits_only = grads("logits", 10.0, logits_only=True)
    last = {id(v) for n in ("head", "logits") for v in model.get_layer(n).weights}
    in_last = [id(v) in last for v in model.trainable_variables]
    logits = {id(v) for v in model.get_layer("logits").weights}
    assert any(in_last) and not all(in_last)
    for i, (a, b, c) in enumerate(zip(one, ten, logits_only)):
        np.testing.assert_allclose(
            b, a * (10.0 if in_last[i] else 1.0), rtol=1e-4, atol=1e-7
        )
        is_logits = id(model.trainable_variables[i]) in logits
        np.testing.assert_allclose(
            c, a * (10.0 if is_logits else 1.0), rtol=1e-4, atol=1e-7
        )


def test_hnasnet_decays_the_official_kernel_set_counted_per_op_type():
    # The official hnasnet (nas_arg_scope regularizes slim.conv2d and
    # slim.separable_conv2d; nas_cell's separable convs regularize their
    # depthwise): 12 cells, each with 7 two-layer separable ops (a depthwise
    # and a pointwise each), 3 atrous convs, the cell's 1x1 and its prev_1x1
    # (H^{l-2} has 5 x filters channels, never the cell's filters), plus the 3
    # stem convs: 3 + 12 * (1 + 1 + 3 + 14 + 14) = 399, of which 168 depthwise.
    from deeplab_dpc.backbones.auto_deeplab_network import nas_network
    from deeplab_dpc.modeling import naming

    model = nas_network(num_conv_filters=8)
    decayed = {id(k) for k in losses.decayed_kernels(model)}
    counts = {}
    for unit in naming.iter_units(model):
        if id(unit.conv.kernel) not in decayed:
            continue
        name = unit.path.split("/")[-1]
        kind = (
            "stem" if "/" not in unit.path
            else "atrous" if name.startswith("atrous")
            else name.rsplit("_", 1)[-1] if name.startswith("separable")
            else name
        )  # fmt: skip
        counts[kind] = counts.get(kind, 0) + 1
    assert counts == {
        "stem": 3,
        "1x1": 12,
        "prev_1x1": 12,
        "atrous": 36,
        "depthwise": 168,
        "pointwise": 168,
    }
    assert len(decayed) == 399
