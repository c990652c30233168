"""bench/device_check.py --reduced on CPU: every figure is in its JSON, with sane values."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


# Slow (CI runs it after the default run): even reduced, each case builds and
# traces a MobileNetV2 + DPC model and the export traces a SavedModel, about
# 165 s on this 2-core CPU when idle-ish and 10 minutes under load.
@pytest.mark.slow
def test_reduced_device_check_writes_every_figure(tmp_path):
    out = tmp_path / "device_check.json"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "device_check.py"), "--reduced",
         f"--output_json={out}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["mode"] == "reduced"
    assert figures["device"]["accelerator"] == "cpu" and figures["device"]["gpus"] == []
    rows = {(r["strategy"], r["xla"], r["precision"]): r for r in figures["train_step"]}
    expected = {
        ("one_device", x, p) for x in (False, True) for p in ("fp32", "bf16", "fp16")
    }
    assert set(rows) == expected | {("mirrored", False, "fp32")}
    for key in [("one_device", False, "fp32"), ("one_device", False, "bf16"),
                ("mirrored", False, "fp32")]:  # fmt: skip
        row = rows[key]
        assert row["status"] == "ok", row
        assert 0 < row["ms_per_step"] < 600_000 and row["replicas"] == 1
        assert (
            abs(row["images_per_s"] * row["ms_per_step"] / 1000 - row["batch"]) < 1e-6
        )
        assert row["loss"] > 0
    assert rows[("one_device", False, "fp16")]["status"].startswith("skipped: fp16")
    assert rows[("one_device", True, "fp32")]["status"].startswith("skipped: reduced")
    proxy, export = figures["proxy"], figures["export"]
    assert proxy["status"] == "ok" and export["status"] == "ok"
    assert proxy["candidates_per_hour"] * proxy["seconds_per_candidate"] == (
        pytest.approx(3600)
    )
    assert proxy["train_seconds"] > 0 and proxy["steps"] == 3
    assert export["median_ms"] > 0 and export["crop"] == 33
    for line in ("| train one_device | fp32 | False |", "proxy: ", "export: serving"):
        assert line in result.stdout
