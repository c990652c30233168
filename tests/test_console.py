"""Quiet consoles and progress ETAs: known answers, no TensorFlow process started."""

import logging

import pytest
from absl import flags
from absl import logging as absl_logging  # noqa: F401 (--showprefixforinfo)

from deeplab_dpc import console


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
    assert console.asked_for_verbose([], {"TF_CPP_MIN_LOG_LEVEL": "1"})


def _record(path, level):
    return logging.LogRecord("absl", level, path, 1, "message", (), None)


def test_library_info_lines_are_dropped_warnings_and_our_lines_kept():
    keep = console.LibraryInfoFilter().filter
    saver = "/venv/lib/python3/site-packages/tensorflow/python/functional_saver.py"
    assert not keep(_record(saver, logging.INFO))  # "Sharding callback duration"
    assert keep(_record(saver, logging.WARNING))
    assert keep(_record("/work/deeplab_dpc/training/trainer.py", logging.INFO))


def test_eta_is_right_from_the_first_line_after_a_resume():
    from deeplab_dpc import summaries

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
