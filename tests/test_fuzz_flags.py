"""Flag-value fuzz: hundreds of bad values, each one line naming the flag, exit 2.

In-process: each entry point's module is loaded (its flags defined on absl's
FLAGS, removed afterwards) and `dpc_flags.run_main` runs its `main` on one
generated command line per case, as `python <entry> ...` would after absl's
process setup. The point where real work would start (the trainer, the
checkpoint watcher, the model build) is replaced by a sentinel, so a bad
value that passes validation shows up as "reached" instead of a run. Each
case must end in SystemExit(2) with exactly one line on stderr,
`<prog>: error: ...`, naming the flag, and nothing under the case's output
path. The valid base command line of each entry must reach the sentinel
(the harness is not failing everything). A few real subprocesses check the
same contract end to end.
"""

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags

from deeplab_dpc import flags as dpc_flags
from deeplab_dpc import interrupts
from deeplab_dpc.data import synthetic

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS

INTS = ["abc", "1.5", "", "0x"]
FLOATS = ["abc", "", "1,2"]
NONFINITE = ["nan", "inf", "-inf", "1e400"]
POS_INT = [*INTS, "0", "-1"]
NONNEG_INT = [*INTS, "-1", "-100"]
POS_FLOAT = [*FLOATS, *NONFINITE, "-1", "-0.5"]
NONNEG_FLOAT = [*FLOATS, *NONFINITE, "-1", "-1e-9"]
CROPS = ["1", "1,2,3", "a,b", "0,0", "-33,33", "32,33", "33,", "nan,33",
         "99999,99999", "33.5,33", "1e3,33", "33,33,33"]  # fmt: skip
RATES = ["a", "6,x", "6.5", "6,,b"]
ENUM = ["bogus", "", "POLY "]
BOOL = ["maybe", "2", "yes please"]

TRAIN = {
    "train_batch_size": [*POS_INT, "9" * 20, "100000"],
    "training_number_of_steps": [*POS_INT, "9" * 30],
    "base_learning_rate": NONNEG_FLOAT,
    "learning_power": NONNEG_FLOAT,
    "end_learning_rate": NONNEG_FLOAT,
    "learning_rate_decay_factor": NONNEG_FLOAT,
    "learning_rate_decay_step": POS_INT,
    "slow_start_step": NONNEG_INT,
    "slow_start_learning_rate": NONNEG_FLOAT,
    "momentum": [*NONNEG_FLOAT, "1.5"],
    "weight_decay": NONNEG_FLOAT,
    "last_layer_gradient_multiplier": NONNEG_FLOAT,
    "min_scale_factor": [*POS_FLOAT, "0"],
    "max_scale_factor": [*POS_FLOAT, "0.1"],
    "scale_factor_step_size": NONNEG_FLOAT,
    "save_interval_secs": NONNEG_FLOAT,
    "save_summaries_secs": NONNEG_FLOAT,
    "log_steps": POS_INT,
    "max_checkpoints_to_keep": POS_INT,
    "seed": [*INTS, "-1", str(2**40)],
    "train_crop_size": CROPS,  # appended to the base --train_crop_size=33,33
    "label_weights": ["a", "1,1", "nan,1,1,1,1", "-1,1,1,1,1", "inf,1,1,1,1"],
    "learning_policy": ENUM,
    "distribution_strategy": ENUM,
    "mixed_precision": ENUM,
    "fine_tune_batch_norm": BOOL,
    "depth_multiplier": [*FLOATS, *NONFINITE, "0", "-1"],
    "output_stride": [*INTS, "7", "0", "-16", "64"],
    "atrous_rates": RATES,
    "decoder_output_stride": [*INTS, "3", "0", "-4"],
    "batch_norm_decay": [*FLOATS, *NONFINITE, "1.5", "-0.1"],
    "model_variant": ENUM,
    "dataset": ["nope", "Synthetic"],
    "dataset_source": ENUM,
    "dpc_spec": ["/nonexistent/spec.json"],
    "dataset_info_json": ["{bad json", "/nonexistent/info.json"],
}
EVAL = {
    "eval_scales": ["0", "-1", "nan", "inf", "a", "1,x"],
    "max_number_of_evaluations": NONNEG_INT,
    "eval_interval_secs": NONNEG_INT,
    "max_wait_secs": NONNEG_FLOAT,
    "add_flipped_images": BOOL,
    "dataset": ["nope"],
    "checkpoint_dir": ["/nonexistent/ckpt"],
    "eval_split": ["nope"],
    "output_stride": ["7", "abc"],
}
MODEL_STATS = {
    "crop_size": ["a,b", "1", "0,0", "-1,5", "1,2,3"],
    "num_classes": [*INTS, "0", "-1"],
    "output_stride": [*INTS, "7", "0"],
    "depth_multiplier": [*FLOATS, *NONFINITE, "0", "-1"],
    "atrous_rates": RATES,
    "head": ENUM,
    "dpc_spec": ["/nonexistent/spec.json"],
    "decoder_output_stride": ["3", "abc"],
}


class Reached(Exception):
    """Validation passed: the entry point got to where real work starts."""


def _reach(*args, **kwargs):
    raise Reached()


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"_fuzz_{name}", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _entry_flags():
    """Flags defined inside the block are removed after it."""
    before = set(FLAGS)
    try:
        yield
    finally:
        FLAGS.unparse_flags()
        for name in set(FLAGS) - before:
            delattr(FLAGS, name)
        interrupts.uninstall()


def _run(main, prog, argv):
    """(exit code or 'reached', stderr lines) of one in-process command line."""
    FLAGS.unparse_flags()
    err = io.StringIO()
    code = None
    with contextlib.redirect_stderr(err):
        try:
            dpc_flags.run_main(main, [prog, *argv], prog)
        except Reached:
            code = "reached"
        except SystemExit as e:
            code = e.code
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


def _cases(table):
    return [(name, value) for name, values in table.items() for value in values]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    synthetic.generate_synthetic_dataset(
        str(data), num_train=2, num_val=2, image_size=(33, 33)
    )
    ckpt = root / "ckpt"
    ckpt.mkdir()
    from deeplab_dpc.model import model_config

    cfg = model_config("mobilenet_v2", 5, head="aspp", depth_multiplier=0.25)
    (ckpt / "model_config.json").write_text(json.dumps(cfg))
    (ckpt / "train_config.json").write_text(
        json.dumps({"dataset": "synthetic", "dataset_dir": str(data),
                    "training_number_of_steps": 10, "save_interval_secs": 1})
    )  # fmt: skip
    return root, data, ckpt


def _check_all(main, prog, base, table, out_flag, root, tag):
    """Runs every case; returns {flag: (cases, handled)} and the failures."""
    failures, counts = [], {}
    code, lines = _run(main, prog, [*base, f"--{out_flag}={root / (tag + '_base')}"])
    assert code == "reached", (code, lines)
    for i, (name, value) in enumerate(_cases(table)):
        out = root / f"{tag}_{i}"
        argv = [*base, f"--{out_flag}={out}", f"--{name}={value}"]
        code, lines = _run(main, prog, argv)
        ok = (
            code == 2 and len(lines) == 1
            and lines[0].startswith(f"{prog}: error: ") and name in lines[0]
            and not (out.exists() and any(out.iterdir()))
        )  # fmt: skip
        total, handled = counts.get(name, (0, 0))
        counts[name] = (total + 1, handled + ok)
        if not ok:
            failures.append((name, value, code, lines))
    return counts, failures


def test_train_flags(fixtures, monkeypatch):
    root, data, _ = fixtures
    from deeplab_dpc.training import trainer

    monkeypatch.setattr(trainer, "Trainer", _reach)
    with _entry_flags():
        module = _load_script("train")
        base = [f"--dataset_dir={data}", "--train_crop_size=33,33",
                "--train_batch_size=2"]  # fmt: skip
        counts, failures = _check_all(
            module.main, "train.py", base, TRAIN, "train_logdir", root, "train"
        )
    print("train.py", sum(c for c, _ in counts.values()), "cases", counts)
    assert not failures, failures


def test_eval_flags(fixtures, monkeypatch):
    root, data, ckpt = fixtures
    from deeplab_dpc.evaluation import evaluator

    monkeypatch.setattr(evaluator, "watch_checkpoints", _reach)
    with _entry_flags():
        module = _load_script("eval")
        base = [f"--checkpoint_dir={ckpt}", f"--dataset_dir={data}"]
        counts, failures = _check_all(
            module.main, "eval.py", base, EVAL, "eval_logdir", root, "eval"
        )
    print("eval.py", sum(c for c, _ in counts.values()), "cases", counts)
    assert not failures, failures


def test_model_stats_flags(fixtures, monkeypatch):
    root, _, _ = fixtures
    from deeplab_dpc import model
    from deeplab_dpc.tools import model_stats

    monkeypatch.setattr(model, "build_model", _reach)
    with _entry_flags():
        model_stats.define_flags()
        flags.DEFINE_string("fuzz_out", None, "An output path (none for model_stats).")
        counts, failures = _check_all(
            model_stats.main, "model_stats", [], MODEL_STATS, "fuzz_out", root, "ms"
        )
    print("model_stats", sum(c for c, _ in counts.values()), "cases", counts)
    assert not failures, failures


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train.py", "--train_batch_size=abc"], "train_batch_size"),
        (["train.py", "--base_learning_rate=nan"], "base_learning_rate"),
        (["eval.py", "--eval_scales=inf", "--checkpoint_dir=CKPT"], "eval_scales"),
        (["train.py", "positional"], "positional"),
    ],
)
def test_real_processes_exit_2_with_one_line(fixtures, argv, flag, tmp_path):
    _, data, ckpt = fixtures
    argv = [a.replace("CKPT", str(ckpt)) for a in argv]
    script, args = argv[0], argv[1:]
    if script == "train.py":
        args += [f"--dataset_dir={data}", f"--train_logdir={tmp_path / 'out'}"]
    result = subprocess.run(
        [sys.executable, str(REPO / script), *args], capture_output=True, text=True,
        timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, cwd=tmp_path,
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), lines
    assert flag in lines[0]
    assert not (tmp_path / "out").exists()
