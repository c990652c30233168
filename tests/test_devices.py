"""--gpu_memory_growth: TensorFlow's TF_FORCE_GPU_ALLOW_GROWTH, set before its first op."""

import os
import subprocess
import sys

from absl import flags

from deeplab_dpc import command_line
from deeplab_dpc.core import devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flag_values(argv):
    values = flags.FlagValues()
    devices.define_flag(values)
    devices.define_flag(values)  # a second call defines nothing
    values(["prog", *argv])
    return values


def test_memory_growth_is_on_by_default():
    environ = {}
    devices.apply_flag(_flag_values([]), environ)
    assert environ == {devices.ENV: "true"}


def test_an_exported_value_wins_over_the_default_and_the_flag_over_both():
    environ = {devices.ENV: "false"}
    devices.apply_flag(_flag_values([]), environ)
    assert environ[devices.ENV] == "false"
    devices.apply_flag(_flag_values(["--gpu_memory_growth"]), environ)
    assert environ[devices.ENV] == "true"
    devices.apply_flag(_flag_values(["--nogpu_memory_growth"]), environ)
    assert environ[devices.ENV] == "false"


def test_the_entry_points_apply_it_before_main():
    seen = []
    saved = os.environ.pop(devices.ENV, None)
    try:
        command_line.run_main(
            lambda argv: seen.append(os.environ[devices.ENV]), ["prog"]
        )
        command_line.run_main(
            lambda argv: seen.append(os.environ[devices.ENV]),
            ["prog", "--nogpu_memory_growth"],
        )
    finally:
        command_line.FLAGS[devices.FLAG].unparse()
        os.environ.pop(devices.ENV, None)
        if saved is not None:
            os.environ[devices.ENV] = saved
    assert seen == ["true", "false"]


def test_train_py_and_the_auto_deeplab_cli_list_the_flag():
    """Every entry point has it: train.py through command_line.py, the search CLI its own."""
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), "--helpfull"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert "--[no]gpu_memory_growth" in result.stdout, result.stderr[-2000:]
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_dpc.search.auto_deeplab", "--helpfull"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert "--[no]gpu_memory_growth" in result.stdout, result.stderr[-2000:]
