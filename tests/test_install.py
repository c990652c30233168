"""The install resolves to exactly one TensorFlow distribution, on CPU and on CUDA.

`pip install --dry-run --ignore-installed --report` resolves setup.py against
the package index as a fresh venv would (nothing is installed, and the build
runs in a copy of setup.py, pyproject.toml and README.md under tmp_path, so
nothing is written into the repository). Two distributions that both ship
the `tensorflow/` package (as `tensorflow-cpu` plus `tensorflow[and-cuda]`
did, through the old `gpu` extra) overwrite each other's files: the test
fails naming them. Skips when the package index cannot be reached.

pip reads each wheel's metadata with HTTP range requests (`--use-feature=
fast-deps`) rather than downloading the wheels, where an index serves no
separate metadata files: the CUDA resolution otherwise downloads TensorFlow's
wheels (22 s and as much CPU on the 2-core machine, 10 s and 7 s with it; the
same 95 distributions). A pip without the feature resolves the slow way.
"""

import functools
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTRAS = "test,postgres,dashboard"  # every extra of setup.py
# Distributions that install the top-level `tensorflow` package.
TENSORFLOW_DISTRIBUTIONS = {
    "tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel",
    "tensorflow-macos", "tensorflow-aarch64", "tensorflow-cpu-aws",
    "intel-tensorflow", "tf-nightly", "tf-nightly-cpu", "tf-nightly-gpu",
}  # fmt: skip
NETWORK_ERRORS = (
    "NewConnectionError", "Network is unreachable", "Temporary failure in name",
    "ConnectTimeoutError", "Max retries exceeded", "Name or service not known",
)  # fmt: skip


def _normalise(name):
    return name.lower().replace("_", "-").replace(".", "-")


def _index_reachable(host="pypi.org", port=443, timeout=5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{host}:{port} unreachable ({e})"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """setup.py with what its metadata reads, outside the repository."""
    why = _index_reachable()
    if why:
        pytest.skip(f"the install test resolves against PyPI: {why}")
    root = tmp_path_factory.mktemp("project")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), root / name)
    (root / "deeplab_dpc").mkdir()
    (root / "deeplab_dpc" / "__init__.py").write_text("")
    return root


def _start(project, tensorflow, report, fast_deps=True):
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("DEEPLAB_DPC_TENSORFLOW", None)
    if tensorflow:
        env["DEEPLAB_DPC_TENSORFLOW"] = tensorflow
    features = ["--use-feature=fast-deps"] if fast_deps else []
    return subprocess.Popen(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
         *features, "--quiet", "--report", str(report), f"{project}[{EXTRAS}]"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _tensorflows(process, report, restart):
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.skip("pip did not resolve within 300 s (a slow package index)")
    if process.returncode != 0 and "fast-deps" in err:  # a pip without the feature
        return _tensorflows(restart(), report, None)
    if process.returncode != 0:
        if any(marker in err for marker in NETWORK_ERRORS):
            pytest.skip(f"the package index failed: {err.strip().splitlines()[-1]}")
        raise AssertionError(f"pip could not resolve: {(out + err)[-3000:]}")
    installs = json.loads(report.read_text())["install"]
    names = {_normalise(item["metadata"]["name"]) for item in installs}
    return sorted(names & TENSORFLOW_DISTRIBUTIONS), names


@pytest.fixture(scope="module")
def resolved(project, tmp_path_factory):
    """{"cpu": ..., "cuda": ...}: both resolutions, run side by side."""
    reports = tmp_path_factory.mktemp("reports")
    starts = {
        kind: functools.partial(
            _start, project, None if kind == "cpu" else kind, reports / f"{kind}.json"
        )
        for kind in ("cpu", "cuda")
    }
    runs = {kind: start() for kind, start in starts.items()}
    return {
        kind: _tensorflows(
            p,
            reports / f"{kind}.json",
            functools.partial(starts[kind], fast_deps=False),
        )
        for kind, p in runs.items()
    }


def test_cpu_install_has_one_tensorflow(resolved):
    """The README's `pip install -e .` (with every extra): one TensorFlow."""
    tensorflows, names = resolved["cpu"]
    assert len(tensorflows) == 1, f"two TensorFlow distributions: {tensorflows}"
    expected = "tensorflow-cpu" if os.uname().machine == "x86_64" else "tensorflow"
    assert tensorflows == [expected]
    assert not {n for n in names if n.startswith("nvidia-")}, "CUDA wheels on CPU"


def test_cuda_install_has_one_tensorflow_with_cuda_wheels(resolved):
    """`DEEPLAB_DPC_TENSORFLOW=cuda pip install -e .`: tensorflow and its CUDA wheels."""
    tensorflows, names = resolved["cuda"]
    assert tensorflows == ["tensorflow"], f"want only tensorflow, got {tensorflows}"
    if sys.platform == "linux" and os.uname().machine == "x86_64":
        for wheel in ("nvidia-cudnn-cu12", "nvidia-cublas-cu12"):
            assert wheel in names, f"{wheel} missing from the CUDA install"


def test_unknown_tensorflow_choice_is_one_line(project):
    env = {**os.environ, "DEEPLAB_DPC_TENSORFLOW": "rocm"}
    result = subprocess.run(
        [sys.executable, "setup.py", "--name"], cwd=project, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "DEEPLAB_DPC_TENSORFLOW: unknown 'rocm'; known: cpu (default), cuda" in (
        result.stderr
    )
