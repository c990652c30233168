"""Several steps per compiled call give the losses and weights of one step per call.

`Trainer.make_train_loop` (`--steps_per_execution`) runs the steps of
`make_train_step` inside one `tf.function` on the same iterator; the host
reads the loss only on logging steps. Both are pinned bit for bit here, on
a tiny MobileNetV2 (x0.25, 33x33 crops, batch 2) with one seed: through
the step functions directly, and through `train()` itself on a small
TFRecord dataset (the loss it returns, every weight of its final
checkpoint, and the logged losses).
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.core import common
from deeplab_dpc.data import records, registry
from deeplab_dpc.modeling.model import model_config
from deeplab_dpc.training import options as options_lib
from deeplab_dpc.training import trainer as trainer_lib

NUM_CLASSES = 3


def _cfg():
    return model_config("mobilenet_v2", NUM_CLASSES, head="aspp", depth_multiplier=0.25)


def _info():
    return registry.custom_dataset_info("spe", NUM_CLASSES)


def _options(logdir, **kwargs):  # deterministic input: two runs, one order
    return options_lib.train_options(
        str(logdir), train_crop_size=(33, 33), train_batch_size=2, seed=3,
        base_learning_rate=0.01, save_interval_secs=1e9, save_summaries_secs=1e9,
        deterministic_input=True, **kwargs,
    )  # fmt: skip


def _batches(n):
    rng = np.random.default_rng(0)
    return [
        {
            common.IMAGE: tf.constant(rng.uniform(-1, 1, (2, 33, 33, 3)), tf.float32),
            common.LABEL: tf.constant(rng.integers(0, NUM_CLASSES, (2, 33, 33, 1)), tf.int32),
        }
        for _ in range(n)
    ]  # fmt: skip


def _weights(model):
    return [v.numpy() for v in model.weights]


def test_train_loop_matches_one_step_per_call_bit_for_bit(tmp_path):
    batches = _batches(6)
    one = trainer_lib.Trainer(_cfg(), _options(tmp_path / "a"), _info())
    step = one.make_train_step()
    per_step = [step(b) for b in batches]
    losses_one = [(float(ce), float(total)) for ce, total, _ in per_step]

    several = trainer_lib.Trainer(_cfg(), _options(tmp_path / "b"), _info())
    loop = several.make_train_loop()
    iterator = iter(tf.data.Dataset.from_tensor_slices(
        {k: tf.stack([b[k] for b in batches]) for k in batches[0]}
    ))  # fmt: skip
    got = {}
    done = 0
    for n in (1, 2, 3):  # steps 1, 3 and 6
        ce, total, lr = loop(iterator, tf.constant(n, tf.int64))
        done += n
        got[done] = (float(ce), float(total), float(lr))
    for at, (ce, total, lr) in got.items():
        assert (ce, total) == losses_one[at - 1], at  # bit-equal, not approx
        assert lr == float(per_step[at - 1][2])
        assert lr == pytest.approx(float(one.schedule(at - 1)))
    assert int(several.step.numpy()) == int(one.step.numpy()) == 6
    assert int(several.data_position.numpy()) == 6
    for a, b in zip(_weights(one.model), _weights(several.model)):
        np.testing.assert_array_equal(a, b)


def _write_dataset(directory):
    rng = np.random.default_rng(1)
    examples = []
    for i in range(6):
        image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        label = rng.integers(0, NUM_CLASSES, (40, 48), dtype=np.uint8)
        examples.append(records.make_example(
            records.encode_png(image), "png", f"{i}.png", 40, 48,
            records.encode_png(label),
        ))  # fmt: skip
    records.write_shards(examples, str(directory), "train", 2)


# Slow: two train() runs, each tracing the one-step and the several-step
# functions of a MobileNetV2 (minutes on a loaded 2-core host); the test above
# pins the same equality on the step functions in the default run.
@pytest.mark.slow
def test_train_with_steps_per_execution_gives_the_same_run(tmp_path, caplog):
    _write_dataset(tmp_path / "data")
    results, weights = {}, {}
    for spe in (1, 4):
        logdir = tmp_path / f"spe{spe}"
        options = _options(
            logdir, dataset_dir=str(tmp_path / "data"), training_number_of_steps=9,
            log_steps=5, steps_per_execution=spe,
        )  # fmt: skip
        with caplog.at_level("INFO"):
            caplog.clear()
            results[spe] = trainer_lib.train(_cfg(), options, _info())
            logged = [
                r.getMessage() for r in caplog.records if "loss" in r.getMessage()
            ]
        results[spe]["logged"] = [line.split("  ")[:2] for line in logged]
        reader = tf.train.load_checkpoint(results[spe]["checkpoint"])
        weights[spe] = {
            name: reader.get_tensor(name)
            for name, _ in tf.train.list_variables(results[spe]["checkpoint"])
            if name.startswith("model/")
        }
    assert results[1]["step"] == results[4]["step"] == 9
    assert results[1]["loss"] == results[4]["loss"]  # bit-equal
    # Steps 5 and 9 logged (loss read there only), the same lines.
    assert [x[0] for x in results[1]["logged"]] == ["step 5/9", "step 9/9"]
    assert results[1]["logged"] == results[4]["logged"]
    assert weights[1].keys() == weights[4].keys() and len(weights[1]) > 10
    for name in weights[1]:
        np.testing.assert_array_equal(weights[1][name], weights[4][name], err_msg=name)


def test_training_input_is_deterministic_only_when_asked(tmp_path):
    """Default: parallel reads and maps in completion order; the flag fixes it."""
    _write_dataset(tmp_path / "data")
    seen = {}
    for flag in (False, True):
        options = options_lib.train_options(
            str(tmp_path / f"t{flag}"), dataset_dir=str(tmp_path / "data"),
            train_crop_size=(33, 33), train_batch_size=2, deterministic_input=flag,
        )  # fmt: skip
        trainer = trainer_lib.Trainer(_cfg(), options, _info())
        dataset = trainer.dataset_fn(tf.distribute.InputContext())
        seen[flag] = dataset.options().deterministic
    assert options_lib.DEFAULTS["deterministic_input"] is False
    assert seen == {False: False, True: True}


@pytest.mark.parametrize(
    "opts, start, expected",
    [
        # steps_per_execution 8, logging every 10, checkpoints every 6, 30 steps:
        # calls end at 6, 10, 12, 18, 20, 24, 30 (every boundary, none skipped).
        ({"steps_per_execution": 8, "log_steps": 10, "save_interval_steps": 6},
         0, [6, 10, 12, 18, 20, 24, 30]),
        ({"steps_per_execution": 8, "log_steps": 10, "save_interval_steps": 0},
         0, [8, 10, 18, 20, 28, 30]),
        ({"steps_per_execution": 4, "log_steps": 100, "save_interval_steps": 5},
         3, [5, 9, 10, 14, 15, 19, 20, 24, 25, 29, 30]),
    ],
)  # fmt: skip
def test_calls_end_on_logging_and_checkpoint_steps(opts, start, expected):
    class Fake:
        def _multi_worker(self):
            return False

    fake = Fake()
    fake.opts = opts
    ends, step = [], start
    while step < 30:
        step += trainer_lib.Trainer._steps_in_call(fake, step, 30)
        ends.append(step)
    assert ends == expected
