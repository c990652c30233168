"""tools/copy_study: what it refuses (the PostgreSQL copy is in test_search_postgres)."""

import optuna
import pytest
from optuna.trial import TrialState

from deeplab_dpc.search import study as study_lib
from deeplab_dpc.tools import copy_study


def test_refuses_missing_source_same_storage_unknown_study_and_running_trials(tmp_path):
    src = study_lib.default_storage_url(tmp_path / "a")
    dst = study_lib.default_storage_url(tmp_path / "b")
    with pytest.raises(copy_study.CopyError, match="no such SQLite file"):
        copy_study.copy_studies(src, dst)
    storage = study_lib.open_storage(src)
    study = study_lib.create_study(storage, "s", [(0, {}), (1, {})], {})
    with pytest.raises(copy_study.CopyError, match="are the same storage"):
        copy_study.copy_studies(src, src)
    with pytest.raises(copy_study.CopyError, match="no study 'x' in .*; it has: s"):
        copy_study.copy_studies(src, dst, ["x"])
    trial_id = study_lib.pop_waiting(study, storage)
    with pytest.raises(copy_study.CopyError, match="1 RUNNING trial"):
        copy_study.copy_studies(src, dst)
    assert not (tmp_path / "b").exists()  # refused before the destination is made
    storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])
    assert copy_study.copy_studies(src, dst) == [
        ("s", 2, {"complete": 1, "waiting": 1})
    ]
    copied = optuna.load_study(study_name="s", storage=dst)
    assert [t.state for t in copied.trials] == [TrialState.COMPLETE, TrialState.WAITING]
    assert copied.user_attrs[study_lib.SLOT_COUNT] == 2


def test_cli_copy_prints_one_line_per_study_and_no_optuna_info(tmp_path):
    """A real `python -m deeplab_dpc.tools.copy_study`: our summary line, not Optuna's."""
    import os
    import subprocess
    import sys

    src = study_lib.default_storage_url(tmp_path / "a")
    dst = study_lib.default_storage_url(tmp_path / "b")
    study_lib.create_study(study_lib.open_storage(src), "s", [(0, {})], {})
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_dpc.tools.copy_study",
         f"--from_storage={src}", f"--to_storage={dst}"],
        capture_output=True, text=True, cwd=repo, timeout=300,
        env={  # as a user's shell: no TF_CPP_MIN_LOG_LEVEL (that asks for verbose)
            **{k: v for k, v in os.environ.items() if not k.startswith("TF_")},
            "PYTHONPATH": repo,
        },
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"s: 1 trials (1 waiting) copied to {dst}\n"
    assert "A new study created" not in result.stderr, result.stderr
