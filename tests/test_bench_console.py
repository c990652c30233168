"""The bench scripts g3doc shows keep TensorFlow's log lines out of the console too."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "bench").glob("*.py"))
TF_LINES = re.compile(
    r"cpu_feature_guard|absl::InitializeLog|^[IWEF]\d{4} ", re.MULTILINE
)
LOADS_TF = ("tensorflow", "keras", "optuna", "deeplab_dpc")
QUIET_MODULE = "deeplab_dpc.core.console"  # TensorFlow-free


def _quiet_call_and_first_tf_import(path):
    """Line of the module-level `console.quiet_tensorflow()` and of the first TF-loading import."""
    quiet = first_import = None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Expr) and "quiet_tensorflow" in ast.unparse(node):
            quiet = quiet or node.lineno
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        names = [n for n in names if n != QUIET_MODULE]
        if any(n.split(".")[0] == m for n in names for m in LOADS_TF):
            first_import = first_import or node.lineno
    return quiet, first_import


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_every_bench_script_quiets_tensorflow_before_loading_it(path):
    quiet, first_import = _quiet_call_and_first_tf_import(path)
    assert quiet is not None, f"{path.name}: no module-level console.quiet_tensorflow()"
    assert first_import is None or quiet < first_import, (
        f"{path.name}: TensorFlow is imported (line {first_import}) before it is quieted"
        f" (line {quiet})"
    )


def test_a_bench_script_prints_no_tensorflow_lines():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_train_step.py"), "--help"],
        capture_output=True, text=True, timeout=300, env=dict(env, CUDA_VISIBLE_DEVICES=""),
    )  # fmt: skip
    assert "--crop_size" in result.stdout, result.stderr[
        -3000:
    ]  # absl's --help exits 1
    assert not TF_LINES.search(result.stdout + result.stderr), result.stderr[-3000:]
