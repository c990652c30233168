"""search.py --pruner: Optuna's pruners on the proxy's intermediate val mIoU."""

import optuna
import pytest
from optuna.trial import TrialState
from test_search_study import _tiny_cache

from deeplab_dpc.search import SearchError, samplers, spaces, stages
from deeplab_dpc.search import study as study_lib


def _storage(tmp_path):
    return study_lib.open_storage(study_lib.default_storage_url(tmp_path))


def _run(tmp_path, pruner, curves):
    """One worker over len(curves) slots; trial n reports curves[n] at steps 1, 2, ...

    As the proxy does, the last report is the final score: no pruning there.
    """
    storage = _storage(tmp_path)
    study_lib.create_study(storage, "s", [(i, {}) for i in range(len(curves))], {})
    study = study_lib.load_study(storage, "s", {}, pruner=pruner)

    def evaluate(spec, trial):
        curve = curves[trial.number]
        for step, value in enumerate(curve, start=1):
            trial.report(value, step)
            if step < len(curve) and trial.should_prune():
                raise optuna.TrialPruned(f"step {step}")
        return {"value": curve[-1]}

    sampler = samplers.get_sampler("random", spaces.FullSpace(2))
    study_lib.run_worker(study, storage, evaluate, sampler, 0, 0.05)
    return study


def test_successive_halving_prunes_below_the_top_half_of_its_rung(tmp_path):
    # reduction factor 2, rung 0 at step 1: a trial goes on when its value is
    # among the best max(1, n // 2) of the n values seen at step 1 (itself
    # included): 0.5 (alone), 0.9 (best of 2) and 0.95 (top 2 of 4) go on,
    # 0.1 (not the best of 3) and 0.05 (not top 2 of 5) are pruned at step 1.
    pruner = stages.make_pruner("successive_halving", eval_every=1, reduction_factor=2)
    firsts = [0.5, 0.9, 0.1, 0.95, 0.05]
    study = _run(tmp_path, pruner, [[v, v, v] for v in firsts])
    trials = study.get_trials()
    pruned = [t.number for t in trials if t.state == TrialState.PRUNED]
    assert pruned == [2, 4]
    for t in trials:
        if t.state == TrialState.PRUNED:
            assert t.value is None and t.intermediate_values == {1: firsts[t.number]}
        else:
            assert t.state == TrialState.COMPLETE and t.value == firsts[t.number]
            assert t.intermediate_values == {1: t.value, 2: t.value, 3: t.value}
    # Pruned trials count as finished slots but never as scores.
    assert study_lib.progress_counts(study) == (5, 5)
    assert [s.number for s in study_lib.scored_history(study)] == [0, 1, 3]


def test_hyperband_prunes_only_bad_candidates(tmp_path):
    pruner = stages.make_pruner("hyperband", eval_every=1, steps=4, reduction_factor=2)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    curves = [[0.8] * 4 if n % 2 == 0 else [0.1] * 4 for n in range(16)]
    study = _run(tmp_path, pruner, curves)
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.number % 2 == 1 for t in pruned)
    assert all(t.state == TrialState.COMPLETE for t in trials if t.number % 2 == 0)
    assert all(t.value is None and len(t.intermediate_values) < 4 for t in pruned)


def test_pruner_settings_are_checked():
    assert isinstance(stages.make_pruner("none"), optuna.pruners.NopPruner)
    with pytest.raises(SearchError, match="needs --proxy_eval_every > 0"):
        stages.make_pruner("hyperband", eval_every=0, steps=100)
    with pytest.raises(
        SearchError, match="--proxy_steps \\(10\\) > --proxy_eval_every"
    ):
        stages.make_pruner("hyperband", eval_every=10, steps=10)
    with pytest.raises(SearchError, match="unknown pruner 'asha'"):
        stages.make_pruner("asha", eval_every=10)


def test_proxy_reports_its_intermediate_val_miou(tmp_path):
    """The real proxy objective: reports every eval_every steps and at the end."""
    cache = _tiny_cache(tmp_path / "cache")
    storage = _storage(tmp_path)
    space = spaces.get_space("full", 1)
    stages.stage_create(storage, "s", 1, cache, space)
    study = study_lib.load_study(
        storage, "s", stages.study_attrs(cache, space),
        pruner=stages.make_pruner("median", eval_every=2),
    )  # fmt: skip
    objective = stages.make_proxy_objective(
        cache, steps=4, batch_size=4, learning_rate=0.01, seed=0, jit_compile=False,
        eval_every=2, memory_limit_bytes=1 << 30,
    )  # fmt: skip
    sampler = samplers.get_sampler("random", space)
    study_lib.run_worker(study, storage, objective, sampler, 0, 0.05)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [2, 4]
    assert trial.intermediate_values[4] == trial.value == trial.user_attrs["proxy_miou"]
    assert 0.0 <= trial.intermediate_values[2] <= 1.0
