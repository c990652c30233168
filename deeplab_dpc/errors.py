"""The exit-2 contract of every command line: one line on stderr, exit code 2.

TensorFlow-free and importable from every layer. Library code raises its own
`ValueError` subclasses (`SpecError`, `ModelConfigError`, `CheckpointError`,
...) with a one-line message naming the file, field, shard or record; entry
points turn them into `<prog>: error: <message>` and exit code 2 through
`fail` (or the `user_errors` context manager), never a traceback.
"""

import contextlib
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
