"""bench/device_check.py: exit 2 without a GPU, budgets, and --reduced on CPU."""

import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "bench", "device_check.py")
# No TF_CPP_MIN_LOG_LEVEL: the console must stay quiet on its own.
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")},
    "CUDA_VISIBLE_DEVICES": "",
}
CASES = [
    "train_fp32", "train_bf16", "train_fp16", "train_fp32_xla", "train_bf16_xla",
    "train_fp16_xla", "auto_deeplab_L12F8", "input_pipeline", "end_to_end",
    "xception71_769", "proxy", "export", "mirrored",
]  # fmt: skip


def _run(tmp_path, *args, timeout=600):
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=tmp_path, env=ENV,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_no_gpu_is_one_line_and_exit_2_within_a_minute(tmp_path):
    start = time.monotonic()
    result = _run(tmp_path, timeout=120)
    seconds = time.monotonic() - start
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("device_check: no GPU visible to TensorFlow ")
    assert "--allow_cpu" in lines[0]
    assert not (tmp_path / "device_check.json").exists()
    # A minute is the contract; the limit here allows for a loaded host.
    assert seconds < 120


def test_out_of_budget_cases_are_skipped_with_a_note_in_the_json(tmp_path):
    out = tmp_path / "figures.json"
    result = _run(tmp_path, "--reduced", "--budget_s=1", f"--output_json={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert list(figures["cases"]) == CASES
    assert figures["device"]["accelerator"] == "cpu"
    assert figures["device"]["cuda_build"] in (True, False)
    for name, case in figures["cases"].items():
        if name.endswith("_xla"):
            assert case["status"].startswith("skipped: reduced mode"), case
        elif name.startswith("train_fp16"):
            assert case["status"] == "skipped: fp16 mixed precision needs a GPU"
        else:
            assert case["status"].startswith("skipped: "), case
            assert "left of --budget_s=1, the case's budget is" in case["status"]
    assert "| train_fp32 | - | - | - | - | skipped: " in result.stdout


def test_a_case_past_its_budget_is_stopped_and_recorded(tmp_path):
    out = tmp_path / "figures.json"
    result = _run(
        tmp_path, "--reduced", "--cases=train_fp32,export", "--case_budget_s=2",
        f"--output_json={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    cases = json.loads(out.read_text())["cases"]
    assert list(cases) == ["train_fp32", "export"]
    for case in cases.values():
        assert case["status"] == "skipped: stopped at its budget of 2 s", case


def test_unknown_case_is_one_line(tmp_path):
    result = _run(tmp_path, "--reduced", "--cases=train_fp64", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "device_check: --cases: unknown ['train_fp64']; known: " + ", ".join(CASES)
    ]


# Slow: every case builds and traces a model in its own subprocess, about 10
# minutes on this 2-core CPU under load.
@pytest.mark.slow
def test_reduced_device_check_writes_every_figure(tmp_path):
    out = tmp_path / "device_check.json"
    result = _run(
        tmp_path, "--reduced", "--budget_s=3000", "--case_budget_s=600",
        f"--output_json={out}", timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["mode"] == "reduced"
    assert figures["device"]["accelerator"] == "cpu" and figures["device"]["gpus"] == []
    cases = figures["cases"]
    assert list(cases) == CASES
    for name in CASES:
        if "fp16" in name or "xla" in name:
            assert cases[name]["status"].startswith("skipped: "), cases[name]
            continue
        case = cases[name]
        assert case["status"] == "ok", (name, case)
        assert case["peak_host_rss_mb"] > 0
        assert case["peak_device_mb"] is None  # CPU: no allocator statistics
        if name != "input_pipeline":
            assert case["compile_s"] > 0 and case["ms_per_step"] > 0
            batch = case.get("batch", 1)
            if name not in ("auto_deeplab_L12F8", "proxy"):
                assert case["images_per_s"] * case["ms_per_step"] / 1000 == (
                    pytest.approx(batch)
                )
    placement = cases["train_fp32"]["placement"]
    assert placement["device_type"] == "CPU" and placement["op_types"] > 20
    assert placement["ops_without_kernel"] == []
    assert placement["strict_placement_run"] == "ok"
    assert cases["train_fp32"]["loss"] > 0
    assert cases["xception71_769"]["model"] == "xception_71"
    assert cases["mirrored"]["strategy"] == "mirrored"
    pipeline = cases["input_pipeline"]
    assert pipeline["one_core_images_per_s"] > 0 and pipeline["record_size"] == [
        64,
        128,
    ]
    proxy = cases["proxy"]
    assert proxy["candidates_per_hour_150"] * proxy["seconds_per_candidate_150"] == (
        pytest.approx(3600)
    )
    assert proxy["seconds_per_candidate_30k"] > proxy["seconds_per_candidate_150"]
    assert cases["auto_deeplab_L12F8"]["case"] == "L2F4c33b2"
    assert "| train_fp32 |" in result.stdout and "| export |" in result.stdout
