"""The search on a real PostgreSQL server (tests/postgres_server.py): many workers
with one killed, re-rank and report on the same server, an SQLite study moved
there with tools/copy_study."""

import os
import signal
import subprocess
import sys

import optuna
import pytest
from cli_runner import run_module
from search_checks import assert_each_slot_once_and_killed_trial_retried
from test_search_study import _tiny_cache, _wait_for_running_trial_of

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.search import rerank, samplers, spaces, stages
from deeplab_dpc.search import study as study_lib

pytest.importorskip("psycopg", reason="the 'postgres' extra (psycopg 3) is needed")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _score(spec, trial):
    """A cheap deterministic score of the cell (the re-rank and copy tests)."""
    del trial
    value = sum(spec_lib.op_name(b).startswith("sep") for b in spec) / len(spec)
    return {"value": value, "user_attrs": {"params": 1000 * len(spec), "madds": 7}}


def test_three_workers_one_killed_lose_and_duplicate_nothing(tmp_path, postgres_url):
    """Three search.py workers on one PostgreSQL study; one SIGKILLed mid-trial."""
    num_trials = 3  # one per worker, and the killed one retried
    cache = _tiny_cache(tmp_path / "cache")
    storage = study_lib.open_storage(postgres_url, 1, 3)
    assert storage.engine.name == "postgresql"
    space = spaces.get_space("full", 2)
    stages.stage_create(storage, "dpc_search", num_trials, cache, space)
    command = [
        sys.executable, os.path.join(REPO, "search.py"), f"--workdir={tmp_path}",
        f"--cache_dir={tmp_path / 'cache'}", f"--storage={postgres_url}",
        "--stages=run", f"--num_trials={num_trials}", "--num_branches=2",
        "--proxy_steps=10", "--proxy_batch_size=4", "--heartbeat_interval=1", "--grace_period=3", "--near_best_top_k=2",
    ]  # fmt: skip
    workers = [
        subprocess.Popen(
            command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    study = optuna.load_study(study_name="dpc_search", storage=postgres_url)
    try:
        victim = _wait_for_running_trial_of(study, workers[0].pid, timeout=120)
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        for w in workers[1:]:
            _, err = w.communicate(timeout=300)
            assert w.returncode == 0, err.decode()[-2000:]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    complete = assert_each_slot_once_and_killed_trial_retried(
        study.get_trials(), num_trials, victim, [w.pid for w in workers[1:]]
    )
    for t in complete:
        assert 0.0 <= t.value <= 1.0 and t.user_attrs["proxy_steps"] == 10


def test_rerank_and_report_stages_on_postgres(tmp_path, postgres_url):
    storage = study_lib.open_storage(postgres_url)
    space = spaces.get_space("aspp_subsets")
    search = study_lib.create_study(
        storage, "dpc_search", [(i, {}) for i in range(6)], {}
    )
    study_lib.run_worker(
        search, storage, _score, samplers.get_sampler("random", space), 0, 0.05
    )
    pairs, rho = stages.stage_rerank(
        storage, "dpc_search", 3, lambda spec, t: {"value": 1.0 / len(spec)}
    )
    top = rerank.top_candidates(search, 3)
    assert {key for key, _, _ in pairs} == {c.key for c in top}
    for key, proxy_score, rerank_score in pairs:
        spec = next(c.spec for c in top if c.key == key)
        assert (
            rerank_score == 1.0 / len(spec)
            and proxy_score == _score(spec, None)["value"]
        )
    assert rho == rerank.spearman(pairs)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "search.py"), f"--workdir={tmp_path}",
         f"--storage={postgres_url}", "--stages=report"],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    best = max(top, key=lambda c: (1.0 / len(c.spec), -top.index(c)))
    assert f"Best cell: {best.key}" in result.stdout
    assert (
        spec_lib.canonical_key(spec_lib.load_spec(tmp_path / "report" / "best.json"))
        == best.key
    )


def _copy(*args):
    return run_module(
        "deeplab_dpc.tools.copy_study", *args, timeout=120, cwd=REPO, env=ENV
    )


def test_copy_study_moves_an_sqlite_search_to_postgres(tmp_path, postgres_url):
    sqlite_url = study_lib.default_storage_url(tmp_path)
    storage = study_lib.open_storage(sqlite_url)
    search = study_lib.create_study(
        storage, "dpc_search", [(i, {}) for i in range(5)], {"cache": "abc"}
    )
    study_lib.run_worker(
        search, storage, _score, samplers.get_sampler("random", spaces.FullSpace(3)),
        0, 0.05,
    )  # fmt: skip
    stages.stage_rerank(storage, "dpc_search", 2, lambda s, t: {"value": 0.5})
    result = _copy(f"--from_storage={sqlite_url}", f"--to_storage={postgres_url}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dpc_search: 5 trials" in result.stdout
    assert "dpc_search.rerank: 2 trials" in result.stdout
    for name in ("dpc_search", "dpc_search.rerank"):
        src = optuna.load_study(study_name=name, storage=sqlite_url)
        dst = optuna.load_study(study_name=name, storage=postgres_url)
        assert dst.user_attrs == src.user_attrs
        got = [(t.number, t.state, t.value, t.user_attrs) for t in dst.trials]
        assert got == [(t.number, t.state, t.value, t.user_attrs) for t in src.trials]
    # The copy is a working study: a worker on the server joins it and tops it up.
    pg = study_lib.open_storage(postgres_url)
    study = study_lib.create_study(
        pg, "dpc_search", [(i, {}) for i in range(6)], {"cache": "abc"}
    )
    study_lib.run_worker(
        study, pg, _score, samplers.get_sampler("random", spaces.FullSpace(3)), 0, 0.05
    )
    assert study_lib.progress_counts(study) == (6, 6)
    # Copying again is refused: the destination has the study already.
    again = _copy(
        f"--from_storage={sqlite_url}", f"--to_storage={postgres_url}",
        "--study_name=dpc_search",
    )  # fmt: skip
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        "copy_study: error: --to_storage: study 'dpc_search' already exists in the "
        "destination " + study_lib._redact(postgres_url)
    ]
