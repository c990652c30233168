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

from deeplab_dpc.core import errors
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


def _check(name, value, low=None, high=None, low_open=False):
    return errors.check_range(name, value, low, high, low_open, SearchOptionsError)


def search_options(
    *,
    dataset=registry.DEFAULT_DATASET,
    dataset_dir=None,
    split="train",
    num_layers=3,
    num_blocks=5,
    filter_multiplier=4,
    num_levels=4,
    ops=nas_spec.SEARCH_OPS,
    stem_filters=(16, 16, 32),
    crop_size=(65, 65),
    batch_size=2,
    num_steps=120,
    arch_start_step=40,
    weight_learning_rate=0.025,
    weight_learning_rate_end=0.001,
    momentum=0.9,
    weight_decay=3e-4,
    arch_learning_rate=None,
    arch_learning_rate_schedule="constant",
    arch_batches=None,
    arch_weight_decay=1e-3,
    bn_momentum=0.9,
    recompute=False,
    seed=0,
    log_every=10,
    checkpoint_every=20,
    average_logs=3,
    stop_after_stable_logs=0,
    max_parameter_free_ops=0,
    make_figures=True,
    graph_optimizer="auto",
    mixed_precision=None,
    jit_compile=False,
):
    """The checked and resolved options (see the module docstring).

    The defaults are the small synthetic search (a few minutes on 2 CPU
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
    _check("num_layers", num_layers, 1, 64)
    _check("num_blocks", num_blocks, 1, 16)
    _check("filter_multiplier", filter_multiplier, 1, 1024)
    _check("num_levels", num_levels, 1, nas_spec.NUM_LEVELS)
    ops = [str(op) for op in ops]
    bad = [op for op in ops if op not in nas_spec.SEARCH_OPS]
    if bad:
        raise SearchOptionsError(
            f"ops: unknown {bad}; known: {', '.join(nas_spec.SEARCH_OPS)}"
        )
    if len(set(ops)) != len(ops) or not [op for op in ops if op != nas_spec.ZERO]:
        raise SearchOptionsError(
            f"ops: need distinct operators, one besides 'zero'; got {ops}"
        )
    stem_filters = [int(f) for f in stem_filters]
    if len(stem_filters) != 3 or min(stem_filters) < 1 or max(stem_filters) > 4096:
        raise SearchOptionsError(
            f"stem_filters: expected three numbers in [1, 4096], got {stem_filters}"
        )
    crop_size = [int(c) for c in crop_size]
    if len(crop_size) != 2 or min(crop_size) < 17 or max(crop_size) > 4096:
        raise SearchOptionsError(
            f"crop_size: expected H,W in [17, 4096], got {crop_size}"
        )
    _check("batch_size", batch_size, 1, 4096)
    _check("num_steps", num_steps, 1, MAX_STEPS)
    _check("arch_start_step", arch_start_step, 0, MAX_STEPS)
    if arch_start_step >= num_steps:
        raise SearchOptionsError(
            f"arch_start_step: {arch_start_step} leaves no architecture step "
            f"(num_steps {num_steps})"
        )
    for name, value in (
        ("weight_learning_rate", weight_learning_rate),
        ("weight_learning_rate_end", weight_learning_rate_end),
        ("weight_decay", weight_decay),
        ("arch_weight_decay", arch_weight_decay),
    ):
        _check(name, value, 0.0)
    _check("momentum", momentum, 0.0, 1.0)
    _check("bn_momentum", bn_momentum, 0.0, 1.0)
    _check("arch_learning_rate", arch_learning_rate, 0.0, 10.0, low_open=True)
    _check("arch_batches", arch_batches, 1, 1024)
    if arch_learning_rate_schedule not in ARCH_SCHEDULES:
        raise SearchOptionsError(
            f"arch_learning_rate_schedule: must be one of {', '.join(ARCH_SCHEDULES)}, "
            f"got {arch_learning_rate_schedule!r}"
        )
    _check("seed", seed, 0, 2**31 - 1)
    _check("log_every", log_every, 1, MAX_STEPS)
    _check("checkpoint_every", checkpoint_every, 1, MAX_STEPS)
    _check("average_logs", average_logs, 1, 10**6)
    _check("stop_after_stable_logs", stop_after_stable_logs, 0, 10**6)
    _check("max_parameter_free_ops", max_parameter_free_ops, 0, 2 * num_blocks)
    if graph_optimizer not in GRAPH_OPTIMIZER:
        raise SearchOptionsError(
            f"graph_optimizer: must be one of {', '.join(GRAPH_OPTIMIZER)}, "
            f"got {graph_optimizer!r}"
        )
    mixed_precision = mixed_precision or None
    if mixed_precision not in MIXED_PRECISION:
        raise SearchOptionsError(
            f"mixed_precision: must be empty, bf16 or fp16, got {mixed_precision!r}"
        )
    paper_scale = num_steps - arch_start_step >= PAPER_SCALE_ARCH_STEPS
    if arch_learning_rate is None:
        arch_learning_rate = (
            PAPER_ARCH_LEARNING_RATE if paper_scale else SMALL_BUDGET_ARCH_LEARNING_RATE
        )
    if arch_batches is None:
        arch_batches = 1 if paper_scale else SMALL_BUDGET_ARCH_BATCHES
    registry.get_dataset_info(dataset)  # an unknown name: ValueError naming it
    return {
        "dataset": str(dataset),
        "dataset_dir": dataset_dir,
        "split": str(split),
        "num_layers": int(num_layers),
        "num_blocks": int(num_blocks),
        "filter_multiplier": int(filter_multiplier),
        "num_levels": int(num_levels),
        "ops": ops,
        "stem_filters": stem_filters,
        "crop_size": crop_size,
        "batch_size": int(batch_size),
        "num_steps": int(num_steps),
        "arch_start_step": int(arch_start_step),
        "weight_learning_rate": float(weight_learning_rate),
        "weight_learning_rate_end": float(weight_learning_rate_end),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "arch_learning_rate": float(arch_learning_rate),
        "arch_learning_rate_schedule": arch_learning_rate_schedule,
        "arch_batches": int(arch_batches),
        "arch_weight_decay": float(arch_weight_decay),
        "bn_momentum": float(bn_momentum),
        "recompute": bool(recompute),
        "seed": int(seed),
        "log_every": int(log_every),
        "checkpoint_every": int(checkpoint_every),
        "average_logs": int(average_logs),
        "stop_after_stable_logs": int(stop_after_stable_logs),
        "max_parameter_free_ops": int(max_parameter_free_ops),
        "make_figures": bool(make_figures),
        "graph_optimizer": graph_optimizer,
        "mixed_precision": mixed_precision,
        "jit_compile": bool(jit_compile),
    }
