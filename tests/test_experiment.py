"""tools/experiment: plans, records, status, report; a real run killed and resumed.

The report's statistics are checked against numbers derived by hand (Welch's
t for two rows of 3 seeds, its p-value from the closed form of Student's t
with 4 degrees of freedom); the run test starts real `experiment run`
processes on a tiny plan over the synthetic dataset, stops the first with
SIGTERM while its first run trains, and checks that the second finishes
every run, each record written once, the cut run resumed from its checkpoint.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from deeplab_dpc.tools import experiment, experiment_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _plan(tmp_path, **overrides):
    plan = {
        "name": "tiny",
        "workdir": str(tmp_path / "work"),
        "train": {
            "dataset_dir": "{workdir}/data",
            "train_crop_size": [33, 33],
            "train_batch_size": 2,
            "depth_multiplier": 0.25,
            "training_number_of_steps": 6,
            "base_learning_rate": 0.02,
            "save_interval_secs": 100000,
            "log_steps": 1,
        },  # fmt: skip
        "rows": [
            {"name": "aspp", "train": {}},
            {
                "name": "top1",
                "train": {"dpc_spec": os.path.join(REPO, "specs/top1.json")},
            },
        ],
        "seeds": [0],
        "curve_every_steps": 3,
        "evaluations": {
            "single_scale": {},
            "ms_flip": {"eval_scales": "0.75,1", "add_flipped_images": True},
        },
        "stats_crop_size": [33, 33],
        "comparisons": [["top1", "aspp"]],
        "setup": [
            {
                "creates": "data",
                "command": [
                    "python",
                    "-c",
                    "import sys; from deeplab_dpc.data import synthetic; "
                    "synthetic.generate_synthetic_dataset(sys.argv[1], num_train=6, "
                    "num_val=2, image_size=(33, 33))",
                    "{workdir}/data",
                ],
            }
        ],  # fmt: skip
    }
    plan.update(overrides)
    folder = tmp_path / "plan"
    folder.mkdir(exist_ok=True)
    path = folder / "plan.json"
    path.write_text(json.dumps(plan))
    return str(path)


def test_plan_grid_and_commands(tmp_path):
    plan = experiment.load_plan(_plan(tmp_path, seeds=[0, 2]))
    assert [r["id"] for r in plan["runs"]] == [
        "aspp-seed0",
        "top1-seed0",
        "aspp-seed2",
        "top1-seed2",
    ]  # fmt: skip (seed-major: a plan cut short has every row at the same seeds)
    args, steps = experiment.train_args(plan, plan["runs"][3], "/w")
    assert steps == 6
    assert "--dataset_dir=/w/data" in args and "--train_crop_size=33,33" in args
    assert "--seed=2" in args and "--save_interval_steps=3" in args
    assert "--max_checkpoints_to_keep=4" in args  # 3, 6 and room for a stop's save
    assert f"--dpc_spec={REPO}/specs/top1.json" in args
    assert "--train_logdir=/w/runs/top1-seed2/train" in args
    assert experiment.flag_args({"add_flipped_images": False}, "/w") == [
        "--noadd_flipped_images"
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rows": []}, "rows: at least one"),
        ({"rows": [{"name": "a"}, {"name": "a"}]}, "not a unique name"),
        ({"curve_every_steps": 0}, "curve_every_steps must be >= 1"),
        ({"evaluations": {}}, "evaluations: at least one"),
        ({"train": {"seed": 3}}, "--seed is set by the tool"),
        ({"comparisons": [["aspp", "nope"]]}, "not a pair of row names"),
        ({"seeds": [-1]}, "seeds: a list of integers >= 0"),
        (
            {"setup": [{"creates": "x"}]},
            "setup[0]: needs 'creates' and a 'command' list",
        ),
    ],
)
def test_bad_plans_name_the_field(tmp_path, change, message):
    with pytest.raises(
        experiment.PlanError, match=message.replace("[", r"\[").replace("]", r"\]")
    ):
        experiment.load_plan(_plan(tmp_path, **change))


def test_bad_plan_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_dpc.tools.experiment", "status", str(bad)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"experiment: error: {bad}: invalid JSON at line 1 column 2: "
        "Expecting property name enclosed in double quotes"
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "deeplab_dpc.tools.experiment", "walk", str(bad)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "usage:" in proc.stderr


def _record(row, seed, miou, curve, per_class):
    return {
        "row": row, "seed": seed, "run": f"{row}-seed{seed}",
        "results": {"single_scale": {"miou": miou, "per_class_iou": per_class}},
        "curve": curve, "seconds_per_step": 1.0, "steps": 600,
        "wall_seconds": {"train": 600.0},
        "host": {"cpu": "test cpu"}, "load": {"mean_1min": 2.0},
        "model": {"params": 2_500_000, "madds": 3_000_000_000, "crop_size": [361, 481]},
    }  # fmt: skip


def test_report_statistics_against_hand_computed_values(tmp_path):
    path = _plan(tmp_path, seeds=[0, 1, 2], evaluations={"single_scale": {}})
    plan = experiment.load_plan(path)
    os.makedirs(plan["results_dir"])
    for seed, (a, b) in enumerate([(0.50, 0.40), (0.52, 0.42), (0.54, 0.44)]):
        for row, miou in (("top1", a), ("aspp", b)):
            record = _record(row, seed, miou, [[3, miou - 0.1], [6, miou]],
                             {"road": miou, "sky": None})  # fmt: skip
            with open(
                os.path.join(plan["results_dir"], f"{row}-seed{seed}.json"), "w"
            ) as f:
                json.dump(record, f)
    # Welch: means 0.52 and 0.42, sample variances 4e-4 each, n = 3:
    # t = 0.10 / sqrt(2 * 4e-4 / 3) = 6.1237, Welch-Satterthwaite df = 4 exactly;
    # Student's t with 4 df: F(t) = 1/2 + 3/4 x (1 - x^2 / 3), x = t / sqrt(4 + t^2).
    t = 0.10 / math.sqrt(2 * 4e-4 / 3)
    x = t / math.sqrt(4 + t * t)
    p = 2 * (1 - (0.5 + 0.75 * x * (1 - x * x / 3)))
    got_t, got_p = experiment_report.welch([0.50, 0.52, 0.54], [0.40, 0.42, 0.44])
    assert got_t == pytest.approx(t, rel=1e-9) and got_p == pytest.approx(p, rel=1e-6)
    assert experiment_report.welch([0.5], [0.4, 0.41]) is None

    page = tmp_path / "page.md"
    page.write_text("before\n<!-- experiment-report:tiny -->\nold\n"
                    "<!-- /experiment-report:tiny -->\nafter\n")  # fmt: skip
    said = experiment_report.report(plan, experiment.read_records(plan), page=str(page))
    assert len(said) == 2
    text = page.read_text()
    assert (
        text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    )
    assert "| top1 | 0, 1, 2 | 2.50 | 3.00 | 1.00 | 10 | 52.00 ± 2.00 |" in text
    assert "| aspp | 0, 1, 2 | 2.50 | 3.00 | 1.00 | 10 | 42.00 ± 2.00 |" in text
    assert (
        f"| top1 vs aspp | single_scale | +10.00 | {t:.2f} | {p:.3f} | top1 better (n = 3, 3) |"
        in text
    )
    assert (
        "| class | aspp | top1 |" in text
        and "| road | 42.0 | 52.0 |" in text
        and "| sky | - | - |" in text
    )
    folder = os.path.dirname(path)
    assert os.path.getsize(os.path.join(folder, "curves.png")) > 10_000
    assert "52.00 ± 2.00" in open(os.path.join(folder, "report.md")).read()

    lines = experiment.status(plan, plan["workdir"])
    assert lines[0].startswith(
        "done     aspp-seed0: val mIoU 0.4000 (single_scale), 10 min"
    )
    assert lines[-1] == "time left: about 0.0 h at the finished runs' pace"


def test_page_without_block_is_refused(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("no block\n")
    with pytest.raises(
        experiment_report.ReportError, match="no block <!-- experiment-report:x -->"
    ):
        experiment_report.update_page(str(page), "x", "body")
    assert page.read_text() == "no block\n"


def _tool(action, plan, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "deeplab_dpc.tools.experiment", action, plan],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, **kw,
    )  # fmt: skip


@pytest.mark.slow
def test_run_killed_mid_training_resumes_and_writes_each_record_once(tmp_path):
    path = _plan(tmp_path)
    plan = experiment.load_plan(path)
    first_train = os.path.join(plan["workdir"], "runs", "aspp-seed0", "train")
    proc = _tool("run", path)
    deadline = time.monotonic() + 600
    while not os.path.exists(os.path.join(first_train, "ckpt-3.index")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint at step 3 in 600 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert out.strip().splitlines()[-1] == "experiment: stopped by SIGTERM", out
    assert (
        not os.listdir(plan["results_dir"])
        if os.path.isdir(plan["results_dir"])
        else True
    )

    proc = _tool("run", path)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert "aspp-seed0: training to step 6 (resuming from step" in out
    assert out.strip().splitlines()[-1] == "tiny: every run has its record"
    records = experiment.read_records(plan)
    assert sorted(records) == ["aspp-seed0", "top1-seed0"]
    assert sorted(os.listdir(plan["results_dir"])) == [
        "aspp-seed0.json",
        "top1-seed0.json",
    ]
    cut, whole = records["aspp-seed0"], records["top1-seed0"]
    assert cut["process_starts"] == 2 and whole["process_starts"] == 1
    # The SIGTERM'd process saved its checkpoint and its time: both count.
    assert cut["timed_steps"] == 6 and whole["timed_steps"] == 6
    for record in (cut, whole):
        assert record["seconds_per_step"] == pytest.approx(  # wall: 0.1 s rounding
            record["wall_seconds"]["train"] / 6, abs=0.01
        )
    for record in records.values():
        assert [s for s, _ in record["curve"]] == [3, 6]
        assert record["results"]["single_scale"]["step"] == 6
        assert record["results"]["ms_flip"]["scales"] == [0.75, 1.0]
        assert record["results"]["ms_flip"]["flip"] is True
        assert 0 <= record["results"]["single_scale"]["miou"] <= 1
        assert record["model"]["params"] > 0 and record["model"]["madds"] > 0
        assert record["train_config"]["seed"] == 0
        assert record["train_config"]["training_number_of_steps"] == 6
        assert record["host"]["cpus"] == os.cpu_count()
    assert (
        whole["model_config"]["head"] == "dpc" and cut["model_config"]["head"] == "aspp"
    )
    log = open(os.path.join(plan["workdir"], "runs", "aspp-seed0", "log.txt")).read()
    assert "Resumed from" in log

    again = _tool("run", path)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "2 of 2 runs have a record; running 0" in out
    status = _tool("status", path)
    out, _ = status.communicate(timeout=120)
    assert out.count("done ") == 2 and "time left: about 0.0 h" in out
