"""The stages of `search.py`: cache, create, run, rerank, report.

Chen et al. (NeurIPS 2018), Sec. 3.3 and 4.1, as a pipeline whose stages run
together (the default) or alone, on one machine or many:

* `cache`: backbone features of the train and val splits (`cache.py`). With
  no checkpoint on the synthetic dataset, a backbone is first trained on it
  with the project's training library (`pretrain_backbone`): the paper's
  backbone is ImageNet/COCO-pretrained, and an untrained one gives features
  that carry no signal for the cells to rank on.
* `create`: the Optuna study with one slot per candidate (`study.py`); `run`
  also creates it when it is missing.
* `run`: one worker of the search: pops slots, proposes cells with the
  chosen policy, trains them on the cache (`proxy.py`), records the scores.
* `rerank`: the top K cells fine-tuned end to end (`rerank.py`).
* `report`: leaderboard, best.json and figures (`report.py`).

Library functions take explicit arguments; flags live in `search.py`.
"""

import os
import time

import optuna
from absl import logging

from deeplab_dpc.core import artefacts
from deeplab_dpc.search import SearchError, rerank, samplers, spaces
from deeplab_dpc.search import cache as cache_lib
from deeplab_dpc.search import study as study_lib

STAGES = ("cache", "create", "run", "rerank", "report")
PRUNERS = ("none", "median", "successive_halving", "hyperband")
PRETRAIN_DIRNAME = "pretrained_backbone"


# === cache =================================================================


def pretrain_backbone(
    workdir, info, dataset_dir, *, model_variant, output_stride, depth_multiplier,
    steps, batch_size, crop_size, learning_rate, seed,
):  # fmt: skip
    """Trains DeepLabv3 (ASPP head) from scratch; returns its checkpoint dir.

    Rerunning resumes, or returns at once when the run is already complete.
    BN decay 0.99: DeepLab's 0.9997 cannot settle in a few hundred steps.
    """
    from deeplab_dpc.modeling.model import model_config
    from deeplab_dpc.training import options as options_lib
    from deeplab_dpc.training import trainer

    logdir = os.path.join(workdir, PRETRAIN_DIRNAME)
    model_cfg = model_config(
        model_variant, info.num_classes, head="aspp", output_stride=output_stride,
        depth_multiplier=depth_multiplier, batch_norm_decay=0.99,
    )  # fmt: skip
    options = options_lib.train_options(
        logdir, dataset_dir=dataset_dir, dataset=info.name, train_crop_size=crop_size,
        train_batch_size=batch_size, training_number_of_steps=steps,
        base_learning_rate=learning_rate, seed=seed, save_interval_secs=600,
        save_summaries_secs=1e9, log_steps=max(1, steps // 10),
        max_checkpoints_to_keep=1, deterministic_input=True,  # reproducible
    )  # fmt: skip
    logging.info(
        "Pretraining the %s backbone on %s (%d steps) into %s",
        model_variant, info.name, steps, logdir,
    )  # fmt: skip
    trainer.train(model_cfg, options, info)
    return logdir


def expected_backbone(
    model_variant, output_stride, depth_multiplier=None, checkpoint=None
):
    """The backbone fields a cache must match (None: not checked)."""
    want = {
        "model_variant": model_variant,
        "output_stride": output_stride,
        "depth_multiplier": depth_multiplier,
    }
    if checkpoint is not None:
        from deeplab_dpc.modeling.checkpoints import resolve_checkpoint

        want["checkpoint_sha1"] = cache_lib.checkpoint_sha1(
            resolve_checkpoint(checkpoint)
        )
    return want


def stage_cache(
    cache_dir, checkpoint, info, dataset_dir, *, crop_size, want, **options
):
    """Writes (or reuses) the feature cache; returns it. `options`: see write_feature_cache."""
    start = time.perf_counter()
    cache = cache_lib.write_feature_cache(
        cache_dir, checkpoint, dataset_dir, info, crop_size=crop_size,
        expected_backbone=want, **options,
    )  # fmt: skip
    logging.info(
        "Feature cache %s: %d train / %d val examples, features %s %s, %.1f MB (%.0f s)",
        cache_dir, cache.count("train"), cache.count("val"),
        cache.shards("train")[0]["feature_shape"], cache.info["dtype"],
        (cache.nbytes("train") + cache.nbytes("val")) / 1e6, time.perf_counter() - start,
    )  # fmt: skip
    return cache


# === create / run ==========================================================


def study_attrs(cache, space):
    """Study attrs every worker must share: the cache and the space."""
    return {"cache": cache.fingerprint, "space": space.name, "size": str(space.size)}


def stage_create(storage, study_name, num_trials, cache, space, seed=0):
    """Creates the search study with `num_trials` slots (or joins / tops it up)."""
    if num_trials < 1:
        raise SearchError(f"num_trials must be >= 1, got {num_trials}")
    slots = [(i, {}) for i in range(num_trials)]
    return study_lib.create_study(
        storage, study_name, slots, study_attrs(cache, space), seed
    )


def make_pruner(name, *, eval_every=0, steps=None, reduction_factor=3):
    """The Optuna pruner `name` over proxy steps (the resource); see PRUNERS.

    `none` is the paper's policy: every candidate trains the same fixed short
    schedule. `median` (Optuna's MedianPruner, 5 startup trials),
    `successive_halving` (rungs at `eval_every` * `reduction_factor`^k steps)
    and `hyperband` (brackets of successive halving from `eval_every` to
    `steps`, Li et al., 2018) stop candidates on the intermediate val mIoU
    that the proxy reports every `eval_every` steps, so they need it > 0.
    """
    if name not in PRUNERS:
        raise SearchError(f"unknown pruner {name!r}; known: {', '.join(PRUNERS)}")
    if name == "none":
        return optuna.pruners.NopPruner()
    if eval_every <= 0:
        raise SearchError(
            f"--pruner={name} needs --proxy_eval_every > 0 (steps between the"
            " intermediate val mIoU reports it prunes on)"
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if reduction_factor < 2:
        raise SearchError(
            f"pruner reduction factor must be >= 2, got {reduction_factor}"
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=eval_every, reduction_factor=reduction_factor,
            min_early_stopping_rate=0,
        )  # fmt: skip
    if steps is None or steps <= eval_every:
        raise SearchError(
            f"--pruner=hyperband needs --proxy_steps ({steps}) > --proxy_eval_every"
            f" ({eval_every})"
        )
    return optuna.pruners.HyperbandPruner(
        min_resource=eval_every, max_resource=steps, reduction_factor=reduction_factor
    )


def make_proxy_objective(cache, *, steps, batch_size, learning_rate, seed, jit_compile,
                         eval_every, memory_limit_bytes, upsample_logits=True,
                         compute_dtype="float32"):  # fmt: skip
    """evaluate(spec, trial) for `study.run_worker`: the proxy task of one cell."""
    import keras

    from deeplab_dpc.search import proxy

    crop = cache.info["crop_size"] or cache.shards("train")[0]["label_shape"]
    costs = {}

    def evaluate(spec, trial):
        def on_eval(step, miou):
            trial.report(miou, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (mIoU {miou:.4f})")

        keras.backend.clear_session()
        out = proxy.train_proxy(
            spec, cache, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
            seed=seed, jit_compile=jit_compile, eval_every=eval_every, on_eval=on_eval,
            memory_limit_bytes=memory_limit_bytes, upsample_logits=upsample_logits,
            compute_dtype=compute_dtype,
        )  # fmt: skip
        if eval_every > 0 and trial is not None:
            trial.report(out["miou"], steps)  # the last rung (pruners' max resource)
        key = study_lib.spec_lib.canonical_key(spec)
        if key not in costs:
            costs[key] = proxy.cell_cost(
                spec, cache.feature_channels, cache.output_stride, crop
            )
        params, madds = costs[key]
        attrs = {
            "proxy_miou": out["miou"], "params": params, "madds": madds,
            "train_seconds": out["train_seconds"], "eval_seconds": out["eval_seconds"],
            "final_loss": float(out["losses"][-5:].mean()), "proxy_steps": steps,
            "cache": cache.fingerprint, "cache_dir": artefacts.absolute(cache.cache_dir),
            "proxy_upsample_logits": upsample_logits, "proxy_compute_dtype": compute_dtype,
        }  # fmt: skip
        return {"value": out["miou"], "user_attrs": attrs}

    return evaluate


def _log_result(result, best, bar, desc, done, total, source_trials=None):
    value = "-" if result["value"] is None else f"{result['value']:.4f}"
    note = {"complete": "", "reused": " (reused)", "pruned": " (pruned)"}.get(
        result["state"], f" ({result['state']}: {result.get('why', '')})"
    )
    best_text = "-" if best is None else f"{best:.4f}"
    source = ""
    if source_trials and result["key"] in source_trials:
        source = f" (search trial {source_trials[result['key']]})"
    line = (
        f"{desc} {done}/{total} | trial {result['number']}{source} | {result['key']}"
        f" | mIoU {value}{note} | best {best_text} | {result['seconds']:.1f} s"
    )
    if bar is not None:
        bar.write(line)
    else:
        logging.info("%s", line)


def run_with_progress(study, storage, evaluate, sampler, seed, desc, poll_seconds=1.0,
                      source_trials=None):  # fmt: skip
    """`study.run_worker` with one line per trial; a tqdm bar on a terminal.

    `source_trials` ({key: search trial number}) names, on each re-rank line,
    the search trial the cell comes from.
    """
    from deeplab_dpc.core import console

    done, total = study_lib.progress_counts(study)
    bar = console.progress_bar(total=total, initial=done, desc=desc, unit="trial")
    try:

        def on_result(result):
            history = study_lib.scored_history(study)
            best = max((h.score for h in history), default=None)
            finished = study_lib.progress_counts(study)[0]
            _log_result(result, best, bar, desc, finished, total, source_trials)
            if bar is not None:
                bar.update(finished - bar.n)

        results = study_lib.run_worker(
            study, storage, evaluate, sampler, seed, poll_seconds, on_result
        )
    finally:
        if bar is not None:
            bar.close()
    return results


def stage_run(storage, study_name, cache, space, sampler, objective, *, pruner="none",
              seed=0, num_trials=None):  # fmt: skip
    """One search worker: creates the study if missing, then pulls slots.

    `pruner`: an Optuna pruner or a `make_pruner` name.
    """
    if num_trials is not None:
        stage_create(storage, study_name, num_trials, cache, space, seed)
    if isinstance(pruner, str):
        pruner = make_pruner(pruner)
    study = study_lib.load_study(
        storage, study_name, study_attrs(cache, space), pruner=pruner
    )
    return run_with_progress(study, storage, objective, sampler, seed, "search")


def get_space_and_sampler(space_name, num_branches, sampler_name, **sampler_options):
    space = spaces.get_space(space_name, num_branches)
    return space, samplers.get_sampler(sampler_name, space, **sampler_options)


# === rerank ================================================================


def stage_rerank(storage, study_name, top_k, objective, seed=0, selection="top"):
    """Re-ranks `top_k` cells (`rerank.top_candidates`); returns (pairs, rho).

    Cells re-ranked by an earlier run (another `top_k` or `selection`) are kept
    and count in the pairs; only the missing ones are trained.
    """
    search = study_lib.load_study(storage, study_name, {})
    candidates = rerank.top_candidates(search, top_k, selection)
    if not candidates:
        raise SearchError(f"study {study_name!r} has no completed trial to re-rank")
    name = rerank.rerank_study_name(study_name)
    attrs = {"search_study": study_name}
    study = study_lib.create_study(
        storage, name, rerank.rerank_slots(candidates), attrs, seed
    )
    logging.info(
        "Re-ranking %d cells end to end: search trials %s",
        len(candidates), ", ".join(str(c.number) for c in candidates),
    )  # fmt: skip
    sources = {c.key: c.number for c in candidates}
    run_with_progress(
        study, storage, objective, None, seed, "rerank", source_trials=sources
    )
    pairs = rerank.rerank_pairs(search, study)
    rho = rerank.spearman(pairs)
    logging.info(
        "Re-ranked %d cells; Spearman's rho (proxy vs re-rank) = %s (n = %d%s)",
        len(pairs), "n/a" if rho is None else f"{rho:.3f}", len(pairs),
        ": +-1 by construction" if len(pairs) == 2 else "",
    )  # fmt: skip
    return pairs, rho
