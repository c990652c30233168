"""Quiet consoles: TensorFlow's C++ and Python chatter off before TensorFlow loads.

TensorFlow-free and importable from every layer; only entry points call it
(train.py, eval.py, vis.py, export_model.py, search.py,
`python -m deeplab_dpc.tools.*` through `deeplab_dpc/tools/__init__.py`, and
the `bench/` scripts, before they import TensorFlow).

`quiet_tensorflow` sets, unless the user asked otherwise:
- `TF_CPP_MIN_LOG_LEVEL=2`: no C++ INFO / WARNING lines (`cpu_feature_guard`,
  `dataset.cc` warnings, checkpoint "Sharding callback duration"); C++
  errors still print. A level of 1 or more that the user exported wins
  (`TF_CPP_MIN_LOG_LEVEL=1` keeps C++ warnings) and is quiet in every other
  respect; 0 asks for TensorFlow's usual output.
- the start-up lines TensorFlow's shared libraries print through absl's C++
  logging while they load, before anything initialises absl logging
  (`WARNING: All log messages before absl::InitializeLog() is called are
  written to STDERR` and `I0000 ... port.cc:153] oneDNN custom operations are
  on ...`, once per library, on hosts where oneDNN's custom operations are on:
  AVX-512 / AMX CPUs, or `TF_ENABLE_ONEDNN_OPTS=1`). absl prints these
  whatever `TF_CPP_MIN_LOG_LEVEL` says, and nothing reachable from Python
  sets absl's C++ level before the libraries load, so `import tensorflow`
  runs with file descriptor 2 captured (`NativeStartupFilter`, installed as a
  `sys.meta_path` hook on the first import of `tensorflow`): absl-format lines
  below the level are dropped, every other byte goes back to stderr in order.
  oneDNN itself stays as TensorFlow chose (`TF_ENABLE_ONEDNN_OPTS` is not
  touched: it changes numerics and speed, not just the console).
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

`--verbosity` / `-v` on the command line (absl's flag),
`TF_CPP_MIN_LOG_LEVEL=0` (or a value that is not a level) or a positive
`TF_CPP_MAX_VLOG_LEVEL` in the environment turn all of it off: the user gets
TensorFlow's usual output, start-up lines included.

`progress_bar` gives a tqdm bar when stderr is a terminal and None otherwise,
so callers print plain lines to log files.
"""

import importlib.abc
import logging
import os
import re
import sys
import tempfile

MIN_LEVEL_ENV, MAX_VLOG_ENV = "TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL"
QUIET_LEVEL = "2"  # C++ errors only, unless the user exported a level
VERBOSITY_FLAGS = ("--verbosity", "-v", "--v")


def _int_or_none(text):
    try:
        return int(text.strip())
    except (AttributeError, ValueError):
        return None


def min_log_level(environ=None):
    """The quiet C++ level in force: the user's `TF_CPP_MIN_LOG_LEVEL` if >= 1, else 2."""
    environ = os.environ if environ is None else environ
    level = _int_or_none(environ.get(MIN_LEVEL_ENV))
    return level if level is not None and level >= 1 else int(QUIET_LEVEL)


def asked_for_verbose(argv=None, environ=None):
    """Whether the user asked for TensorFlow's own logging (flag or environment).

    `TF_CPP_MIN_LOG_LEVEL` of 1 or more asks for less, not more: it is honoured
    (see `quiet_tensorflow`) and counts as quiet; 0, or a value TensorFlow
    would not read as a level, counts as verbose, as does a positive
    `TF_CPP_MAX_VLOG_LEVEL`.
    """
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    if MIN_LEVEL_ENV in environ:
        level = _int_or_none(environ[MIN_LEVEL_ENV])
        if level is None or level < 1:
            return True
    if MAX_VLOG_ENV in environ:
        vlog = _int_or_none(environ[MAX_VLOG_ENV])
        if vlog is None or vlog > 0:
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
    environ.setdefault(MIN_LEVEL_ENV, QUIET_LEVEL)  # the user's level wins
    if environ is os.environ:  # the real process: its import of TensorFlow
        install_startup_filter(min_log_level(environ))
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


# absl / glog C++ line: severity letter, MMDD, time, thread id, file:line]
# (before absl is initialised the date is 0000 and the time 00:00:<epoch s>);
# a `.py` file is Python's absl logging, not the native libraries: kept.
ABSL_LINE = re.compile(rb"^([IWEF])\d{4} [\d:.]+ +\d+ [^\s\]]+(?<!\.py):\d+\] ")
ABSL_PRE_INIT = b"WARNING: All log messages before absl::InitializeLog() is called"
SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}  # TF_CPP_MIN_LOG_LEVEL's scale


def drop_native_lines(data, level):
    """`data` (bytes) without absl C++ lines below `level` (TF_CPP_MIN_LOG_LEVEL's scale).

    absl's pre-initialisation notice (a WARNING) goes at level >= 1 along with
    the INFO lines it announces. Every other line, Python's warnings and
    tracebacks included, is kept byte for byte and in order. A multi-line C++
    message loses its first line only (TensorFlow's start-up lines are one
    line each).
    """
    kept = []
    for line in data.splitlines(keepends=True):
        match = ABSL_LINE.match(line)
        if match and SEVERITY[match.group(1)] < level:
            continue
        if line.startswith(ABSL_PRE_INIT) and level >= 1:
            continue
        kept.append(line)
    return b"".join(kept)


class NativeStartupFilter:
    """Context manager: file descriptor 2 captured, then written back filtered.

    What native code writes to stderr inside it (absl's C++ logging writes to
    the descriptor, past `sys.stderr`) goes to an unnamed temporary file; on
    exit, normal or not, it is written to the real stderr through
    `drop_native_lines`. A native crash inside would lose the captured bytes:
    keep the block to a library load. Where descriptor 2 cannot be duplicated
    (closed), it does nothing.
    """

    def __init__(self, level):
        self.level = level
        self._saved = self._capture = None

    def __enter__(self):
        try:
            self._saved = os.dup(2)
        except OSError:
            return self
        self._capture = tempfile.TemporaryFile()
        _flush_stderr()
        os.dup2(self._capture.fileno(), 2)
        return self

    def __exit__(self, *exc_info):
        if self._saved is None:
            return False
        _flush_stderr()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._saved = None
        self._capture.seek(0)
        data = drop_native_lines(self._capture.read(), self.level)
        self._capture.close()
        while data:
            data = data[os.write(2, data) :]
        return False


def _flush_stderr():
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass


class _FilteredLoader(importlib.abc.Loader):
    """Runs the wrapped loader's `exec_module` inside a `NativeStartupFilter`."""

    def __init__(self, loader, level):
        self.loader, self.level = loader, level

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with NativeStartupFilter(self.level):
            self.loader.exec_module(module)


class StartupFilterFinder(importlib.abc.MetaPathFinder):
    """`sys.meta_path` hook: the first import of `tensorflow` runs filtered.

    TensorFlow's shared libraries (and their absl start-up lines) load inside
    that import, whichever module (keras, the project's own) asks for it
    first. The hook removes itself once it has served.
    """

    MODULE = "tensorflow"

    def __init__(self, level):
        self.level = level

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.MODULE:
            return None
        remove_startup_filter()
        import importlib.util

        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader, self.level)
        return spec


def install_startup_filter(level):
    """Filters TensorFlow's native start-up lines below `level` (before it loads).

    Returns False when TensorFlow is already loaded (its lines are out).
    """
    if StartupFilterFinder.MODULE in sys.modules:
        return False
    remove_startup_filter()
    sys.meta_path.insert(0, StartupFilterFinder(level))
    return True


def remove_startup_filter():
    sys.meta_path[:] = [
        f for f in sys.meta_path if not isinstance(f, StartupFilterFinder)
    ]


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
