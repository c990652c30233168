"""The exit-2 contract of every command line: one line on stderr, exit code 2.

TensorFlow-free and importable from every layer. Library code raises its own
`ValueError` subclasses (`SpecError`, `ModelConfigError`, `CheckpointError`,
...) with a one-line message naming the file, field, shard or record; entry
points turn them into `<prog>: error: <message>` and exit code 2 through
`fail` (or the `user_errors` context manager), never a traceback.
`check_range` is the one finite-range check behind flags, model configs and
training options.
"""

import contextlib
import math
import os
import sys

USAGE_EXIT_CODE = 2


def program_name():
    """The name a command line is known by (`train.py`, `import_weights`, ...)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name or "deeplab_dpc"


def one_line(message):
    """The first non-empty line of `message` (an exception or a string), stripped."""
    text = getattr(message, "message", None) or str(message)
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return type(message).__name__ if isinstance(message, BaseException) else ""


def fail(message, prog=None):
    """Prints `<prog>: error: <first line of message>` on stderr and exits with 2."""
    print(f"{prog or program_name()}: error: {one_line(message)}", file=sys.stderr)
    if "tensorflow" in sys.modules:  # no restore warnings after the error line
        sys.modules["tensorflow"].get_logger().setLevel("ERROR")
    sys.exit(USAGE_EXIT_CODE)


@contextlib.contextmanager
def user_errors(errors=(ValueError, OSError), prog=None):
    """Runs the block; one of `errors` becomes `fail(error)` (exit code 2)."""
    try:
        yield
    except errors as e:
        fail(e, prog)


def _bound(low, high, low_open):
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" <= {high}"
    return f" in {'(' if low_open else '['}{low}, {high}]"


def check_range(name, value, low=None, high=None, low_open=False, error=ValueError):
    """`value` unless it is not a finite number in range: then `error` naming `name`.

    The range is [low, high], or (low, high] with `low_open`; a None bound is
    no bound. None passes (an unset option). `name` is shown as given:
    `--momentum` for a flag, `momentum` for a config field. The message is
    `<name>: must be a finite number in [0.0, 1.0], got nan`; ints are
    compared exactly, however large.
    """
    if value is None:
        return value
    integer = isinstance(value, int) and not isinstance(value, bool)
    try:
        number = value if integer else float(value)
    except (TypeError, ValueError):
        number = math.nan
    finite = integer or math.isfinite(number)
    above = low is None or (number > low if low_open else number >= low)
    if not (finite and above and (high is None or number <= high)):
        bound = _bound(low, high, low_open)
        raise error(f"{name}: must be a finite number{bound}, got {value}")
    return value
