"""The package's command lines run in a child process, as a user runs them."""

import subprocess
import sys


def run_module(module, *args, timeout=300, cwd=None, env=None):
    """`python -m <module> <args>`; the finished process, its output as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
