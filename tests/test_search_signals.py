"""search.py stopped by SIGTERM / SIGINT in each stage, then resumed (real processes).

One search run on a tiny synthetic dataset (65x65 crops, batch 4), stopped
three times and finished by a fourth process:
- SIGTERM in the backbone pretraining: the pretraining saves a checkpoint and
  the whole command stops (no cache is made from the half-trained backbone);
- SIGINT in a proxy trial (search stage `run`): exit 130, the trial is marked
  failed and requeued, never scored; the pretraining is resumed, not redone;
- SIGTERM in a re-rank candidate: it saves a checkpoint, is marked failed and
  requeued, and its step-N mIoU is not recorded as its score;
- the fourth run resumes the re-rank candidate from its checkpoint and
  finishes with the report.
Each stop must take a few seconds and print one line, no traceback.
"""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from deeplab_dpc.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
STOP_SECONDS = 20  # signal to exit, on a loaded 2-core machine (typically 1-3 s)


def _start(workdir, data, log, *args):
    command = [
        sys.executable, os.path.join(REPO, "search.py"), f"--workdir={workdir}",
        f"--dataset_dir={data}", "--proxy_crop_size=65,65", "--proxy_batch_size=4",
        "--rerank_batch_size=4", "--pretrain_steps=40", "--num_trials=2",
        "--rerank_top_k=1", "--rerank_steps=60", "--heartbeat_interval=1",
        "--grace_period=600", *args,
    ]  # fmt: skip
    out = open(log, "w")
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=ENV)
    out.close()
    return proc


def _wait(proc, log, ready, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise AssertionError(open(log).read()[-3000:])
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"not ready within {timeout}s: {open(log).read()[-3000:]}")


def _stop(proc, log, signum):
    start = time.time()
    proc.send_signal(signum)
    proc.wait(timeout=120)
    seconds = time.time() - start
    text = open(log).read()
    assert seconds < STOP_SECONDS, (seconds, text[-2000:])
    assert "Traceback" not in text, text[-3000:]
    return text


def _trials(db, study):
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT t.trial_id, t.state FROM trials t JOIN studies s"
            " ON t.study_id = s.study_id WHERE s.study_name = ?",
            (study,),
        ).fetchall()
        attrs = con.execute(
            "SELECT trial_id, key FROM trial_user_attributes"
        ).fetchall()
    keys = {}
    for trial_id, key in attrs:
        keys.setdefault(trial_id, set()).add(key)
    return [(state, keys.get(trial_id, set())) for trial_id, state in rows]


def _running(db, study):
    try:
        return any(state == "RUNNING" for state, _ in _trials(db, study))
    except sqlite3.OperationalError:  # tables not made yet
        return False


def _contains(log, pattern):
    return lambda: re.search(pattern, open(log).read()) is not None


@pytest.mark.slow
def test_search_stops_in_every_stage_and_resumes(tmp_path):
    data = tmp_path / "data"
    synthetic.generate_synthetic_dataset(
        str(data), num_train=16, num_val=4, image_size=(65, 65)
    )
    work, db = tmp_path / "work", tmp_path / "work" / "search.db"

    # 1. SIGTERM in the pretraining: a checkpoint, no cache, exit 0.
    log = tmp_path / "1.log"
    proc = _start(work, data, log)
    _wait(proc, log, _contains(log, r"step [4-9]/40"))
    text = _stop(proc, log, signal.SIGTERM)
    assert proc.returncode == 0, text[-2000:]
    saved = re.search(r"search.py: stopped by SIGTERM: checkpoint saved at step (\d+)",
                      text)  # fmt: skip
    assert saved, text[-2000:]
    assert not (work / "cache").exists()
    assert "Feature cache" not in text

    # 2. SIGINT in a proxy trial: resumed pretraining; the trial requeued.
    log = tmp_path / "2.log"
    proc = _start(work, data, log, "--proxy_steps=100000")
    _wait(proc, log, lambda: _running(db, "dpc_search"))
    time.sleep(2)
    text = _stop(proc, log, signal.SIGINT)
    assert proc.returncode == 130, text[-2000:]
    assert re.search(rf"Resumed from \S+ckpt-{saved.group(1)} at step", text)
    assert text.strip().splitlines()[-1].startswith("search.py: stopped by SIGINT")
    trials = _trials(db, "dpc_search")
    assert [s for s, k in trials if "interrupted" in k] == ["FAIL"], trials
    assert not any(s == "COMPLETE" for s, _ in trials)
    assert sum(s == "WAITING" for s, _ in trials) == 2  # the copy and the other slot

    # 3. SIGTERM in the re-ranking: a checkpoint; failed, requeued, no score.
    # The re-rank prints one line per cell; --verbosity=1 (debugging) keeps
    # its training's step and resume lines, which this test reads.
    log = tmp_path / "3.log"
    proc = _start(work, data, log, "--proxy_steps=5", "--verbosity=1")
    _wait(proc, log, _contains(log, r"step (1[2-9]|[2-5]\d)/60"))
    text = _stop(proc, log, signal.SIGTERM)
    assert proc.returncode == 0, text[-2000:]
    saved = re.search(r"search.py: stopped by SIGTERM: checkpoint saved at step (\d+)",
                      text)  # fmt: skip
    assert saved and "rerank" in text.strip().splitlines()[-1], text[-2000:]
    search = _trials(db, "dpc_search")
    assert sum(s == "COMPLETE" for s, _ in search) == 2, search
    reranked = _trials(db, "dpc_search.rerank")
    assert [s for s, _ in reranked] == ["FAIL", "WAITING"], reranked
    assert "interrupted" in reranked[0][1] and "rerank_miou" not in reranked[0][1]

    # 4. The same command again: the candidate resumes; the report is written.
    log = tmp_path / "4.log"
    proc = _start(work, data, log, "--proxy_steps=5", "--verbosity=1")
    proc.wait(timeout=600)
    text = open(log).read()
    assert proc.returncode == 0, text[-3000:]
    assert re.search(rf"Resumed from \S+rerank\S+ckpt-{saved.group(1)} at step", text)
    reranked = _trials(db, "dpc_search.rerank")
    assert [s for s, _ in reranked] == ["FAIL", "COMPLETE"], reranked
    assert (work / "report" / "best.json").exists()
