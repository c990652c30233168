"""The evaluator against a plain numpy computation on the same predictions."""

import json
import logging
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.core import common
from deeplab_dpc.data import pipeline, registry, synthetic
from deeplab_dpc.evaluation import evaluator
from deeplab_dpc.modeling import checkpoints, inference
from deeplab_dpc.modeling.model import build_model, model_config

SCALES = (0.5, 1.0, 1.5)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = str(root / "synthetic")
    synthetic.generate_synthetic_dataset(
        data, num_train=2, num_val=3, image_size=(65, 97)
    )
    keras.utils.set_random_seed(3)
    config = model_config(
        "mobilenet_v2", 5, head="aspp", depth_multiplier=0.5, batch_norm_decay=0.0
    )
    model = build_model(config)
    # An untrained model predicts one class everywhere. Set the BN statistics
    # from the validation images (decay 0) and give the logits random weights
    # over standardised head features, so that predictions vary.
    info = registry.get_dataset_info("synthetic")
    dataset = pipeline.build_dataset(data, "val", info, is_training=False)
    images = tf.concat([b[common.IMAGE] for b in dataset], axis=0)
    model(images, training=True)
    features = keras.Model(model.input, model.get_layer(common.HEAD).output)(images)
    mean = np.mean(features, axis=(0, 1, 2))
    std = np.std(features, axis=(0, 1, 2)) + 1e-6
    logits = model.get_layer(common.LOGITS)
    kernel, _ = logits.get_weights()
    weights = np.random.default_rng(0).normal(0, 1, kernel.shape[2:]) / std[:, None]
    logits.set_weights(
        [weights[None, None].astype("float32"), (-mean @ weights).astype("float32")]
    )
    ckpt_dir = root / "ckpt"
    checkpoints.write_model_checkpoint(model, config, str(ckpt_dir))
    return data, str(ckpt_dir), model, root


def _numpy_confusion(labels, preds, num_classes, ignore):
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for label, pred in zip(labels, preds):
        counted = label != ignore
        for t in range(num_classes):
            for p in range(num_classes):
                matrix[t, p] += np.sum(counted & (label == t) & (pred == p))
    return matrix


def _numpy_miou(matrix):
    ious = []
    for c in range(matrix.shape[0]):
        union = matrix[c].sum() + matrix[:, c].sum() - matrix[c, c]
        if union:
            ious.append(matrix[c, c] / union)
    return float(np.mean(ious))


def test_multiscale_flip_miou_equals_numpy_on_the_same_predictions(setup):
    data, ckpt_dir, model, root = setup
    info = registry.get_dataset_info("synthetic")
    results = evaluator.evaluate(
        ckpt_dir, str(root / "out"), info, data=data, eval_scales=SCALES,
        add_flipped_images=True, max_number_of_evaluations=1,
    )  # fmt: skip
    labels, preds = [], []
    dataset = pipeline.build_dataset(data, "val", info, is_training=False)
    for batch in dataset:
        h, w = int(batch[common.HEIGHT][0]), int(batch[common.WIDTH][0])
        probs = inference.predict_probabilities(
            model, batch[common.IMAGE], SCALES, add_flipped_images=True
        ).numpy()[0]
        preds.append(np.argmax(probs, axis=-1)[:h, :w])
        labels.append(batch[common.LABEL].numpy()[0, :h, :w, 0])
    assert all(label.shape == (65, 97) for label in labels)
    assert len(np.unique(np.concatenate([p.ravel() for p in preds]))) > 1
    matrix = _numpy_confusion(labels, preds, 5, info.ignore_label)
    np.testing.assert_array_equal(results["confusion_matrix"], matrix)
    assert results["miou"] == pytest.approx(_numpy_miou(matrix), abs=1e-12)
    assert results["pixel_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    stored = json.loads((root / "out" / "results.json").read_text())
    assert set(stored) >= {
        "checkpoint", "step", "scales", "flip", "miou", "per_class_iou",
        "pixel_accuracy", "confusion_matrix",
    }  # fmt: skip
    assert stored["scales"] == list(SCALES) and stored["flip"] is True
    assert stored["miou"] == pytest.approx(results["miou"])
    assert "disc_blue_band" in stored["per_class_iou"]
    assert "mIoU" in evaluator.format_table(results)


def test_output_stride_8_rebuilds_the_checkpoint_model_at_8(setup):
    # eval.py --output_stride=8: the OS-16 checkpoint's weights in an OS-8 model.
    data, ckpt_dir, model, root = setup
    info = registry.get_dataset_info("synthetic")
    results = evaluator.evaluate(
        ckpt_dir, str(root / "os8"), info, data=data, output_stride=8,
        max_number_of_evaluations=1,
    )  # fmt: skip
    assert results["output_stride"] == 8
    config = dict(checkpoints.read_checkpoint_config(ckpt_dir), output_stride=8)
    os8, _, _ = checkpoints.restore_model(ckpt_dir, config=config)
    labels, preds = [], []
    dataset = pipeline.build_dataset(data, "val", info, is_training=False)
    for batch in dataset:
        h, w = int(batch[common.HEIGHT][0]), int(batch[common.WIDTH][0])
        probs = inference.predict_probabilities(os8, batch[common.IMAGE], (1.0,))
        preds.append(np.argmax(probs.numpy()[0], axis=-1)[:h, :w])
        labels.append(batch[common.LABEL].numpy()[0, :h, :w, 0])
    matrix = _numpy_confusion(labels, preds, 5, info.ignore_label)
    np.testing.assert_array_equal(results["confusion_matrix"], matrix)
    at16 = evaluator.evaluate(
        ckpt_dir, str(root / "os16"), info, data=data,
        max_number_of_evaluations=1,
    )  # fmt: skip
    assert at16["output_stride"] == 16
    assert at16["confusion_matrix"] != results["confusion_matrix"]
    with pytest.raises(ValueError, match="output_stride: must be 8, 16 or 32, got 4"):
        evaluator.evaluate(ckpt_dir, str(root / "os4"), info, data=data,
                           output_stride=4, max_number_of_evaluations=1)  # fmt: skip


def _step_checkpoint(directory, step):
    """A real checkpoint holding only the trainer's `step` variable."""
    ckpt = tf.train.Checkpoint(step=tf.Variable(step, dtype=tf.int64, name="step"))
    manager = tf.train.CheckpointManager(ckpt, str(directory), max_to_keep=5)
    return manager.save(checkpoint_number=step)


def _train_dir(tmp_path, final_step, steps):
    directory = tmp_path / "train"
    directory.mkdir()
    config = {"training_number_of_steps": final_step, "save_interval_secs": 60}
    (directory / "train_config.json").write_text(json.dumps(config))
    for step in steps:
        _step_checkpoint(directory, step)
    return directory


def test_watch_stops_after_the_final_step_without_waiting(tmp_path):
    directory = _train_dir(tmp_path, final_step=10, steps=[10])
    start = time.time()
    seen = list(evaluator.watch_checkpoints(str(directory), 0, 0, wait_secs=30))
    assert [evaluator.checkpoint_step(p) for p in seen] == [10]
    assert time.time() - start < 5  # did not wait the 30 s


def test_watch_says_it_waits_then_stops_when_training_was_interrupted(tmp_path, caplog):
    directory = _train_dir(tmp_path, final_step=10, steps=[4])
    caplog.set_level(logging.INFO)
    # absl's logger may have been quieted by an earlier test's console setup.
    caplog.set_level(logging.INFO, logger="absl")
    start = time.time()
    seen = list(evaluator.watch_checkpoints(str(directory), 0, 0, wait_secs=1.5))
    elapsed = time.time() - start
    assert [evaluator.checkpoint_step(p) for p in seen] == [4]
    assert 1.0 <= elapsed < 10
    text = caplog.text
    assert f"Waiting for a checkpoint newer than step 4 in {directory}" in text
    assert "final step: 10" in text and "--max_number_of_evaluations=1" in text
    assert "stopped before its final step 10 (last evaluated: step 4)" in text


def test_watch_takes_a_checkpoint_written_while_it_waits(tmp_path):
    directory = _train_dir(tmp_path, final_step=10, steps=[4])
    seen = []
    for prefix in evaluator.watch_checkpoints(str(directory), 0, 0, wait_secs=20):
        seen.append(evaluator.checkpoint_step(prefix))
        if len(seen) == 1:  # the training saves its final step meanwhile
            threading.Timer(0.5, _step_checkpoint, (directory, 10)).start()
    assert seen == [4, 10]


def test_watch_max_number_keeps_deeplabs_meaning(tmp_path):
    directory = _train_dir(tmp_path, final_step=10, steps=[4])
    seen = list(evaluator.watch_checkpoints(str(directory), 1, 0, wait_secs=30))
    assert [evaluator.checkpoint_step(p) for p in seen] == [4]
