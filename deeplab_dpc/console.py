"""Quiet consoles: TensorFlow's C++ and Python chatter off before TensorFlow loads.

TensorFlow-free and importable from every layer; only entry points call it
(train.py, eval.py, vis.py, export_model.py, search.py,
`python -m deeplab_dpc.tools.*` through `deeplab_dpc/tools/__init__.py`, and
the `bench/` scripts, before they import TensorFlow).

`quiet_tensorflow` sets, unless the user asked otherwise:
- `TF_CPP_MIN_LOG_LEVEL=2`: no C++ INFO / WARNING lines (`cpu_feature_guard`,
  `dataset.cc` warnings, checkpoint "Sharding callback duration"); C++
  errors still print. A value the user exported wins.
- the `tensorflow` Python logger at WARNING: no "Waiting for new checkpoint"
  from `tf.train.checkpoints_iterator`; the project's own lines are absl
  logging and unaffected.
- TensorFlow's and Keras's own INFO lines through absl logging (the
  checkpoint saver's "Sharding callback duration") are dropped by a filter
  on absl's logger (`LibraryInfoFilter`); their warnings still print.
- absl's `--showprefixforinfo` off by default: the project's own INFO lines
  print plainly (`step 30/300  loss 0.73 ...`, not `I1202 20:20:29.86 140137
  summaries.py:126] step 30/300 ...`); warnings and errors keep absl's prefix.
  `--showprefixforinfo` on the command line brings the prefix back.

`--verbosity` / `-v` on the command line (absl's flag) or
`TF_CPP_MIN_LOG_LEVEL` / `TF_CPP_MAX_VLOG_LEVEL` in the environment turn all
of it off: the user gets TensorFlow's usual output.

`progress_bar` gives a tqdm bar when stderr is a terminal and None otherwise,
so callers print plain lines to log files.
"""

import logging
import os
import sys

TF_LOG_ENV = ("TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL")
VERBOSITY_FLAGS = ("--verbosity", "-v", "--v")
_SET_HERE = {}  # what quiet_tensorflow put in the environment, not the user


def asked_for_verbose(argv=None, environ=None):
    """Whether the user asked for TensorFlow's own logging (flag or environment)."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    if any(
        name in environ and environ[name] != _SET_HERE.get(name) for name in TF_LOG_ENV
    ):  # a value quiet_tensorflow set in this process is not the user's
        return True
    return any(
        arg == flag or arg.startswith(flag + "=")
        for arg in argv
        for flag in VERBOSITY_FLAGS
    )


def quiet_tensorflow(argv=None, environ=None):
    """Keeps TensorFlow's logging out of the console (call before TensorFlow loads).

    Returns True when it quieted, False when the user asked for verbose output.
    Called after TensorFlow was imported it still quiets the Python logger,
    but the C++ level is fixed by then.
    """
    environ = os.environ if environ is None else environ
    if asked_for_verbose(argv, environ):
        return False
    environ["TF_CPP_MIN_LOG_LEVEL"] = _SET_HERE["TF_CPP_MIN_LOG_LEVEL"] = "2"
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    # absl.logging first: it makes the "absl" logger an ABSLLogger, whose
    # records name the real caller (a plain Logger made here first would name
    # absl/logging/__init__.py, and LibraryInfoFilter could not see TF's lines).
    from absl import logging as absl_logging

    absl_logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, LibraryInfoFilter) for f in absl_logger.filters):
        absl_logger.addFilter(LibraryInfoFilter())
    plain_info_lines()
    return True


def plain_info_lines():
    """INFO lines without absl's `I1202 20:20:29.86 140137 file.py:12]` prefix.

    Sets the default of absl's own `--showprefixforinfo` flag (defined by
    `absl.logging`) to False, so the user's `--showprefixforinfo` still wins.
    """
    from absl import flags
    from absl import logging as absl_logging  # defines --showprefixforinfo

    del absl_logging
    flags.FLAGS.set_default("showprefixforinfo", False)


class LibraryInfoFilter(logging.Filter):
    """Drops INFO (and lower) records that TensorFlow or Keras code logs via absl."""

    LIBRARIES = (os.sep + "tensorflow" + os.sep, os.sep + "keras" + os.sep)

    def filter(self, record):
        if record.levelno >= logging.WARNING:
            return True
        path = record.pathname or ""
        return not any(part in path for part in self.LIBRARIES)


def quiet_optuna(argv=None, environ=None):
    """Optuna's INFO lines ("A new study created in RDB") off, unless verbose.

    Call after Optuna is imported (it sets its own level on import).
    """
    if asked_for_verbose(argv, environ):
        return False
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return True


def stderr_is_terminal():
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(**tqdm_args):
    """A tqdm bar on a terminal; None when stderr is a file or pipe (plain lines)."""
    if not stderr_is_terminal():
        return None
    from tqdm import tqdm

    return tqdm(dynamic_ncols=True, **tqdm_args)
