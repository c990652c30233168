"""Tests for deeplab_dpc.core.artefacts: atomic writes, one permission policy, reading back."""

import json
import os
import stat

import pytest

from deeplab_dpc.core import artefacts


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_json_atomically_with_the_umask_policy(tmp_path):
    old = os.umask(0o027)
    try:
        path = tmp_path / "new" / artefacts.MODEL_CONFIG
        artefacts.write_json({"b": 1, "a": [1, 2]}, path)
        assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
        assert _mode(path) == 0o640  # 0666 less the umask 027
        staged = artefacts.make_staging_dir(str(tmp_path), ".tmp_dir_")
        assert _mode(staged) == 0o750  # 0777 less the umask
    finally:
        os.umask(old)
    assert sorted(os.listdir(path.parent)) == [artefacts.MODEL_CONFIG]  # no temporaries


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "spec.json"
    artefacts.write_text("old\n", path)
    with pytest.raises(TypeError):
        artefacts.write_json({"x": object()}, path)  # not JSON: fails before any write
    with pytest.raises(TypeError):
        artefacts.write_bytes("not bytes", path)  # fails while writing the temporary
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["spec.json"]


def test_install_dir_replaces_an_old_directory(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "stale").write_text("x")
    staged = artefacts.make_staging_dir(str(tmp_path), ".tmp_ckpt_")
    artefacts.write_text("new", os.path.join(staged, "fresh"))
    artefacts.install_dir(staged, str(target))
    assert os.listdir(target) == ["fresh"]
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_reads_train_config_and_results_back(tmp_path):
    assert artefacts.read_train_config(str(tmp_path)) is None
    artefacts.write_json({"dataset": "camvid"}, artefacts.train_config_path(tmp_path))
    assert artefacts.read_train_config(str(tmp_path / "ckpt-3")) == {
        "dataset": "camvid"
    }
    with pytest.raises(artefacts.ArtefactError, match="no results.json here"):
        artefacts.read_results(str(tmp_path))
    (tmp_path / artefacts.RESULTS).write_text('{"miou": 0.5,')
    with pytest.raises(
        artefacts.ArtefactError, match=r"results.json: invalid JSON at line 1"
    ):
        artefacts.read_results(str(tmp_path))
    artefacts.write_json({"miou": 0.5}, artefacts.results_path(tmp_path))
    assert artefacts.read_results(str(tmp_path)) == json.loads('{"miou": 0.5}')


def test_remote_paths_go_through_gfile_and_stay_as_given():
    tf = pytest.importorskip("tensorflow")
    assert artefacts.absolute("gs://bucket/run") == "gs://bucket/run"
    assert artefacts.absolute("run") == os.path.join(os.getcwd(), "run")
    root = "ram://deeplab_dpc_test_artefacts"
    try:
        artefacts.write_json({"a": 1}, f"{root}/d/{artefacts.RESULTS}")
        artefacts.write_json({"a": 2}, f"{root}/d/{artefacts.RESULTS}")  # replaces
        assert artefacts.read_results(f"{root}/d") == {"a": 2}
        assert tf.io.gfile.listdir(f"{root}/d") == [artefacts.RESULTS]  # no temporary
        old = artefacts.make_staging_dir(root, ".tmp_x_")
        artefacts.write_text("stale", f"{old}/stale")
        artefacts.install_dir(old, f"{root}/x")
        staged = artefacts.make_staging_dir(root, ".tmp_x_")
        artefacts.write_text("new", f"{staged}/sub/fresh")
        artefacts.install_dir(staged, f"{root}/x")
        assert not tf.io.gfile.exists(f"{root}/x/stale")
        with artefacts.open_file(f"{root}/x/sub/fresh") as f:
            assert f.read() == "new"
        assert sorted(tf.io.gfile.listdir(root)) == ["d", "x"]  # staging dirs gone
        with pytest.raises(artefacts.ArtefactError, match="no results.json here"):
            artefacts.read_results(f"{root}/missing")
    finally:
        tf.io.gfile.rmtree(root)
