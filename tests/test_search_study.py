"""Optuna-backed search study: slots, claims, reuse, errors, and a killed worker."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from search_checks import (
    assert_each_slot_once_and_killed_trial_retried,
    write_tiny_cache,
)

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.search import samplers, spaces, stages
from deeplab_dpc.search import study as study_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _storage(tmp_path, **kwargs):
    url = study_lib.default_storage_url(tmp_path)
    return study_lib.open_storage(
        url, **{"heartbeat_interval": 1, "grace_period": 3, **kwargs}
    )


def _branch_score(spec, trial):
    """A cheap deterministic score (a real function of the cell, for scheduling tests)."""
    del trial
    calls.append(spec_lib.canonical_key(spec))
    value = sum(spec_lib.op_name(b).startswith("sep") for b in spec) / len(spec)
    return {"value": value, "user_attrs": {"params": len(spec)}}


calls = []


def test_slots_give_exactly_the_requested_distinct_trials(tmp_path):
    calls.clear()
    storage = _storage(tmp_path)
    space = spaces.FullSpace(3)
    sampler = samplers.get_sampler("paper", space, near_best_prob=0.5, top_k=2)
    slots = [(i, {}) for i in range(7)]
    study = study_lib.create_study(storage, "s", slots, {"space": "full"})
    # Creating again (another worker, same command) adds nothing.
    study_lib.create_study(storage, "s", slots, {"space": "full"})
    results = study_lib.run_worker(study, storage, _branch_score, sampler, 0, 0.05)
    trials = study.get_trials()
    assert len(trials) == len(results) == 7
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs[study_lib.SLOT] for t in trials) == list(range(7))
    keys = [t.user_attrs[study_lib.KEY] for t in trials]
    assert len(set(keys)) == 7 and sorted(keys) == sorted(calls)
    for t in trials:
        assert (
            spec_lib.canonical_key(t.user_attrs[study_lib.SPEC])
            == t.user_attrs[study_lib.KEY]
        )
        assert t.user_attrs[study_lib.SECONDS] >= 0
    assert study_lib.progress_counts(study) == (7, 7)


def test_an_evaluated_spec_is_reused_not_retrained(tmp_path):
    calls.clear()
    storage = _storage(tmp_path)
    space = spaces.get_space("aspp_subsets")
    sampler = samplers.get_sampler("random", space)
    study = study_lib.create_study(storage, "s", [(i, {}) for i in range(33)], {})
    study_lib.run_worker(study, storage, _branch_score, sampler, 0, 0.05)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 33
    assert len(calls) == len(set(calls)) == 31  # the whole space, each cell once
    reused = [t for t in trials if study_lib.REUSED_FROM in t.user_attrs]
    assert len(reused) == 2
    for t in reused:
        source = study.trials[t.user_attrs[study_lib.REUSED_FROM]]
        assert source.user_attrs[study_lib.KEY] == t.user_attrs[study_lib.KEY]
        assert source.value == t.value
        assert t.user_attrs["params"] == source.user_attrs["params"]


def test_a_study_made_for_another_cache_is_refused(tmp_path):
    storage = _storage(tmp_path)
    study_lib.create_study(storage, "s", [(0, {})], {"cache": "aaa"})
    with pytest.raises(study_lib.StudyError, match="cache='aaa'.*cache='bbb'"):
        study_lib.load_study(storage, "s", {"cache": "bbb"})
    with pytest.raises(study_lib.StudyError, match="no study 'other'"):
        study_lib.load_study(storage, "other", {})


def test_unreachable_storage_is_one_line_without_password():
    url = "postgresql://user:secret@127.0.0.1:1/nodb"
    with pytest.raises(study_lib.StorageError) as error:
        study_lib.open_storage(url)
    message = str(error.value)
    assert message.startswith(
        "cannot open storage postgresql://user:***@127.0.0.1:1/nodb"
    )
    assert "secret" not in message and "\n" not in message


def test_missing_database_driver_names_the_module_and_the_extra():
    """Optuna's ImportError does not say which driver; ours does (pg8000: not installed)."""
    import importlib.util

    if importlib.util.find_spec("pg8000") is not None:
        pytest.skip("pg8000 is installed here")
    with pytest.raises(study_lib.StorageError) as error:
        study_lib.open_storage("postgresql+pg8000://u:pw@127.0.0.1:1/db")
    assert str(error.value) == (
        "cannot open storage postgresql+pg8000://u:***@127.0.0.1:1/db: no database "
        "driver for this URL (no module 'pg8000'); for postgresql:// install the "
        "'postgres' extra: pip install -e '.[postgres]'"
    )


def test_interrupted_trial_is_requeued_with_its_spec(tmp_path):
    storage = _storage(tmp_path)
    space = spaces.FullSpace(2)
    study = study_lib.create_study(storage, "s", [(0, {})], {})

    def interrupted(spec, trial):
        raise KeyboardInterrupt

    sampler = samplers.get_sampler("random", space)
    with pytest.raises(KeyboardInterrupt):
        study_lib.run_worker(study, storage, interrupted, sampler, 0, 0.05)
    failed, waiting = (
        study.get_trials(states=(TrialState.FAIL,)),
        study.get_trials(states=(TrialState.WAITING,)),
    )
    assert len(failed) == len(waiting) == 1
    assert waiting[0].user_attrs[study_lib.KEY] == failed[0].user_attrs[study_lib.KEY]
    assert waiting[0].user_attrs[study_lib.SLOT] == 0
    calls.clear()
    study_lib.run_worker(study, storage, _branch_score, sampler, 0, 0.05)
    assert calls == [failed[0].user_attrs[study_lib.KEY]]


def _tiny_cache(path):
    rng = np.random.default_rng(0)

    def split(n):
        features = rng.normal(size=(n, 3, 3, 8)).astype(np.float32)
        labels = np.repeat(np.repeat(np.argmax(features[..., :3], -1), 11, 1), 11, 2)
        return features, labels.astype(np.uint8)

    return write_tiny_cache(path, {"train": split(16), "val": split(4)})


def _wait_for_running_trial_of(study, pid, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get(study_lib.WORKER, "")
            if f":{pid}:" in worker and study_lib.KEY in t.user_attrs:
                return t
        time.sleep(0.1)
    raise AssertionError(f"worker {pid} never started a trial")


def test_killed_worker_loses_and_duplicates_nothing(tmp_path):
    """Two search.py workers on one SQLite study; one is SIGKILLed mid-trial."""
    cache = _tiny_cache(tmp_path / "cache")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable, os.path.join(REPO, "search.py"), f"--workdir={tmp_path}",
        f"--cache_dir={tmp_path / 'cache'}", "--num_trials=4", "--proxy_steps=30",
        "--proxy_batch_size=4", "--heartbeat_interval=1", "--grace_period=3",
        "--near_best_top_k=2",
    ]  # fmt: skip
    # The study as `search.py --stages=create` makes it (its default space,
    # seed and study name), created here: the workers are the point.
    stages.stage_create(
        _storage(tmp_path), "dpc_search", 4, cache, spaces.get_space("full", 5), 0
    )
    workers = [
        subprocess.Popen(
            command + ["--stages=run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for _ in range(2)
    ]
    storage = optuna.storages.RDBStorage(study_lib.default_storage_url(tmp_path))
    study = optuna.load_study(study_name="dpc_search", storage=storage)
    try:
        victim = _wait_for_running_trial_of(study, workers[0].pid, timeout=120)
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        _, err = workers[1].communicate(timeout=300)
        assert workers[1].returncode == 0, err.decode()[-2000:]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    complete = assert_each_slot_once_and_killed_trial_retried(
        study.get_trials(), 4, victim, [workers[1].pid]
    )
    assert not any(study_lib.REUSED_FROM in t.user_attrs for t in complete)


def test_median_pruner_stops_a_clearly_bad_candidate(tmp_path):
    storage = _storage(tmp_path)
    study_lib.create_study(storage, "s", [(i, {}) for i in range(8)], {})
    study = study_lib.load_study(
        storage, "s", {}, pruner=optuna.pruners.MedianPruner(n_startup_trials=5)
    )

    def evaluate(spec, trial):
        good = trial.number < 5 or trial.number == 6
        for step in range(1, 4):
            trial.report(0.8 if good else 0.1, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"step {step}")
        return {"value": 0.8 if good else 0.1}

    sampler = samplers.get_sampler("random", spaces.FullSpace(2))
    study_lib.run_worker(study, storage, evaluate, sampler, 0, 0.05)
    states = {t.number: t.state for t in study.get_trials()}
    assert [n for n, s in states.items() if s == TrialState.PRUNED] == [5, 7]
    assert study.trials[5].intermediate_values == {1: 0.1}
    assert study_lib.progress_counts(study) == (8, 8)


def test_workers_starting_together_create_one_study_with_every_slot_once(tmp_path):
    """Fresh SQLite file, 4 processes at once: schema, study and slots made once."""
    code = (
        "import sys; from deeplab_dpc.search import study as s;"
        "st = s.open_storage(s.default_storage_url(sys.argv[1]));"
        "print(len(s.create_study(st, 'x', [(i, {}) for i in range(20)], {}).get_trials()))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e[-500:] for _, e in outputs]
    assert [o.strip() for o, _ in outputs] == ["20"] * 4
    study = optuna.load_study(
        study_name="x", storage=study_lib.default_storage_url(tmp_path)
    )
    assert sorted(t.user_attrs[study_lib.SLOT] for t in study.trials) == list(range(20))
