"""Tool consoles: TensorFlow's library lines dropped, our own lines plain.

Real subprocesses (one TensorFlow import each, a few seconds) that set up
logging as `python -m deeplab_dpc.tools.x` does: `console.quiet_tensorflow`
runs before `absl.logging` is imported (the order of `tools/__init__.py`).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_train import TF_NOISE

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    from deeplab_dpc.core import console
    console.quiet_tensorflow([])  # before absl.logging, as tools/__init__.py
    from absl import flags, logging
    import tensorflow as tf
    from deeplab_dpc.export import tflite
    flags.FLAGS(["tool"])
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    tf.train.Checkpoint(v=tf.Variable(1.0)).write(sys.argv[1])  # "Sharding callback"
    f = tf.function(lambda x: 2.0 * x).get_concrete_function(tf.TensorSpec([1]))
    with tflite._no_trackable_obj_warning():
        tf.lite.TFLiteConverter.from_concrete_functions([f])
    tf.lite.TFLiteConverter.from_concrete_functions([f])  # outside: still warned
    logging.info("our line %d", 7)
    logging.warning("our warning")
    """
)


def test_tool_console_has_no_library_info_and_plain_own_lines(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "ckpt")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert not TF_NOISE.search(done.stderr), done.stderr[:3000]
    assert "our line 7" in lines  # the whole line: no absl prefix on INFO
    assert [line for line in lines if "trackable_obj" in line] == [
        line for line in lines if "lite.py" in line and "trackable_obj" in line
    ] and sum("trackable_obj" in line for line in lines) == 1, done.stderr
    warning = [line for line in lines if line.endswith("our warning")]
    assert len(warning) == 1 and warning[0].startswith("W"), lines  # prefix kept


STARTUP_SCRIPT = textwrap.dedent(
    """
    from deeplab_dpc.core import console
    console.quiet_tensorflow([])  # as flags.run and tools/__init__.py do
    from absl import flags, logging
    import tensorflow as tf
    flags.FLAGS(["tool"])
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    logging.info("our line %d", 7)
    """
)


@pytest.mark.parametrize("user_level", [None, "2", "0"])
def test_tensorflows_start_up_lines_are_provoked_and_kept_out(tmp_path, user_level):
    """TF_ENABLE_ONEDNN_OPTS=1 makes every x86 TensorFlow print absl's start-up lines.

    So this cannot pass by host: the verbose run (TF_CPP_MIN_LOG_LEVEL=0, the
    user asking for TensorFlow's output) must show them, the quiet runs must not,
    and a user's own TF_CPP_MIN_LOG_LEVEL=2 gets the project's plain lines.
    """
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    if user_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_level
    done = subprocess.run(
        [sys.executable, "-c", STARTUP_SCRIPT],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    if user_level == "0":
        assert "oneDNN custom operations are on" in done.stderr, done.stderr[:3000]
        assert "absl::InitializeLog" in done.stderr
        assert any(line.endswith("] our line 7") for line in lines), lines
    else:
        assert not TF_NOISE.search(done.stderr), done.stderr[:3000]
        assert "oneDNN" not in done.stderr
        assert "our line 7" in lines, lines  # plain: no absl prefix
