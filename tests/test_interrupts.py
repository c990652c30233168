"""deeplab_dpc.core.interrupts in real processes (no TensorFlow): exit codes, one line, watchdog.

Each case is a small Python process running `interrupts.guard`; the test
sends it a real signal. The stuck case holds the main thread inside one C
call that restarts on EINTR (libc `system()` waiting for its child), as a
long TensorFlow step does, so only the watchdog can end it.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import ctypes, os, sys, time
    from deeplab_dpc.core import interrupts

    mode, marker = sys.argv[1], sys.argv[2]

    def main():
        if mode == "deferred":
            with interrupts.deferred():
                print("ready", flush=True)
                while interrupts.requested() is None:
                    time.sleep(0.01)
                open(marker, "w").write("saved")
                interrupts.check("state saved")
        elif mode == "stuck":
            def abort():
                open(marker, "w").write("aborted")
            with interrupts.on_abort(interrupts.once(abort)):
                print("ready", flush=True)
                started = (marker + ".started").encode()
                ctypes.CDLL(None).system(
                    b"touch " + started + b"; exec sleep 8 </dev/null >/dev/null 2>&1"
                )
            print("returned from the C call", flush=True)
        else:
            try:
                print("ready", flush=True)
                time.sleep(60)
            finally:
                open(marker, "w").write("cleaned up")

    interrupts.guard(main, prog="demo", grace_seconds=1.0)
    """
)


def _start(tmp_path, mode):
    script = tmp_path / "demo.py"
    script.write_text(SCRIPT)
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(marker)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "ready"
    started = tmp_path / "marker.started"
    while mode == "stuck" and not started.exists():  # inside the C call now
        time.sleep(0.01)
    return proc, marker


@pytest.mark.parametrize(
    "mode,signum,code,line,marked",
    [
        ("plain", signal.SIGINT, 130, "demo: stopped by SIGINT", "cleaned up"),
        ("plain", signal.SIGTERM, 0, "demo: stopped by SIGTERM", "cleaned up"),
        (
            "deferred", signal.SIGTERM, 0,
            "demo: stopped by SIGTERM: state saved", "saved",
        ),
        (
            "stuck", signal.SIGTERM, 128 + signal.SIGTERM,
            "demo: stopped by SIGTERM: no safe point within 1 s, exiting now;"
            " work since the last save is lost", "aborted",
        ),
    ],
)  # fmt: skip
def test_signal_stops_with_one_line_and_exit_code(
    tmp_path, mode, signum, code, line, marked
):
    proc, marker = _start(tmp_path, mode)
    start = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    seconds = time.monotonic() - start
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [line]
    assert marker.read_text() == marked
    assert "returned from the C call" not in out
    assert seconds < 5, seconds  # the stuck call alone would take 8 s


def test_second_signal_ends_a_stuck_process_at_once(tmp_path):
    proc, marker = _start(tmp_path, "stuck")
    start = time.monotonic()
    # SIGTERM twice: libc's system() ignores SIGINT while it waits.
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - start < 0.9  # before the 1 s grace period ends
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == [
        "demo: stopped by SIGTERM: second signal, exiting now;"
        " work since the last save is lost"
    ]
    assert marker.read_text() == "aborted"
