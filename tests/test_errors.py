"""errors.check_range: the one range check of flags, model configs and options."""

import math

import pytest

from deeplab_dpc.core import errors
from deeplab_dpc.modeling.model import ModelConfigError, model_config
from deeplab_dpc.training import options


class FieldError(ValueError):
    pass


@pytest.mark.parametrize(
    "value, low, high, low_open",
    [(0.0, 0.0, None, False), (1.0, 0.0, 1.0, False), (2**62, 1, 2**62, False),
     (1e-300, 0.0, 4.0, True), (-5, None, 0, False), (3, None, None, False)],
)  # fmt: skip
def test_values_in_range_pass_unchanged(value, low, high, low_open):
    assert errors.check_range("x", value, low, high, low_open) is value


@pytest.mark.parametrize(
    "value, low, high, low_open, message",
    [
        (math.nan, 0.0, None, False, "x: must be a finite number >= 0.0, got nan"),
        (math.inf, None, None, False, "x: must be a finite number, got inf"),
        (-1, 0, None, False, "x: must be a finite number >= 0, got -1"),
        (0.0, 0.0, None, True, "x: must be a finite number > 0.0, got 0.0"),
        (1.5, 0.0, 1.0, False, "x: must be a finite number in [0.0, 1.0], got 1.5"),
        (0, 0.0, 4.0, True, "x: must be a finite number in (0.0, 4.0], got 0"),
        (2**62 + 1, 1, 2**62, False,  # exact: as floats both are 2.0**62
         f"x: must be a finite number in [1, {2**62}], got {2**62 + 1}"),
        (1, None, 0, False, "x: must be a finite number <= 0, got 1"),
        ("abc", 0.0, None, False, "x: must be a finite number >= 0.0, got abc"),
    ],
)  # fmt: skip
def test_values_out_of_range_raise_the_callers_class_naming_the_field(
    value, low, high, low_open, message
):
    with pytest.raises(FieldError) as raised:
        errors.check_range("x", value, low, high, low_open, FieldError)
    assert str(raised.value) == message


def test_none_is_an_unset_value():
    assert errors.check_range("x", None, 0.0, 1.0) is None


def test_model_config_and_train_options_share_the_message(tmp_path):
    with pytest.raises(ModelConfigError) as model_error:
        model_config("mobilenet_v2", 5, head="aspp", depth_multiplier=float("nan"))
    with pytest.raises(options.TrainOptionsError) as options_error:
        options.train_options(str(tmp_path), momentum=float("nan"))
    assert str(model_error.value) == (
        "depth_multiplier: must be a finite number in (0.0, 4.0], got nan"
    )
    assert str(options_error.value) == (
        "momentum: must be a finite number in [0.0, 1.0], got nan"
    )
