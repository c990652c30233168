"""Fuzzing dataset folders and checkpoints: a one-line error naming the culprit.

Seeded generators build dataset folders (missing, a file, empty, junk names,
shards that are folders, broken links, empty, garbage or truncated shards,
mixed with good ones) and damage a real checkpoint (its model config with
values of every type, its index, data and state files, another model). Each
case must work or raise the documented error class in one line naming the
folder, shard, config file or checkpoint. More cases run under `slow`.
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from deeplab_dpc.data import pipeline, registry
from deeplab_dpc.modeling import checkpoints, model

INFO = registry.custom_dataset_info("tiny", num_classes=4, default_crop_size=(9, 9))
ENTRY_KINDS = ("good", "good", "empty", "garbage", "truncated", "folder", "link", "junk", "hidden")  # fmt: skip


def _good_record():
    image = np.zeros((4, 4, 3), np.uint8)
    feature = {
        "image/encoded": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])
        ),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def make_folder(root, rng, case):
    """A random dataset folder; returns (path, expected error class, culprit, kinds)."""
    path = os.path.join(root, f"d{case}" + ("\u00e9 x" if case % 7 == 0 else ""))
    roll = rng.random()
    if roll < 0.05:
        return path, FileNotFoundError, path, ["missing"]
    if roll < 0.1:
        open(path, "w").close()
        return path, FileNotFoundError, path, ["file"]
    os.makedirs(path)
    n = int(rng.integers(0, 4))
    kinds = [ENTRY_KINDS[int(rng.integers(len(ENTRY_KINDS)))] for _ in range(n)]
    shards = []
    for index, kind in enumerate(kinds):
        name = f"val-{index:05d}-of-{n:05d}.tfrecord"
        target = os.path.join(path, name)
        if kind == "junk":
            target = os.path.join(path, f"notes{index}.txt")
        elif kind == "hidden":
            target = os.path.join(path, f".tmp.{name}.123")
        else:
            shards.append((target, kind))
        if kind == "folder":
            os.makedirs(target)
        elif kind == "link":
            os.symlink(os.path.join(path, "nowhere"), target)
        elif kind == "empty":
            open(target, "wb").close()
        elif kind == "garbage":
            with open(target, "wb") as f:
                f.write(rng.bytes(int(rng.integers(1, 200))))
        else:
            with tf.io.TFRecordWriter(target) as writer:
                for _ in range(2):
                    writer.write(_good_record())
            if kind == "truncated":
                with open(target, "r+b") as f:
                    f.truncate(os.path.getsize(target) - int(rng.integers(1, 20)))
    if not shards:
        return path, FileNotFoundError, path, kinds
    for target, kind in sorted(shards):
        if kind in ("folder", "link", "garbage", "truncated"):
            return path, ValueError, target, kinds
    if all(kind == "empty" for _, kind in shards):
        return path, ValueError, sorted(shards)[0][0], kinds
    return path, None, None, kinds


def judge_error(e, expected, culprit):
    """None when the exception `e` is one of `expected` (a class or a tuple of
    them) and its message is one printable line naming `culprit`, else what is
    wrong with it."""
    message = str(e)
    if not isinstance(e, expected):
        return f"{type(e).__name__}, not the expected class: {message[:100]!r}"
    if not message.isprintable() or culprit not in message:
        return f"does not name {culprit}: {message[:150]!r}"
    return None


def check_folder(path, error, culprit, full_build):
    """None when the folder is handled as documented, else what went wrong."""
    try:
        if full_build:
            ds = pipeline.build_dataset(path, "val", INFO, is_training=False)
        else:  # the build-time checks of build_dataset, without the graph
            pipeline._check_shards(pipeline.find_shards(path, "val"), False)
    except BaseException as e:  # noqa: BLE001 - the point is to catch anything
        if error is None:
            return f"{type(e).__name__} for a good folder: {str(e)[:100]!r}"
        return judge_error(e, error, culprit)
    if error is not None:
        return f"accepted, expected {error.__name__} naming {culprit}"
    if full_build:
        assert len(list(ds)) > 0
    return None


def _run_folders(tmp_path, n, seed):
    rng = np.random.default_rng(seed)
    problems = []
    for case in range(n):
        path, error, culprit, kinds = make_folder(str(tmp_path), rng, case)
        problem = check_folder(path, error, culprit, full_build=case % 50 == 0)
        if problem:
            problems.append(f"{case} {kinds}: {problem}")
    assert not problems, f"{len(problems)} of {n}: " + "; ".join(problems[:4])


def test_dataset_folders_fuzzed(tmp_path):
    _run_folders(tmp_path, 150, seed=14)


@pytest.mark.slow
def test_dataset_folders_fuzzed_more(tmp_path):
    _run_folders(tmp_path, 600, seed=15)


# === Checkpoints ===========================================================

CONFIG_VALUES = [
    None, True, -1, 0, 3, 1e400, -1e400, 2**70, 1.5, "", "x", "mobilenet_v2",
    "aspp", "dpc", [], [1], [[1]], {}, {"a": 1}, "\n", "../../etc/passwd",
]  # fmt: skip


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    config = model.model_config(
        "mobilenet_v2", num_classes=3, head="aspp", atrous_rates=[],
        depth_multiplier=0.35, output_stride=32,
    )  # fmt: skip
    net = model.build_model(config)
    checkpoints.write_model_checkpoint(net, config, str(root / "base"))
    other = dict(config, num_classes=4)
    other.pop("version")
    other_net = model.build_model(model.model_config(**other))
    return str(root / "base"), config, net, other_net


def config_cases(config, seed, n):
    """Yields (model_config.json bytes, description)."""
    rng = np.random.default_rng(seed)
    fields = list(config)
    for case in range(n):
        mutated = dict(config)
        kind = case % 6
        if kind <= 2:
            field = fields[int(rng.integers(len(fields)))]
            mutated[field] = CONFIG_VALUES[int(rng.integers(len(CONFIG_VALUES)))]
            text = json.dumps(mutated, allow_nan=True)
        elif kind == 3:
            mutated.pop(fields[int(rng.integers(len(fields)))])
            mutated["extra_field"] = 1 if rng.random() < 0.5 else None
            text = json.dumps(mutated)
        elif kind == 4:
            value = CONFIG_VALUES[int(rng.integers(len(CONFIG_VALUES)))]
            text = json.dumps(value, allow_nan=True)
        else:
            text = json.dumps(config)
            text = text[: int(rng.integers(len(text)))]
        data = text.encode()
        if rng.random() < 0.1:
            data = b"\xff\xfe" + data
        yield data, f"{case}:{kind}"


def _copy(base, root, name):
    path = os.path.join(root, name)
    shutil.copytree(base, path)
    return path


def check_error(call, culprit):
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - the point is to catch anything
        expected = (checkpoints.CheckpointError, model.ModelConfigError)
        return judge_error(e, expected, culprit)
    return "ok"


def _run_configs(small_checkpoint, tmp_path, seed, n):
    base, config, _, _ = small_checkpoint
    path = _copy(base, tmp_path, "c")
    config_file = os.path.join(path, "model_config.json")
    problems = []
    for data, label in config_cases(config, seed, n):
        with open(config_file, "wb") as f:
            f.write(data)
        result = check_error(
            lambda: checkpoints.read_checkpoint_config(path), config_file
        )
        if result not in (None, "ok"):
            problems.append(f"{label}: {result}")
    assert not problems, f"{len(problems)} of {n}: " + "; ".join(problems[:4])


def test_checkpoint_configs_fuzzed(small_checkpoint, tmp_path):
    _run_configs(small_checkpoint, tmp_path, seed=14, n=200)


def weight_cases(base, seed, n):
    """Yields (how to damage a checkpoint copy, description)."""
    rng = np.random.default_rng(seed)
    names = sorted(os.listdir(base))
    for case in range(n):
        name = [n for n in names if n != "model_config.json"][case % 3]
        how = ["truncate", "flip", "delete", "garbage", "other_model"][(case // 3) % 5]
        yield name, how, int(rng.integers(1 << 30)), f"{case}:{how}:{name}"


def _damage(path, name, how, value):
    target = os.path.join(path, name)
    if how == "delete":
        os.remove(target)
    elif how == "garbage":
        with open(target, "wb") as f:
            f.write(np.random.default_rng(value).bytes(100))
    elif how in ("truncate", "flip"):
        data = bytearray(open(target, "rb").read())
        at = value % max(1, len(data))
        if how == "truncate":
            data = data[:at]
        else:
            data[at] ^= 0xFF
        with open(target, "wb") as f:
            f.write(bytes(data))


def _run_weights(small_checkpoint, tmp_path, seed, n):
    base, _, net, other_net = small_checkpoint
    problems = []
    for name, how, value, label in weight_cases(base, seed, n):
        path = _copy(base, tmp_path, label.replace(":", "_"))
        _damage(path, name, how, value)
        target = other_net if how == "other_model" else net
        result = check_error(
            lambda p=path, t=target: checkpoints.restore_model(p, model=t), path
        )
        # Damage may be harmless (e.g. a flipped byte the state file ignores);
        # another model never is.
        if result is not None and (result != "ok" or how == "other_model"):
            problems.append(f"{label}: {result}")
        shutil.rmtree(path)
    for path, culprit in [
        (os.path.join(tmp_path, "missing"), "missing"),
        (os.path.join(tmp_path, "emptydir"), "emptydir"),
        (__file__, __file__),
    ]:
        if culprit == "emptydir":
            os.makedirs(path)
        result = check_error(
            lambda p=path: checkpoints.restore_model(p, model=net), path
        )
        if result is not None:
            problems.append(f"{culprit}: {result}")
    assert not problems, f"{len(problems)} of {n + 3}: " + "; ".join(problems[:4])


def test_checkpoint_files_fuzzed(small_checkpoint, tmp_path):
    _run_weights(small_checkpoint, tmp_path, seed=14, n=24)


@pytest.mark.slow
def test_checkpoint_files_fuzzed_more(small_checkpoint, tmp_path):
    _run_weights(small_checkpoint, tmp_path, seed=15, n=150)


# === Entry points ==========================================================

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(tmp_path, *flags):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"),
         f"--train_logdir={tmp_path / 'logdir'}", "--training_number_of_steps=1",
         f"--dataset_dir={tmp_path / 'data'}", *flags],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip


def _one_error_line(result, program, culprit):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{program}: error: ")
    assert culprit in errors[0], errors[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "text",
    ["[" * 100000 + "]" * 100000, '[{"op": "conv", "kernel": NaN, "input": -1}]'],
)
def test_train_with_a_pathological_spec_exits_2(tmp_path, text):
    spec_file = tmp_path / "bad spec.json"
    spec_file.write_text(text)
    result = _train(tmp_path, f"--dpc_spec={spec_file}")
    _one_error_line(result, "train.py", str(spec_file))
    assert not (tmp_path / "logdir" / "model_config.json").exists()


@pytest.mark.slow
def test_train_from_a_damaged_initial_checkpoint_exits_2(small_checkpoint, tmp_path):
    base, _, _, _ = small_checkpoint
    damaged = _copy(base, tmp_path, "damaged")
    _damage(damaged, "ckpt-0.index", "truncate", 40)
    result = _train(tmp_path, f"--tf_initial_checkpoint={damaged}")
    _one_error_line(result, "train.py", damaged)
