"""Helpers shared by the search tests: a small feature cache, and the checks of
the multi-worker search tests (SQLite and PostgreSQL)."""

from optuna.trial import TrialState

from deeplab_dpc.search import study as study_lib
from deeplab_dpc.search.cache import write_cache_from_arrays


def write_tiny_cache(path, splits, depth_multiplier=0.5, shard_size=256):
    """Writes `splits` ({split: (features, labels)}) as the feature cache of a
    3-class MobileNetV2 at output stride 16; returns the cache."""
    backbone = {
        "model_variant": "mobilenet_v2",
        "output_stride": 16,
        "depth_multiplier": depth_multiplier,
    }
    info = {
        "backbone": backbone,
        "num_classes": 3,
        "ignore_label": 255,
        "dtype": "float16",
    }
    return write_cache_from_arrays(str(path), splits, info, shard_size=shard_size)


def assert_each_slot_once_and_killed_trial_retried(trials, num_slots, victim, pids):
    """Every slot COMPLETE exactly once, the victim the only FAIL, nothing left
    RUNNING or WAITING, and the victim's cell retried once by one of `pids`.

    Returns the COMPLETE trials.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    slots = sorted(t.user_attrs[study_lib.SLOT] for t in complete)
    assert slots == list(range(num_slots))  # none lost, none twice
    assert len({t.user_attrs[study_lib.KEY] for t in complete}) == num_slots
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [victim.number]
    assert not [
        t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)
    ]
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1
    assert retry[0].user_attrs[study_lib.KEY] == victim.user_attrs[study_lib.KEY]
    assert retry[0].user_attrs[study_lib.SLOT] == victim.user_attrs[study_lib.SLOT]
    assert any(f":{pid}:" in retry[0].user_attrs[study_lib.WORKER] for pid in pids)
    return complete
