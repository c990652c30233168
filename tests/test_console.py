"""Quiet consoles and progress ETAs: known answers, no TensorFlow process started."""

import logging
import os
import sys

import pytest
from absl import flags
from absl import logging as absl_logging  # noqa: F401 (--showprefixforinfo)

from deeplab_dpc.core import console


@pytest.fixture
def restore_loggers():
    """quiet_tensorflow changes process-wide loggers: put them back after the test."""
    tf_logger, absl_logger = logging.getLogger("tensorflow"), logging.getLogger("absl")
    level, filters = tf_logger.level, list(absl_logger.filters)
    prefix = flags.FLAGS["showprefixforinfo"].default
    yield
    tf_logger.setLevel(level)
    absl_logger.filters[:] = filters
    flags.FLAGS.set_default("showprefixforinfo", prefix)


def test_verbosity_flag_or_environment_keeps_tensorflows_logging(restore_loggers):
    assert not console.asked_for_verbose(["--dataset=x"], {})
    assert console.asked_for_verbose(["--verbosity=1"], {})
    assert console.asked_for_verbose(["-v", "0"], {})
    assert console.asked_for_verbose([], {"TF_CPP_MIN_LOG_LEVEL": "0"})
    environ = {}
    assert console.quiet_tensorflow([], environ) and environ == {
        "TF_CPP_MIN_LOG_LEVEL": "2"
    }
    environ = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    assert not console.quiet_tensorflow([], environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "0"}  # the user's value wins
    assert logging.getLogger("tensorflow").level == logging.WARNING  # from the first


def test_quieting_is_not_mistaken_for_the_user_asking_for_verbose(restore_loggers):
    environ = {}  # quiet_tensorflow's own TF_CPP_MIN_LOG_LEVEL=2 must not
    assert console.quiet_tensorflow([], environ)  # turn quiet_optuna off
    assert not console.asked_for_verbose([], environ)
    # A child process inherits the 2: still quiet there.
    assert not console.asked_for_verbose([], {"TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.parametrize(
    "environ, verbose, level",
    [
        ({}, False, 2),
        ({"TF_CPP_MIN_LOG_LEVEL": "1"}, False, 1),  # keep C++ warnings
        ({"TF_CPP_MIN_LOG_LEVEL": "2"}, False, 2),  # the usual way to quiet TF
        ({"TF_CPP_MIN_LOG_LEVEL": " 3 "}, False, 3),
        ({"TF_CPP_MIN_LOG_LEVEL": "0"}, True, 2),
        ({"TF_CPP_MIN_LOG_LEVEL": "loud"}, True, 2),  # not a level: TF's default
        ({"TF_CPP_MAX_VLOG_LEVEL": "1"}, True, 2),
        ({"TF_CPP_MAX_VLOG_LEVEL": "0"}, False, 2),
    ],
)
def test_the_level_the_user_exported_is_honoured(
    restore_loggers, environ, verbose, level
):
    assert console.asked_for_verbose([], environ) is verbose
    assert console.min_log_level(environ) == level or verbose
    user = dict(environ)
    assert console.quiet_tensorflow([], environ) is not verbose
    assert environ == (user if verbose or "TF_CPP_MIN_LOG_LEVEL" in user else
                       dict(user, TF_CPP_MIN_LOG_LEVEL="2"))  # fmt: skip


STARTUP = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written"
    b" to STDERR\n"
    b"I0000 00:00:1796613932.885693    4020 port.cc:153] oneDNN custom operations are on."
    b" You may see slightly different numerical results ...\n"
    b"W1207 02:11:34.130000  140137 dataset.cc:12] a C++ warning\n"
    b"/x/keras/src/a.py:3: UserWarning: a Python warning\n"
    b"  warnings.warn(msg)\n"
    b"E1207 02:11:34.130001  140137 op.cc:99] a C++ error\n"
    b"I1207 02:11:34.13 12 trainer.py:190] not C++: the file is what absl names\n"
)


def test_native_lines_below_the_level_are_dropped_the_rest_kept_in_order():
    lines = STARTUP.splitlines(keepends=True)
    assert console.drop_native_lines(STARTUP, 0) == STARTUP
    assert console.drop_native_lines(STARTUP, 1) == b"".join(lines[2:])
    assert console.drop_native_lines(STARTUP, 2) == b"".join(lines[3:])
    assert console.drop_native_lines(STARTUP, 3) == b"".join(lines[3:5] + lines[6:])


def test_what_native_code_writes_to_descriptor_2_is_filtered(capfd):
    os.write(2, b"before\n")
    with console.NativeStartupFilter(2):
        os.write(2, STARTUP)  # as absl's C++ logging does, past sys.stderr
    os.write(2, b"after\n")
    kept = console.drop_native_lines(STARTUP, 2).decode()
    assert capfd.readouterr().err == "before\n" + kept + "after\n"


def test_the_import_hook_filters_the_module_it_names_once(tmp_path, capfd, monkeypatch):
    (tmp_path / "native_chatter.py").write_text(
        "import os\n"
        "os.write(2, b'I0000 00:00:17.5 1 port.cc:153] oneDNN custom operations are on\\n')\n"
        "os.write(2, b'a line of its own\\n')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(console.StartupFilterFinder, "MODULE", "native_chatter")
    monkeypatch.delitem(sys.modules, "native_chatter", raising=False)
    try:
        assert console.install_startup_filter(2)
        import native_chatter  # noqa: F401

        assert not any(
            isinstance(f, console.StartupFilterFinder) for f in sys.meta_path
        )  # served once, then gone
    finally:
        console.remove_startup_filter()
        sys.modules.pop("native_chatter", None)
    assert capfd.readouterr().err == "a line of its own\n"


def _record(path, level):
    return logging.LogRecord("absl", level, path, 1, "message", (), None)


def test_library_info_lines_are_dropped_warnings_and_our_lines_kept():
    keep = console.LibraryInfoFilter().filter
    saver = "/venv/lib/python3/site-packages/tensorflow/python/functional_saver.py"
    assert not keep(_record(saver, logging.INFO))  # "Sharding callback duration"
    assert keep(_record(saver, logging.WARNING))
    assert keep(_record("/work/deeplab_dpc/training/trainer.py", logging.INFO))


def test_eta_is_right_from_the_first_line_after_a_resume():
    from deeplab_dpc.reporting import summaries

    # Resumed at step 100 of 200; the first 2 steps (tracing) take 10 s each,
    # then 0.5 s per step. Skipped steps and warm-up must not count.
    progress = summaries.Progress(100, 200, global_batch_size=8, warmup_steps=2)
    assert progress.bar is None  # stderr is not a terminal under pytest
    now = 0.0
    for step in range(101, 111):
        now += 10.0 if step <= 102 else 0.5
        progress.tick(step, now)
    assert progress.step_seconds() == pytest.approx(0.5)
    assert progress.eta_seconds(110) == pytest.approx(90 * 0.5)
    assert progress.images_per_sec() == pytest.approx(16.0)
