"""The dropout RNG state travels with the training checkpoint (in-process, cheap).

Keras keeps a Dropout layer's random stream in a `SeedGenerator` whose state
variable `tf.train.Checkpoint` does not reach through the layer: a resumed
run drew the masks of step 1 again and its loss differed from an
uninterrupted run's (1.1291 against 1.1412 at step 2 of the kill test's
flags). `trainer.seed_generator_states` finds the states, nested layers
included (the ASPP head's dropout), and the trainer saves them as `rng`.
"""

import keras
import numpy as np
import tensorflow as tf

from deeplab_dpc.layers.aspp import ASPP
from deeplab_dpc.training import trainer


def _model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((9, 9, 4))
    x = ASPP(atrous_rates=(), filters=8, name="head")(inputs)
    x = keras.layers.Dropout(0.5, name="top_dropout")(x)
    return keras.Model(inputs, x)


def _masks(model, x, n):
    return [model(x, training=True).numpy() != 0 for _ in range(n)]


def test_seed_generator_states_are_found_and_restore_the_dropout_stream(tmp_path):
    x = tf.ones([1, 9, 9, 4])
    model = _model(1)
    states = trainer.seed_generator_states(model)
    generators = [
        model.get_layer("head").dropout.seed_generator,
        model.get_layer("top_dropout").seed_generator,
    ]
    assert [id(s) for s in states] == [id(g.state) for g in generators]
    _masks(model, x, 3)  # three steps, then a checkpoint
    prefix = tf.train.Checkpoint(model=model, rng=states).write(str(tmp_path / "c"))
    expected = _masks(model, x, 2)

    resumed = _model(1)
    tf.train.Checkpoint(model=resumed, rng=trainer.seed_generator_states(resumed)).read(
        prefix
    ).assert_consumed()
    got = _masks(resumed, x, 2)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)

    # Without the states the resumed model draws step 1's masks again.
    plain = _model(1)
    tf.train.Checkpoint(model=plain).read(prefix).expect_partial()
    assert not np.array_equal(_masks(plain, x, 1)[0], expected[0])
