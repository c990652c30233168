"""optuna-dashboard (the `dashboard` extra) serves a real search study over HTTP."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.search import samplers, spaces
from deeplab_dpc.search import study as study_lib

pytest.importorskip("optuna_dashboard", reason="the 'dashboard' extra is needed")


def _score(spec, trial):
    """The user attrs of `stages.make_proxy_objective` (score, cost), computed cheaply."""
    del trial
    separable = sum(spec_lib.op_name(b).startswith("sep") for b in spec)
    params = sum(1000 + 100 * spec_lib.op_name(b).startswith("conv") for b in spec)
    attrs = {"proxy_miou": separable / len(spec), "params": params, "madds": 9 * params}
    return {"value": attrs["proxy_miou"], "user_attrs": attrs}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=60.0):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def _dashboard_command():
    script = os.path.join(os.path.dirname(sys.executable), "optuna-dashboard")
    return [script] if os.path.exists(script) else [shutil.which("optuna-dashboard")]


def test_dashboard_serves_each_trials_cell_cost_and_score(tmp_path):
    url = study_lib.default_storage_url(tmp_path)
    storage = study_lib.open_storage(url)
    space = spaces.get_space("full", 3)
    study = study_lib.create_study(storage, "dpc_search", [(0, {}), (1, {})], {})
    study_lib.run_worker(
        study, storage, _score, samplers.get_sampler("random", space), 0, 0.05
    )
    port = _free_port()
    server = subprocess.Popen(
        [*_dashboard_command(), url, "--host=127.0.0.1", f"--port={port}", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/api/studies"
        summaries = _get(base)["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["dpc_search"]
        detail = _get(f"{base}/{summaries[0]['study_id']}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == [t.number for t in study.get_trials()] == [0, 1]
    for trial in study.get_trials():
        got = served[trial.number]
        attrs = {a["key"]: a["value"] for a in got["user_attrs"]}
        assert got["state"] == "Complete" and got["values"] == [trial.value]
        assert attrs[study_lib.KEY] == trial.user_attrs[study_lib.KEY]
        spec = json.loads(attrs[study_lib.SPEC])
        assert spec_lib.canonical_key(spec) == trial.user_attrs[study_lib.KEY]
        for name in ("params", "madds", "proxy_miou"):
            assert float(attrs[name]) == pytest.approx(trial.user_attrs[name])
        assert int(attrs["params"]) > 0 and int(attrs["madds"]) > 0
