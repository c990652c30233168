"""Flag-value fuzz: hundreds of bad values, each one line naming the flag, exit 2.

In-process, one parametrised test over `ENTRIES` (every entry point and
tool: train, eval, vis, export_model, search, model_stats, import_weights,
predict, check_records, copy_study): each entry's module is loaded (its flags
defined on absl's FLAGS, removed afterwards) and `command_line.run_main` runs
its `main` on one generated command line per case, as `python <entry> ...`
would after absl's process setup. The point where real work would start (the
trainer, the checkpoint watcher, the checkpoint restore, the backbone
pretraining, the model build, the weight import, the record scan, the study
copy) is replaced by a sentinel, so a bad value that passes validation shows
up as "reached" instead of a run, and a traceback as "raised ...". Each
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

from deeplab_dpc import command_line
from deeplab_dpc.core import interrupts
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
    "save_interval_steps": NONNEG_INT,
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
WATCH = {  # the flags eval.py and vis.py share
    "eval_scales": ["0", "-1", "nan", "inf", "a", "1,x"],
    "eval_interval_secs": NONNEG_INT,
    "max_wait_secs": NONNEG_FLOAT,
    "add_flipped_images": BOOL,
    "dataset": ["nope"],
    "checkpoint_dir": ["/nonexistent/ckpt"],
}
EVAL = {
    **WATCH,
    "max_number_of_evaluations": NONNEG_INT,
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
    "model_config": ["/nonexistent/model_config.json", "/nonexistent/ckpt_dir"],
}
VIS = {
    **WATCH,
    "max_number_of_iterations": NONNEG_INT,
    "max_number_of_images": NONNEG_INT,
    "vis_batch_size": INTS,
    "colormap_type": ENUM,
    "also_save_raw_predictions": BOOL,
    "vis_split": ["nope"],
}
EXPORT = {
    "checkpoint_path": ["/nonexistent/ckpt", ""],
    "inference_scales": ["0", "-1", "nan", "inf", "a", ""],
    "output_stride": [*INTS, "7", "0", "-16"],
    "num_classes": [*INTS, "0", "-1"],
    "max_pixels": [*INTS, "-1"],
    "crop_size": ["a,b", "0,0", "-1,5", "1,2,3", "99999,99999", "33.5,33"],
    "quantize": ["bogus", "", "INT8", "int8"],  # int8 without --tflite_output
    "num_representative_images": POS_INT,
    "tflite_output": ["{root}"],  # a directory
    "dataset": ["nope"],
    "add_flipped_images": BOOL,
}
SEARCH = {
    "stages": ["bogus", "", ",", "cache,bogus"],
    "workdir": ["", "{file}"],
    "cache_dir": ["{file}"],
    "study_name": [""],
    "storage": ["bogus://x"],
    "dataset": ["nope"],
    "model_variant": ENUM,
    "tf_initial_checkpoint": ["/nonexistent/ckpt"],
    "depth_multiplier": [*FLOATS, *NONFINITE, "0", "-1", "5"],
    "output_stride": [*INTS, "7", "0"],
    "proxy_crop_size": ["1", "a,b", "0,0", "-33,33", "33,33,33", "99999,99999"],
    "cache_dtype": ENUM,
    "space": ENUM,
    "sampler": ENUM,
    "pruner": ENUM,
    "proxy_compute_dtype": ENUM,
    "rerank_selection": ENUM,
    "search_method": ENUM,
    "jit_compile": BOOL,
    "near_best_prob": [*FLOATS, *NONFINITE, "-0.1", "1.5"],
    "pruner_reduction_factor": [*INTS, "1", "0"],
    "seed": [*INTS, "-1", str(2**40)],
    **{n: POS_INT for n in (
        "pretrain_steps", "cache_train_passes", "num_branches", "near_best_top_k",
        "evolution_population", "evolution_sample_size", "num_trials",
        "proxy_steps", "proxy_batch_size", "heartbeat_interval", "grace_period",
        "rerank_top_k", "rerank_steps", "rerank_batch_size")},
    **{n: NONNEG_INT for n in ("proxy_eval_every", "max_retry")},
    **{n: NONNEG_FLOAT for n in (
        "pretrain_learning_rate", "cache_memory_gb", "proxy_learning_rate",
        "rerank_learning_rate", "rerank_last_layer_gradient_multiplier")},
}  # fmt: skip
AUTO_DEEPLAB = {  # python -m deeplab_dpc.search.auto_deeplab
    "dataset": ["nope"],
    "ops": ["conv_9x9", "none,none", "zero", "separable_3x3_2,bogus"],
    "stem_filters": ["a,b,c", "1,2", "0,4,4", "4,4,4,4", "-4,4,4", ""],
    "crop_size": [c for c in CROPS if c != "32,33"],  # the supernet takes even sizes
    "arch_learning_rate": [*FLOATS, *NONFINITE, "0", "-1", "100"],
    "weight_learning_rate": NONNEG_FLOAT,
    "arch_learning_rate_schedule": ENUM,
    "graph_optimizer": ENUM,
    "mixed_precision": ENUM,
    "recompute": BOOL,
    "jit_compile": BOOL,
    "num_levels": [*INTS, "0", "5", "-1"],
    "seed": [*INTS, "-1", str(2**40)],
    "arch_start_step": [*INTS, "-1", "120", "1000"],  # >= num_steps: no arch step
    "max_parameter_free_ops": [*INTS, "-1", "11"],  # B = 5: at most 10 branches
    **{n: POS_INT for n in (
        "num_layers", "num_blocks", "filter_multiplier", "batch_size", "num_steps",
        "arch_batches", "log_every", "checkpoint_every", "average_logs")},
    **{n: NONNEG_INT for n in ("stop_after_stable_logs",)},
}  # fmt: skip

IMPORT_WEIGHTS = {
    "source": ["", "/nonexistent/w.tflite", "{file}", "{data}"],
    "output": ["{file}"],  # exists, not a checkpoint of ours
    "model_variant": ENUM,
    "depth_multiplier": [*FLOATS, *NONFINITE, "0", "-1"],
    "output_stride": [*INTS, "7", "0"],
    "head": ENUM,
    "atrous_rates": RATES,
    "dpc_spec": ["/nonexistent/spec.json"],
    "decoder_output_stride": ["3", "abc"],
    "num_classes": [*INTS, "0", "-1"],
    "backbone_only": BOOL,
}
PREDICT = {
    "model": ["", "/nonexistent/model", "{data}"],  # {data}: no saved_model.pb
    "images": ["", ",", " , "],
    "output_dir": ["", "{file}"],
    "overlay_alpha": [*FLOATS, *NONFINITE, "-0.1", "1.5"],
}
CHECK_RECORDS = {
    "dataset_dir": ["", "/nonexistent/data", "{file}", "{root}"],
    "dataset": ["nope"],
    "dataset_info_json": ["{bad json", "/nonexistent/info.json", '{"num_classes": 0}'],
    "split": ["nope", ""],
}
COPY_STUDY = {
    "from_storage": ["", "sqlite:////nonexistent/x.db", "bogus://x", "{to}"],
    "to_storage": ["", "bogus://x", "{from}", "sqlite:///{file}/x.db"],
    "study_name": ["nope", "s,nope", ","],
}


class Reached(Exception):
    """Validation passed: the entry point got to where real work starts."""


def _reach(*args, **kwargs):
    raise Reached()


def _load_file(path, name):
    spec = importlib.util.spec_from_file_location(f"_fuzz_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script(name, work):
    """Loader of `name`.py (its flags defined at import) with `work` patched."""

    def load(monkeypatch):
        for module, attr in work:
            monkeypatch.setattr(importlib.import_module(module), attr, _reach)
        return _load_file(REPO / f"{name}.py", name).main

    return load


def _module(path, name, work):
    """Loader of a package's `__main__` (`python -m`), flags defined at import."""

    def load(monkeypatch):
        for module, attr in work:
            monkeypatch.setattr(importlib.import_module(module), attr, _reach)
        return _load_file(REPO / "deeplab_dpc" / path, name).main

    return load


def _tool(name, work):
    """Loader of deeplab_dpc.tools.`name` (flags from its define_flags)."""

    def load(monkeypatch):
        module = importlib.import_module(f"deeplab_dpc.tools.{name}")
        for attr in work:
            target, _, attr = attr.rpartition(".")
            monkeypatch.setattr(
                importlib.import_module(target) if target else module, attr, _reach
            )
        module.define_flags()
        if "fuzz_out" not in FLAGS:
            flags.DEFINE_string("fuzz_out", None, "An output path the tool lacks.")
        return module.main

    return load


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
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            command_line.run_main(main, [prog, *argv], prog)
        except Reached:
            code = "reached"
        except SystemExit as e:
            code = e.code
        except Exception as e:  # a traceback: recorded as the case's failure
            code = f"raised {type(e).__name__}: {e}"
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """{name: path} that command lines and case values refer to as {name}."""
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    synthetic.generate_synthetic_dataset(
        str(data), num_train=2, num_val=2, image_size=(33, 33)
    )
    ckpt = root / "ckpt"
    ckpt.mkdir()
    from deeplab_dpc.modeling.model import model_config

    cfg = model_config("mobilenet_v2", 5, head="aspp", depth_multiplier=0.25)
    (ckpt / "model_config.json").write_text(json.dumps(cfg))
    (ckpt / "train_config.json").write_text(
        json.dumps({"dataset": "synthetic", "dataset_dir": str(data),
                    "training_number_of_steps": 10, "save_interval_secs": 1})
    )  # fmt: skip
    (ckpt / "saved_model.pb").write_bytes(b"")  # predict's --model: a SavedModel dir
    (root / "file").write_text("not a directory, model or checkpoint")
    (root / "w.tflite").write_bytes(b"\0\0\0\0TFL3")
    import optuna

    from deeplab_dpc.search import study as study_lib

    source = f"sqlite:///{root / 'source.db'}"
    optuna.create_study(study_name="s", storage=study_lib.open_storage(source))
    return {"root": root, "data": data, "ckpt": ckpt, "file": root / "file",
            "tflite": root / "w.tflite", "from": source,
            "to": f"sqlite:///{root / 'to.db'}"}  # fmt: skip


# (prog, loader, base command line, output flag with {out}, case table). The
# loader defines the entry's flags, replaces where its real work starts by
# `_reach` and returns its `main`.
ENTRIES = [
    ("train.py", _script("train", [("deeplab_dpc.training.trainer", "Trainer")]),
     ["--dataset_dir={data}", "--train_crop_size=33,33", "--train_batch_size=2"],
     "--train_logdir={out}", TRAIN),
    ("eval.py", _script("eval", [("deeplab_dpc.evaluation.evaluator",
                                  "watch_checkpoints")]),
     ["--checkpoint_dir={ckpt}", "--dataset_dir={data}"], "--eval_logdir={out}", EVAL),
    ("vis.py", _script("vis", [("deeplab_dpc.evaluation.visualizer",
                                "visualize_checkpoints")]),
     ["--checkpoint_dir={ckpt}", "--dataset_dir={data}"], "--vis_logdir={out}", VIS),
    ("export_model", _script("export_model", [("deeplab_dpc.export.saved_model",
                                               "load_export_model")]),
     ["--checkpoint_path={ckpt}"], "--export_path={out}", EXPORT),
    ("search.py", _script("search", [("deeplab_dpc.search.stages",
                                      "pretrain_backbone")]),
     ["--dataset_dir={data}"], "--workdir={out}", SEARCH),
    ("auto_deeplab", _module("search/auto_deeplab/__main__.py", "auto_deeplab",
                             [("deeplab_dpc.search.auto_deeplab.search",
                               "AutoDeepLabSearcher")]),
     ["--dataset_dir={data}"], "--workdir={out}", AUTO_DEEPLAB),
    ("model_stats", _tool("model_stats", ["deeplab_dpc.modeling.model.build_model"]),
     [], "--fuzz_out={out}", MODEL_STATS),
    ("import_weights", _tool("import_weights", ["import_weights"]),
     ["--source={tflite}"], "--output={out}", IMPORT_WEIGHTS),
    ("predict", _tool("predict", ["SavedModelPredictor"]),
     ["--model={ckpt}", "--images={file}"], "--output_dir={out}", PREDICT),
    ("check_records", _tool("check_records", ["check_shard"]),
     ["--dataset_dir={data}"], "--fuzz_out={out}", CHECK_RECORDS),
    ("copy_study", _tool("copy_study", ["_copy_one"]),
     ["--from_storage={from}"], "--to_storage=sqlite:///{out}/to.db", COPY_STUDY),
]  # fmt: skip
COUNTS = {}


def _fill(text, paths):
    """`text` with each {name} of `paths` replaced (other braces kept: JSON)."""
    for name, path in paths.items():
        text = text.replace(f"{{{name}}}", str(path))
    return text


def _check_all(main, prog, argv, table, paths, tag):
    """Runs every case; returns {flag: (cases, handled)} and the failures."""
    failures, counts = [], {}
    base, out_arg = argv[:-1], argv[-1]
    out = paths["root"] / f"{tag}_base"
    code, lines = _run(main, prog, [*base, _fill(out_arg, {"out": out})])
    assert code == "reached", (code, lines)
    cases = [(name, value) for name, values in table.items() for value in values]
    for i, (name, value) in enumerate(cases):
        out = paths["root"] / f"{tag}_{i}"
        case = f"--{name}={_fill(value, paths)}"
        code, lines = _run(main, prog, [*base, _fill(out_arg, {"out": out}), case])
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


@pytest.mark.parametrize(
    "prog, load, base, out_arg, table", ENTRIES, ids=[e[0] for e in ENTRIES]
)
def test_bad_flag_values_exit_2_with_one_line(
    paths, monkeypatch, prog, load, base, out_arg, table
):
    argv = [_fill(a, paths) for a in base] + [out_arg]
    with _entry_flags():
        main = load(monkeypatch)
        counts, failures = _check_all(main, prog, argv, table, paths, prog)
    COUNTS[prog] = sum(c for c, _ in counts.values())
    print(prog, COUNTS[prog], "cases", counts)
    assert not failures, failures


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train.py", "--train_batch_size=abc"], "train_batch_size"),
        (["train.py", "--base_learning_rate=nan"], "base_learning_rate"),
        (["eval.py", "--eval_scales=inf", "--checkpoint_dir=CKPT"], "eval_scales"),
        (["train.py", "positional"], "positional"),
        (["search.py", "--proxy_steps=-1", "--workdir=OUT"], "proxy_steps"),
        (
            [
                "-m",
                "deeplab_dpc.search.auto_deeplab",
                "--arch_batches=0",
                "--workdir=OUT",
            ],
            "arch_batches",
        ),
    ],
)
def test_real_processes_exit_2_with_one_line(paths, argv, flag, tmp_path):
    data, ckpt = paths["data"], paths["ckpt"]
    argv = [a.replace("CKPT", str(ckpt)).replace("OUT", str(tmp_path / "out"))
            for a in argv]  # fmt: skip
    script, args = argv[0], argv[1:]
    if script == "train.py":
        args += [f"--dataset_dir={data}", f"--train_logdir={tmp_path / 'out'}"]
    command, prog = [str(REPO / script)], script
    if script == "-m":  # a package's __main__: its program name is the package's
        command, prog = ["-m", args[0]], args[0].rsplit(".", 1)[-1]
        args = args[1:]
    result = subprocess.run(
        [sys.executable, *command, *args], capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
    assert flag in lines[0]
    assert not (tmp_path / "out").exists()
