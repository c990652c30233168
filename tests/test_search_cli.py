"""search.py: bad inputs give one line on stderr and exit code 2; the report stage."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from search_checks import write_tiny_cache

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.search import report, rerank, samplers, spaces
from deeplab_dpc.search import study as study_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _search(tmp_path, *args):
    command = [
        sys.executable,
        os.path.join(REPO, "search.py"),
        f"--workdir={tmp_path}",
        *args,
    ]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)


def _array_cache(path):
    rng = np.random.default_rng(0)
    split = (rng.normal(size=(4, 3, 3, 8)), rng.integers(0, 3, size=(4, 33, 33)))
    write_tiny_cache(path, {"train": split, "val": split})
    return str(path)


def _bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    cache = _array_cache(tmp_path / "cache")
    return [
        (
            ["--sampler=vizier"],
            "--sampler: unknown 'vizier'; known: random, paper, evolution",
        ),
        (["--space=tiny"], "--space: unknown 'tiny'; known: full, aspp_subsets"),
        (["--stages=run,fly"], "--stages: unknown ['fly']"),
        (["--num_trials=many"], "num_trials"),
        (
            ["--stages=run", "--storage=postgresql://u:pw@127.0.0.1:1/db"],
            "cannot open storage postgresql://u:***@127.0.0.1:1/db",
        ),
        (
            [f"--cache_dir={tmp_path / 'empty'}", "--stages=run"],
            "empty or incomplete feature cache",
        ),
        (
            [f"--cache_dir={cache}", "--stages=run", "--model_variant=xception_65"],
            "made with another backbone (model_variant=mobilenet_v2)",
        ),
        (["--dataset=cityscapes", "--stages=cache"], "--tf_initial_checkpoint: needed"),
        (["--stages=report"], "no study 'dpc_search'"),
        (["--pruner=hyperband"], "--pruner=hyperband needs --proxy_eval_every > 0"),
        (["--cache_dir=ram://cache"], "--cache_dir: the feature cache is memory"),
    ]


def test_bad_inputs_are_one_line_and_exit_code_2(tmp_path):
    for args, expected in _bad_inputs(tmp_path):
        result = _search(tmp_path / "work", *args)
        assert result.returncode == 2, (args, result.stderr[-1000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr[-1000:])
        assert lines[0].startswith("search.py: error: "), lines[0]
        assert expected in lines[0], (args, lines[0])


def _score(spec, trial):
    del trial
    value = sum(spec_lib.op_name(b).startswith("sep") for b in spec) / len(spec)
    return {"value": value, "user_attrs": {"params": 1000 * len(spec), "madds": 10**6}}


def _random_search(tmp_path, num_trials):
    """(storage, study): `num_trials` random ASPP subsets scored by `_score`."""
    storage = study_lib.open_storage(study_lib.default_storage_url(tmp_path))
    space = spaces.get_space("aspp_subsets")
    slots = [(i, {}) for i in range(num_trials)]
    search = study_lib.create_study(storage, "s", slots, {})
    study_lib.run_worker(
        search, storage, _score, samplers.get_sampler("random", space), 0, 0.05
    )
    return storage, search


def test_report_writes_leaderboard_best_json_and_figures(tmp_path):
    storage, search = _random_search(tmp_path, 8)
    top = rerank.top_candidates(search, 3)
    reranked = study_lib.create_study(storage, "s.rerank", rerank.rerank_slots(top), {})
    # Re-rank score: fewer branches is better here, so the winner is not proxy rank 1.
    study_lib.run_worker(
        reranked, storage, lambda spec, t: {"value": 1.0 / len(spec)}, None, 0, 0.05
    )
    summary = report.write_report(search, reranked, str(tmp_path / "report"))
    out = tmp_path / "report"
    rows = (out / "leaderboard.csv").read_text().splitlines()
    assert rows[0] == ",".join(report.COLUMNS) and len(rows) == 1 + 8
    best = spec_lib.load_spec(out / "best.json")
    expected = max(top, key=lambda c: (1.0 / len(c.spec), -top.index(c)))
    assert spec_lib.canonical_key(best) == expected.key == summary["best"]["key"]
    assert summary["best"]["chosen_by"] == "rerank" and summary["num_reranked"] == 3
    pairs = rerank.rerank_pairs(search, reranked)
    assert summary["spearman_rho"] == rerank.spearman(pairs)
    for name in ("proxy_scores.png", "proxy_vs_rerank.png", "best_cell.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["num_cells"] == 8
    assert summary["spearman_n"] == 3  # rho is never given without its n
    board = (out / "leaderboard.md").read_text()
    assert "| 1 |" in board
    # The Markdown explains every column and the cell notation before the table.
    legend, table = board.split("| " + " | ".join(report.COLUMNS) + " |")
    for column in report.COLUMNS:
        assert f"| {column} | " in legend, column
    assert "Cell notation" in legend and "sep3x3rHxW" in legend
    # The same report on a remote file system (TensorFlow's in-memory ram://).
    import tensorflow as tf

    remote = "ram://test_search_report"
    try:
        report.write_report(search, reranked, remote)
        with tf.io.gfile.GFile(f"{remote}/leaderboard.csv", "rb") as f:
            assert f.read() == (out / "leaderboard.csv").read_bytes()
        assert sorted(tf.io.gfile.listdir(remote)) == sorted(os.listdir(out))
    finally:
        tf.io.gfile.rmtree(remote)


def test_report_gives_the_per_class_iou_of_each_reranked_cell(tmp_path):
    storage, search = _random_search(tmp_path, 6)
    top = rerank.top_candidates(search, 2)
    reranked = study_lib.create_study(storage, "s.rerank", rerank.rerank_slots(top), {})

    def fine_tune(spec, trial):
        del trial
        ious = {"background": 0.9, "disc": round(0.1 * len(spec), 4)}
        return {"value": sum(ious.values()) / 2, "user_attrs": {"per_class_iou": ious}}

    study_lib.run_worker(reranked, storage, fine_tune, None, 0, 0.05)
    summary = report.write_report(search, reranked, str(tmp_path / "report"))
    board = (tmp_path / "report" / "leaderboard.md").read_text()
    section = board.split("## Per-class IoU of the re-ranked cells")[1]
    assert "| rank | key | rerank_miou | background | disc |" in section
    rows = [
        line
        for line in section.splitlines()
        if line.startswith("| ") and "key" not in line
    ]
    assert len(rows) == 2  # one per re-ranked cell, best re-rank score first
    for line, cell in zip(rows, sorted(top, key=lambda c: -len(c.spec))):
        assert f"| {cell.key} | " in line
        assert line.endswith(f"| 0.9000 | {0.1 * len(cell.spec):.4f} |"), line
    best = summary["best"]
    assert best["per_class_iou"]["disc"] == round(
        0.1 * max(len(c.spec) for c in top), 4
    )


def test_rerank_lines_name_their_search_trial_and_rho_its_n(tmp_path, caplog):
    import logging

    from deeplab_dpc.search import stages

    storage, search = _random_search(tmp_path, 6)
    top = rerank.top_candidates(search, 3)
    caplog.set_level(logging.INFO)
    # absl's logger may have been quieted by an earlier test's console setup.
    caplog.set_level(logging.INFO, logger="absl")
    pairs, rho = stages.stage_rerank(
        storage, "s", 3, lambda spec, t: {"value": 1.0 / len(spec)}
    )
    assert len(pairs) == 3 and rho == rerank.spearman(pairs)
    text = caplog.text
    numbers = ", ".join(str(c.number) for c in top)
    assert f"Re-ranking 3 cells end to end: search trials {numbers}" in text
    for c in top:  # each re-rank line names the search trial it re-ranks
        assert f"(search trial {c.number}) | {c.key} |" in text, c.key
    assert "(n = 3)" in text


def test_spearman_known_answers():
    assert rerank.spearman([("a", 0.1, 0.3), ("b", 0.2, 0.2), ("c", 0.3, 0.1)]) == -1.0
    assert rerank.spearman([("a", 0.1, 0.1), ("b", 0.2, 0.3), ("c", 0.3, 0.2)]) == 0.5
    assert rerank.spearman([("a", 0.1, 0.1)]) is None


def test_spearman_of_a_constant_side_is_none_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning would raise
        assert (
            rerank.spearman([("a", 0.2, 0.1), ("b", 0.2, 0.3), ("c", 0.2, 0.2)]) is None
        )
        assert rerank.spearman([("a", 0.1, 0.4), ("b", 0.2, 0.4)]) is None


@pytest.mark.slow
def test_default_command_completes_the_main_job(tmp_path):
    """`python search.py` with no flags, as the README's first command (~10 min)."""
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "search.py")], cwd=tmp_path, env=ENV,
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "workdir" / "search" / "report"
    for name in ("leaderboard.md", "leaderboard.csv", "best.json", "summary.json",
                 "proxy_scores.png", "proxy_vs_rerank.png", "best_cell.png"):  # fmt: skip
        assert (out / name).exists(), name
    spec_lib.load_spec(out / "best.json")
    assert str(out) in result.stdout


@pytest.mark.parametrize("fine_tune", [True, False])
def test_rerank_passes_its_batch_norm_mode_to_the_trainer(
    tmp_path, monkeypatch, fine_tune
):
    from deeplab_dpc.data import registry
    from deeplab_dpc.evaluation import evaluator
    from deeplab_dpc.training import trainer

    seen = {}
    monkeypatch.setattr(
        trainer, "train", lambda cfg, opts, info: seen.update(cfg=cfg, opts=opts)
    )
    per_class = {"sky": 0.5, "road": 0.0}  # what evaluator.evaluate returns, cut short
    results = {"miou": 0.25, "per_class_iou": per_class, "pixel_accuracy": 0.75}
    monkeypatch.setattr(evaluator, "evaluate", lambda *a, **k: results)

    class Cache:
        backbone = {"model_variant": "mobilenet_v2", "output_stride": 16,
                    "depth_multiplier": 0.5}  # fmt: skip
        info = {"checkpoint": "ckpt-0"}

    evaluate = rerank.make_rerank_objective(
        Cache(), registry.get_dataset_info("camvid"), "data", str(tmp_path),
        steps=10, batch_size=2, crop_size=[65, 65], learning_rate=0.01, seed=0,
        fine_tune_batch_norm=fine_tune, freeze_backbone_batch_norm=not fine_tune,
    )  # fmt: skip
    result = evaluate(spec_lib.TOP1, None)
    assert result["value"] == 0.25
    assert result["user_attrs"][rerank.PER_CLASS_IOU] == per_class
    table = os.path.join(result["user_attrs"]["logdir"], "eval", rerank.TABLE_FILENAME)
    assert open(table).read() == evaluator.format_table(results) + "\n"
    assert seen["opts"]["fine_tune_batch_norm"] is fine_tune
    assert seen["opts"]["freeze_backbone_batch_norm"] is not fine_tune
    assert seen["opts"]["tf_initial_checkpoint"] == "ckpt-0"
    assert seen["cfg"]["num_classes"] == 11 and seen["cfg"]["head"] == "dpc"


def test_spread_selection_takes_evenly_spaced_ranks_best_and_worst(tmp_path):
    _, search = _random_search(tmp_path, 31)
    ranked = rerank.top_candidates(search, 31)
    assert len({c.key for c in ranked}) == 31
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)
    spread = rerank.top_candidates(search, 8, "spread")
    # round(i * 30 / 7) for i = 0..7
    assert [ranked.index(c) for c in spread] == [0, 4, 9, 13, 17, 21, 26, 30]
    assert rerank.top_candidates(search, 8) == ranked[:8]
    assert rerank.top_candidates(search, 40, "spread") == ranked
    assert rerank.top_candidates(search, 1, "spread") == ranked[:1]
    with pytest.raises(ValueError, match="must be one of"):
        rerank.top_candidates(search, 3, "bottom")
