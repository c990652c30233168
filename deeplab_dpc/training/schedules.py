"""Learning-rate policies of DeepLab's `train_utils.get_model_learning_rate`.

- `poly`: `base * (1 - step / training_number_of_steps) ** learning_power`,
  down to `end_learning_rate` (the paper's schedule, power 0.9).
- `step`: `base * learning_rate_decay_factor ** floor(step / decay_step)`.
- `cosine`: cosine decay from `base` to `end_learning_rate` (later DeepLab).

Slow start as in DeepLab: for the first `slow_start_step` steps the rate is
`slow_start_learning_rate`, and the policy then runs on `step -
slow_start_step`. Deviation: one Keras `LearningRateSchedule` object instead
of TF1 graph ops, so that the optimizer checkpoint carries its step and a
resumed run continues on the same rate.
"""

import math

import keras
import tensorflow as tf

from deeplab_dpc.training.options import LEARNING_POLICIES, check_schedule

__all__ = ["LEARNING_POLICIES", "DeepLabSchedule"]


@keras.saving.register_keras_serializable(package="deeplab_dpc")
class DeepLabSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """DeepLab's learning-rate policy as a Keras schedule (see module docstring)."""

    def __init__(
        self,
        learning_policy="poly",
        base_learning_rate=1e-4,
        training_number_of_steps=30000,
        learning_power=0.9,
        end_learning_rate=0.0,
        learning_rate_decay_factor=0.1,
        learning_rate_decay_step=2000,
        slow_start_step=0,
        slow_start_learning_rate=1e-4,
    ):
        check_schedule(
            learning_policy, training_number_of_steps, learning_rate_decay_step
        )
        self.learning_policy = learning_policy
        self.base_learning_rate = float(base_learning_rate)
        self.training_number_of_steps = int(training_number_of_steps)
        self.learning_power = float(learning_power)
        self.end_learning_rate = float(end_learning_rate)
        self.learning_rate_decay_factor = float(learning_rate_decay_factor)
        self.learning_rate_decay_step = int(learning_rate_decay_step)
        self.slow_start_step = int(slow_start_step)
        self.slow_start_learning_rate = float(slow_start_learning_rate)

    def _policy(self, step):
        base, end = self.base_learning_rate, self.end_learning_rate
        decay_steps = float(
            max(1, self.training_number_of_steps - self.slow_start_step)
        )
        if self.learning_policy == "step":
            exponent = tf.floor(step / float(self.learning_rate_decay_step))
            return base * tf.pow(self.learning_rate_decay_factor, exponent)
        fraction = tf.minimum(step, decay_steps) / decay_steps
        if self.learning_policy == "poly":
            return (base - end) * tf.pow(1.0 - fraction, self.learning_power) + end
        return end + 0.5 * (base - end) * (1.0 + tf.cos(math.pi * fraction))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        adjusted = tf.maximum(step - float(self.slow_start_step), 0.0)
        rate = self._policy(adjusted)
        if self.slow_start_step > 0:
            rate = tf.where(
                step < float(self.slow_start_step),
                tf.constant(self.slow_start_learning_rate, tf.float32),
                rate,
            )
        return rate

    def get_config(self):
        return {
            "learning_policy": self.learning_policy,
            "base_learning_rate": self.base_learning_rate,
            "training_number_of_steps": self.training_number_of_steps,
            "learning_power": self.learning_power,
            "end_learning_rate": self.end_learning_rate,
            "learning_rate_decay_factor": self.learning_rate_decay_factor,
            "learning_rate_decay_step": self.learning_rate_decay_step,
            "slow_start_step": self.slow_start_step,
            "slow_start_learning_rate": self.slow_start_learning_rate,
        }
