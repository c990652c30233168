"""Training options and multi-value flags: validation with one-line errors."""

import json

import pytest

from deeplab_dpc import command_line
from deeplab_dpc.core import artefacts
from deeplab_dpc.training import options


def test_multi_value_flags_accept_commas_and_repeats():
    assert command_line.multi_values(["0.5,1", "1.5"], float, "eval_scales") == [
        0.5, 1.0, 1.5,
    ]  # fmt: skip
    assert command_line.multi_values(["513", "513"], int, "x") == [513, 513]
    assert command_line.multi_values([], float, "x") == []
    with pytest.raises(ValueError, match="--eval_scales: 'a' is not a valid float"):
        command_line.multi_values(["1,a"], float, "eval_scales")


def test_options_are_json_and_keep_deeplab_defaults(tmp_path):
    opts = options.train_options(str(tmp_path))
    assert json.loads(json.dumps(opts)) == opts
    assert opts["train_crop_size"] == [513, 513] and opts["train_batch_size"] == 8
    assert opts["schedule"]["learning_policy"] == "poly"
    assert opts["schedule"]["learning_power"] == 0.9 and opts["momentum"] == 0.9
    assert opts["weight_decay"] == 4e-5 and opts["fine_tune_batch_norm"] is True


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train_crop_size": (32, 65)}, "too small"),
        ({"train_crop_size": (65,)}, "needs 2 values"),
        ({"train_batch_size": 0}, "train_batch_size"),
        ({"min_scale_factor": 2.0, "max_scale_factor": 1.0}, "min <= max"),
        ({"learning_policy": "exp"}, "learning_policy"),
        ({"tpu": "grpc://x"}, "needs --distribution_strategy=tpu"),
        ({"distribution_strategy": "gpus"}, "distribution_strategy"),
        ({"mixed_precision": "int8"}, "mixed_precision"),
    ],
)
def test_bad_options_name_the_option(tmp_path, kwargs, message):
    with pytest.raises(options.TrainOptionsError, match=message):
        options.train_options(str(tmp_path), **kwargs)


def test_load_train_config_from_dir_or_prefix(tmp_path):
    assert artefacts.read_train_config(str(tmp_path)) is None
    (tmp_path / artefacts.TRAIN_CONFIG).write_text('{"dataset": "camvid"}')
    assert artefacts.read_train_config(str(tmp_path))["dataset"] == "camvid"
    assert artefacts.read_train_config(str(tmp_path / "ckpt-3"))["dataset"] == "camvid"


def test_model_flags_empty_atrous_rates_mean_aspp_lite_and_dataset_is_recorded():
    """`--atrous_rates=` (given, empty) is ASPP-lite; not given is (6, 12, 18)."""
    import subprocess
    import sys

    # One process parses the three command lines in turn (a fresh parse each).
    code = (
        "import json, sys\n"
        "from absl import flags\n"
        "from deeplab_dpc import command_line\n"
        "command_line.define_model_flags()\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    flags.FLAGS.unparse_flags()\n"
        "    flags.FLAGS(['prog', *args])\n"
        "    c = command_line.model_config(5)\n"
        "    print(' '.join(args), '|', c['head'], c['atrous_rates'], c['dataset'])\n"
    )
    arg_lists = [[], ["--atrous_rates="], ["--atrous_rates=6,12", "--dataset=camvid"]]
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(arg_lists)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-1000:]
    runs = {}
    for line in out.stdout.splitlines():
        args, _, result = line.partition(" | ")
        runs[args.strip()] = result.split()
    assert len(runs) == 3, out.stdout
    assert runs[""] == ["aspp", "[6,", "12,", "18]", "synthetic"]
    assert runs["--atrous_rates="] == ["aspp", "[]", "synthetic"]
    assert runs["--atrous_rates=6,12 --dataset=camvid"] == [
        "aspp",
        "[6,",
        "12]",
        "camvid",
    ]
