"""The options of an Auto-DeepLab search: checked, resolved, written with it.

`search_options(**kwargs)` returns the resolved options as a JSON-ready dict
(`search_config.json`) or raises `SearchOptionsError` (a `ValueError`) naming
the option, which the command lines turn into one line and exit code 2.

Paper settings and small budgets (Sec. 5.1; measurements in
g3doc/auto_deeplab.md, "Convergence"):

* The paper's architecture step is Adam at a constant 3e-3 on one trainB
  batch per weight step, about 14,900 of them (40 epochs from epoch 20).
  At that scale (`arch_learning_rate` and `arch_batches` left to "auto",
  i.e. None, with at least `PAPER_SCALE_ARCH_STEPS` architecture steps) the
  search uses exactly that.
* Below it, a few hundred architecture steps at 3e-3 move each logit by at
  most 3e-3 a step and the CamVid search moved the entropies by 0.003 nats
  (issue 25). "Auto" then resolves to `SMALL_BUDGET_ARCH_LEARNING_RATE` and
  `SMALL_BUDGET_ARCH_BATCHES` trainB batches averaged per architecture step
  (less noise per step; measured on the tiny supernet, see the g3doc page).
  Deviation from the paper, for budgets far below its own.
"""

import json

from deeplab_dpc.core import errors, option_table
from deeplab_dpc.core.option_table import Option
from deeplab_dpc.data import registry
from deeplab_dpc.formats import auto_deeplab_spec as nas_spec

PAPER_ARCH_LEARNING_RATE = 3e-3
PAPER_SCALE_ARCH_STEPS = 10000
SMALL_BUDGET_ARCH_LEARNING_RATE = 3e-2
SMALL_BUDGET_ARCH_BATCHES = 2
ARCH_SCHEDULES = ("constant", "cosine")
GRAPH_OPTIMIZER = ("auto", "on", "off")
MIXED_PRECISION = {None: "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
MAX_STEPS = 10**9


class SearchOptionsError(ValueError):
    """A search option is out of range or inconsistent; the message names it."""


# The options, once (`option_table.Option` rows): the command line
# (`python -m deeplab_dpc.search.auto_deeplab`) defines one flag per row
# (rows with `cli=False` are arguments only), `search_options` takes their
# fields as keywords, with the table's defaults, ranges and choices.
OPTIONS = (
    Option("dataset", "string", registry.DEFAULT_DATASET, "Registered dataset name."),
    Option("dataset_dir", "string", None, "TFRecord folder (default: ./data/<dataset>)."),
    Option("train_split", "string", "train", "Split halved into trainA / trainB.",
           field="split"),
    Option("num_layers", "integer", 3, "L (the paper: 12).", low=1, high=64),
    Option("num_blocks", "integer", 5, "B.", low=1, high=16),
    Option("filter_multiplier", "integer", 4, "F (the paper: 8).", low=1, high=1024),
    Option("num_levels", "integer", 4, "Resolutions from 1/4 (4: down to 1/32).",
           low=1, high=nas_spec.NUM_LEVELS),
    Option("ops", "list", nas_spec.SEARCH_OPS, "Operator set (official names).",
           choices=nas_spec.SEARCH_OPS),
    Option("stem_filters", "list", (16, 16, 32), "Stem filters (paper: 64,64,128).",
           low=1, high=4096),
    Option("crop_size", "list", (65, 65), "Crop H,W (the paper: 321,321)."),
    Option("batch_size", "integer", 2, "Batch size of each half.", low=1, high=4096),
    Option("num_steps", "integer", 120, "Search steps (weight steps).",
           low=1, high=MAX_STEPS),
    Option("arch_start_step", "integer", 40,
           "Warm-up: alpha/beta updates start after this step.", low=0, high=MAX_STEPS),
    Option("weight_learning_rate", "float", 0.025, "SGD learning rate (cosine to 0.001).",
           low=0.0),
    Option("weight_learning_rate_end", "float", 0.001, low=0.0, cli=False),
    Option("momentum", "float", 0.9, low=0.0, high=1.0, cli=False),
    Option("weight_decay", "float", 3e-4, low=0.0, cli=False),
    Option("arch_learning_rate", "float", None,
           "Adam learning rate of alpha/beta (default: the paper's 3e-3 at its scale, "
           "10,000+ architecture steps; 3e-2 below it).",
           low=0.0, high=10.0, low_open=True),
    Option("arch_learning_rate_schedule", "enum", "constant",
           "Architecture learning rate: constant (the paper) or cosine to zero.",
           choices=ARCH_SCHEDULES),
    Option("arch_batches", "integer", None,
           "trainB batches averaged per architecture step (default: 1 at the paper's "
           "scale, 2 below it).", low=1, high=1024),
    Option("arch_weight_decay", "float", 1e-3, low=0.0, cli=False),
    Option("bn_momentum", "float", 0.9, low=0.0, high=1.0, cli=False),
    Option("recompute", "boolean", False, "Recompute cell activations in backprop."),
    Option("seed", "integer", 0, "Seed of the input pipelines.", low=0, high=2**31 - 1),
    Option("log_every", "integer", 10, "Log / architecture.json interval (steps).",
           low=1, high=MAX_STEPS),
    Option("checkpoint_every", "integer", 20, "Checkpoint interval (steps).",
           low=1, high=MAX_STEPS),
    Option("average_logs", "integer", 3,
           "Decode from alpha/beta averaged over this many log steps.", low=1, high=10**6),
    Option("stop_after_stable_logs", "integer", 0,
           "Stop once the decoded cell and path are unchanged for this many log "
           "steps (0: run all steps).", low=0, high=10**6),
    Option("max_parameter_free_ops", "integer", 0,
           "Stop when the decoded cell holds this many skip/pooling operators "
           "(DARTS+ early stopping; 0: only measure).", low=0),
    Option("make_figures", "boolean", True, cli=False),
    Option("graph_optimizer", "enum", "auto",
           "TF's graph optimizer (grappler): auto is off on CPU, on with a GPU or TPU.",
           choices=GRAPH_OPTIMIZER),
    Option("mixed_precision", "enum", None, "Mixed precision (as train.py).",
           choices=("bf16", "fp16")),
    Option("jit_compile", "boolean", False,
           "Compile the forward and backward pass with XLA."),
)  # fmt: skip
DEFAULTS = {option.target: option.default for option in OPTIONS}


def _integers(name, values, count, what):
    """`count` integers of list option `name`, or SearchOptionsError naming it."""
    try:
        numbers = [option_table.integer(v) for v in values]
    except (TypeError, ValueError):
        numbers = None
    if numbers is None or len(numbers) != count:
        shown = ",".join(map(str, values)) or "nothing"
        raise SearchOptionsError(f"{name}: expected {what}, got {shown}")
    return numbers


def search_options(**options):
    """The checked and resolved options (see the module docstring).

    `options`: any fields of `OPTIONS` (the others take its defaults). The
    defaults are the small synthetic search (a few minutes on 2 CPU
    cores): L = 3, F = 4, a (16, 16, 32) stem, 65 x 65 crops, 120 steps with
    the architecture updated after step 40 (the paper: L = 12, F = 8, the
    (64, 64, 128) stem, 321 x 321 crops, 40 epochs from epoch 20).

    average_logs: the decoded cell and path of each log step come from alpha
      and beta averaged (softmax weights) over this many last log steps.
    stop_after_stable_logs: > 0 stops the search once that decoded
      architecture has not changed for this many consecutive log steps of
      the architecture phase (0: run all steps, the count is still logged).
    max_parameter_free_ops: > 0 stops the search (DARTS+ early stopping,
      Liang et al. 2019) when the decoded cell holds at least this many
      parameter-free operators (skip, pooling): the collapse of DARTS-style
      searches; 0: only measured (`parameter_free_ops` in history.json).
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"search_options: unknown options {', '.join(unknown)}")
    o = {**DEFAULTS, **options}
    o["mixed_precision"] = o["mixed_precision"] or None
    o["ops"] = [str(op) for op in o["ops"]]
    o["stem_filters"] = _integers(
        "stem_filters", o["stem_filters"], 3, "three numbers in [1, 4096]"
    )
    values = {option.name: o[option.target] for option in OPTIONS}
    option_table.check_values(OPTIONS, values, "", SearchOptionsError)
    ops = o["ops"]
    if len(set(ops)) != len(ops) or not [op for op in ops if op != nas_spec.ZERO]:
        raise SearchOptionsError(
            f"ops: need distinct operators, one besides 'zero'; got {ops}"
        )
    o["crop_size"] = option_table.check_crop(
        "crop_size", o["crop_size"], SearchOptionsError
    )
    num_steps, arch_start_step = o["num_steps"], o["arch_start_step"]
    if arch_start_step >= num_steps:
        raise SearchOptionsError(
            f"arch_start_step: {arch_start_step} leaves no architecture step "
            f"(num_steps {num_steps})"
        )
    errors.check_range("max_parameter_free_ops", o["max_parameter_free_ops"], 0,
                       2 * o["num_blocks"], error=SearchOptionsError)  # fmt: skip
    paper_scale = num_steps - arch_start_step >= PAPER_SCALE_ARCH_STEPS
    if o["arch_learning_rate"] is None:
        o["arch_learning_rate"] = (
            PAPER_ARCH_LEARNING_RATE if paper_scale else SMALL_BUDGET_ARCH_LEARNING_RATE
        )
    if o["arch_batches"] is None:
        o["arch_batches"] = 1 if paper_scale else SMALL_BUDGET_ARCH_BATCHES
    registry.get_dataset_info(o["dataset"])  # an unknown name: ValueError naming it
    casts = {"integer": int, "float": float, "boolean": bool}
    resolved = {
        option.target: casts.get(option.kind, lambda v: v)(o[option.target])
        for option in OPTIONS
    }
    resolved["dataset"] = str(o["dataset"])
    resolved["split"] = str(o["split"])
    return resolved


# Options a resumed search may change: where the data lies, how long it runs,
# how it logs, checkpoints, decodes and stops, and how the same computation is
# run (recompute, graph optimizer, XLA). The others define the search (its
# supernet, data, optimisers, seed, precision); a resume with another value of
# one of them would carry on a different search from the checkpoint.
RESUMABLE_OPTIONS = frozenset({
    "dataset_dir", "num_steps", "log_every", "checkpoint_every", "average_logs",
    "stop_after_stable_logs", "max_parameter_free_ops", "make_figures",
    "recompute", "graph_optimizer", "jit_compile",
})  # fmt: skip


def check_resume(saved, given, workdir):
    """Raises SearchOptionsError naming the first option that defines the search
    and differs between `saved` (the workdir's search_config.json) and `given`.

    Compared as JSON (lists and tuples alike); options absent from `saved`
    (written by an older version) are not compared.
    """
    saved, given = json.loads(json.dumps(saved)), json.loads(json.dumps(given))
    changed = [
        name
        for name in given
        if name not in RESUMABLE_OPTIONS
        and name in saved
        and saved[name] != given[name]
    ]
    if changed:
        name, others = changed[0], changed[1:]
        also = f" (and {', '.join(others)})" if others else ""
        raise SearchOptionsError(
            f"{name}: {workdir} holds a search made with {saved[name]!r}, not "
            f"{given[name]!r}{also}; resume it with the same options or start "
            "the new search in another workdir"
        )
