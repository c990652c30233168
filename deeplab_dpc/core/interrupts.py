"""SIGINT and SIGTERM for every command line and loop: stop soon, cleanly, one line.

TensorFlow-free and importable from every layer. Entry points run their main
under `guard(prog)`; library loops need nothing unless they hold state that
must be saved first (training) or records that must not be half-written
(trials).

How a signal is handled:
- Outside a `deferred()` block the handler raises `Interrupted` in the main
  thread at once, as Python's own SIGINT does (`KeyboardInterrupt` is its
  base class, so `except KeyboardInterrupt` clauses keep working). Cleanup in
  `finally` blocks runs; staged outputs are removed, never renamed in place.
- Such a raise can land where Python cannot raise (a garbage-collector
  callback, `__del__`) and is lost; the signal stays recorded, and the loops
  that run outside `deferred()` call `check()` at each step, which raises it
  again: the DPC search's proxy training (each step) and study (between
  trials), the feature cache and the evaluator.
- Inside `deferred()` (the training loop, and the Auto-DeepLab search loop)
  the handler only records the signal; the loop calls `requested()` between
  steps, saves, and raises `Interrupted`.
- Python runs signal handlers only in the main thread between bytecodes, so
  while the main thread is inside one long TensorFlow call (a training step,
  a TFLite conversion) nothing above can run until the call returns. This is
  why a search worker given SIGINT mid-step did not stop within 15 s. A
  watchdog thread, woken at once through `signal.set_wakeup_fd`, gives the main
  thread `grace_seconds`; if it has not stopped by then (or on a second
  signal) the watchdog runs the `on_abort` callbacks (a running trial is
  marked failed and requeued) and ends the process with `os._exit(128 +
  signal)`, printing one line. State saved before the last checkpoint is
  kept; the step in flight is lost.

Exit codes: a clean stop after SIGTERM exits 0 (a preempted job that saved is
not a failure, as before), after SIGINT 130 (the shell's Ctrl-C convention); a
stop forced by the watchdog exits 128 + the signal number (130, 143).
"""

import contextlib
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_GRACE_SECONDS = 10.0
CLEAN_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 0}


def signal_name(signum):
    return signal.Signals(signum).name


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by SIGINT or SIGTERM; `detail` says what was kept."""

    def __init__(self, signum, detail=""):
        super().__init__(signum, detail)
        self.signum, self.detail = signum, detail

    @property
    def exit_code(self):
        return CLEAN_EXIT_CODES.get(self.signum, 128 + self.signum)

    def __str__(self):
        text = f"stopped by {signal_name(self.signum)}"
        return f"{text}: {self.detail}" if self.detail else text


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.installed = False
        self.previous = {}
        self.signum = None  # the first signal received
        self.deferred = 0  # depth of deferred() blocks
        self.aborts = []  # callbacks run by the watchdog before a forced exit
        self.grace = DEFAULT_GRACE_SECONDS
        self.prog = None
        self.wakeup = None  # (read fd, write fd, previous wakeup fd)
        self.finished = threading.Event()


_state = _State()


def requested():
    """The signal number asked to stop this process, or None."""
    return _state.signum


def check(detail=""):
    """Raises `Interrupted` when a stop was requested (a safe point of a loop)."""
    if _state.signum is not None:
        raise Interrupted(_state.signum, detail)


def _handler(signum, frame):
    del frame
    if _state.signum is not None:
        return  # a second signal: the watchdog ends the process
    _state.signum = signum
    if _state.deferred == 0:
        raise Interrupted(signum)


def _forced_exit(signum, why):
    for callback in list(reversed(_state.aborts)):
        try:
            callback()
        except Exception as e:  # noqa: BLE001 - exiting anyway; say why, once
            print(f"{_prog()}: error: while stopping: {e}", file=sys.stderr)
    print(f"{_prog()}: stopped by {signal_name(signum)}: {why}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(128 + signum)


def _watch(read_fd):
    """The watchdog thread: a signal starts the grace period; a second one ends it."""
    try:
        _watch_fd(read_fd)
    finally:
        os.close(read_fd)


def _watch_fd(read_fd):
    while True:
        try:
            data = os.read(read_fd, 1)
        except OSError:
            return
        if not data or _state.finished.is_set():
            return
        signum = data[0]
        if signum not in SIGNALS:
            continue
        if _wait_for_second_signal(read_fd, _state.grace):
            why = "second signal, exiting now"
        else:
            why = f"no safe point within {_state.grace:g} s, exiting now"
        if _state.finished.is_set():
            return
        _forced_exit(
            _state.signum or signum, why + "; work since the last save is lost"
        )


def _wait_for_second_signal(read_fd, seconds):
    import select

    deadline = _monotonic() + seconds
    while True:
        left = deadline - _monotonic()
        if left <= 0 or _state.finished.is_set():
            return False
        ready, _, _ = select.select([read_fd], [], [], min(left, 0.5))
        if ready:
            data = os.read(read_fd, 1)
            if data and data[0] in SIGNALS:
                return True


def _monotonic():
    import time

    return time.monotonic()


def _prog():
    if _state.prog:
        return _state.prog
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name or "deeplab_dpc"


def install(grace_seconds=DEFAULT_GRACE_SECONDS, prog=None):
    """Installs the handlers and the watchdog (main thread only); False if it cannot."""
    if _state.installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    _state.grace, _state.prog, _state.signum = float(grace_seconds), prog, None
    _state.finished.clear()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _state.wakeup = (read_fd, write_fd, previous_fd)
    for signum in SIGNALS:
        _state.previous[signum] = signal.signal(signum, _handler)
    _state.previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable
    threading.Thread(
        target=_watch, args=(read_fd,), name="interrupts-watchdog", daemon=True
    ).start()
    _state.installed = True
    return True


def reinstall():
    """Puts the handlers back after native code replaced them; False if not installed.

    TensorFlow's coordination service (MultiWorkerMirroredStrategy) creates a
    SIGTERM `PreemptionNotifier` that calls `std::signal(SIGTERM, ...)`
    (`xla/tsl/distributed_runtime/preemption/preemption_notifier.cc`), which
    replaces Python's C-level handler: a SIGTERM then only sets a flag inside
    TensorFlow and the process trains on. `signal.signal` installs Python's
    again; Python never saw the replacement, so its records stay right.
    """
    if (
        not _state.installed
        or threading.current_thread() is not threading.main_thread()
    ):
        return False
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    return True


def _unraisable(info):
    """Silences an `Interrupted` raised where Python cannot raise (a GC callback).

    The signal stays recorded; the next `check()` of a loop raises it again.
    """
    if isinstance(info.exc_value, Interrupted):
        return
    _state.previous_hook(info)


def uninstall():
    """Restores the previous handlers; the watchdog exits."""
    if not _state.installed:
        return
    sys.unraisablehook = _state.previous_hook
    for signum, previous in _state.previous.items():
        signal.signal(signum, previous)
    read_fd, write_fd, previous_fd = _state.wakeup
    signal.set_wakeup_fd(previous_fd)
    _state.finished.set()
    os.write(write_fd, b"\0")  # wakes the watchdog, which sees `finished`
    os.close(write_fd)
    _state.previous, _state.wakeup, _state.installed = {}, None, False
    _state.signum = None


@contextlib.contextmanager
def handled(grace_seconds=DEFAULT_GRACE_SECONDS):
    """Installs the handlers for the block unless they are already installed."""
    mine = not _state.installed and install(grace_seconds)
    try:
        yield
    finally:
        if mine:
            uninstall()


@contextlib.contextmanager
def deferred():
    """Within the block a signal is only recorded; the code polls `requested()`."""
    with _state.lock:
        _state.deferred += 1
    try:
        yield
    finally:
        with _state.lock:
            _state.deferred -= 1


@contextlib.contextmanager
def on_abort(callback):
    """Registers `callback` to run (in the watchdog thread) before a forced exit."""
    _state.aborts.append(callback)
    try:
        yield
    finally:
        _state.aborts.remove(callback)


def once(fn):
    """`fn` wrapped to run at most once, from whichever thread comes first."""
    lock, done = threading.Lock(), []

    def run():
        with lock:
            if done:
                return
            done.append(True)
            fn()

    return run


def guard(main, prog=None, grace_seconds=DEFAULT_GRACE_SECONDS):
    """Runs `main()` with the handlers; `Interrupted` is one line and its exit code."""
    install(grace_seconds, prog)
    try:
        return main()
    except Interrupted as e:
        _state.finished.set()  # the watchdog must not race the clean exit
        print(f"{_prog()}: {e}", file=sys.stderr)
        _exit_now(e.exit_code)


def _exit_now(code):
    """Flushes the logs and exits without the interpreter's teardown.

    Everything worth keeping is saved and closed by now; tearing down
    TensorFlow's objects (garbage-collecting a model, stopping tf.data
    threads) took 20-30 s on a loaded 2-core machine, so a stopped command
    would outlive its signal by that long.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
