r"""Searches for a Dense Prediction Cell (Chen et al., NeurIPS 2018, Sec. 3.3-4.1).

    python search.py                     # synthetic data, 2-core CPU, see README
    python search.py --dataset=cityscapes --dataset_dir=data/cityscapes/tfrecord \
        --tf_initial_checkpoint=runs/imported/mobilenet_v2 --num_trials=1000 \
        --proxy_steps=30000 --proxy_crop_size=769,769 --rerank_top_k=50

Stages (`--stages`, comma-separated, default all): `cache` (backbone
features of train and val), `create` (the Optuna study, one slot per trial),
`run` (a search worker), `rerank` (top K fine-tuned end to end), `report`
(leaderboard, best.json, figures). Many workers: run `--stages=cache,create`
once, then `--stages=run` on each machine with the same `--storage`
(`postgresql://user:pass@host/db`) and `--cache_dir`. See g3doc/search.md.
"""

import os
import time

from absl import flags, logging

from deeplab_dpc import command_line
from deeplab_dpc.core import artefacts, common, option_table
from deeplab_dpc.core.option_table import Option

FLAGS = flags.FLAGS


def _spaces():
    from deeplab_dpc.search import spaces

    return spaces.SPACES


def _samplers():
    from deeplab_dpc.search import samplers

    return samplers.SAMPLERS


def _model_variants():
    from deeplab_dpc.backbones import MODEL_VARIANTS

    return MODEL_VARIANTS


_POSITIVE = {"low": 1}
# Every flag of the DPC search, once (`option_table.Option` rows): the flags,
# their ranges and choices, all checked before any stage starts.
SEARCH_OPTIONS = (
    Option("workdir", "string", "workdir/search", "Where the cache, study and report go.",
           required=True),
    Option("stages", "string", "cache,create,run,rerank,report", "Stages to run, in order."),
    *option_table.by_name(command_line.DATASET_OPTIONS, "dataset"),
    Option("dataset_dir", "string", None, "TFRecord shards (synthetic: generated)."),
    Option("model_variant", "string", "mobilenet_v2", "Proxy backbone.",
           choices=_model_variants),
    Option("depth_multiplier", "float", None, "MobileNetV2 width (pretraining: 0.5).",
           low=0.0, high=4.0, low_open=True),
    Option("output_stride", "integer", 16, "Backbone output stride of the cache.",
           choices=common.OUTPUT_STRIDES),
    Option("tf_initial_checkpoint", "string", None,
           "Backbone checkpoint (with model_config.json)."),
    Option("pretrain_steps", "integer", 300, "Steps to pretrain a backbone on synthetic.",
           **_POSITIVE),
    Option("pretrain_learning_rate", "float", 0.05, "Pretraining base learning rate.",
           low=0.0),
    Option("cache_dir", "string", None, "Feature cache (default <workdir>/cache)."),
    Option("cache_dtype", "string", "float16", "float16 or float32.",
           choices=("float16", "float32")),  # cache.DTYPES
    Option("cache_train_passes", "integer", 1, "Augmented passes over train to cache.",
           **_POSITIVE),
    Option("cache_memory_gb", "float", 4.0,
           "Train features up to this size (as float32) stay in memory.", low=0.0),
    Option("num_branches", "integer", 5, "Branches of a cell (the paper's B).",
           **_POSITIVE),
    Option("space", "string", "full", "Search space: full or aspp_subsets.",
           choices=_spaces),
    Option("sampler", "string", "paper", "random, paper (uniform + near best) or evolution.",
           choices=_samplers),
    Option("near_best_prob", "float", 0.5, "paper: share of samples near the best.",
           low=0.0, high=1.0),
    Option("near_best_top_k", "integer", 5, "paper: how many best cells to sample near.",
           **_POSITIVE),
    Option("evolution_population", "integer", 20, "evolution: population size.",
           **_POSITIVE),
    Option("evolution_sample_size", "integer", 5, "evolution: tournament size.",
           **_POSITIVE),
    Option("num_trials", "integer", 12, "Candidates in the study (paper: 28K).",
           **_POSITIVE),
    Option("proxy_steps", "integer", 150, "Proxy training steps (paper: 30K).",
           **_POSITIVE),
    Option("proxy_batch_size", "integer", 8, "Proxy batch size (paper: 8).", **_POSITIVE),
    Option("proxy_crop_size", "list", None, "Cached train crop h,w (default: dataset's)."),
    Option("proxy_learning_rate", "float", 0.05, "Proxy base learning rate (poly).",
           low=0.0),
    Option("proxy_eval_every", "integer", 0,
           "Intermediate val mIoU every N steps (pruning).", low=0),
    Option("pruner", "enum", "none",
           "none: the paper's fixed short schedule; else an Optuna pruner on the"
           " intermediate val mIoU (needs --proxy_eval_every).",
           choices=("none", "median", "successive_halving", "hyperband")),
    Option("pruner_reduction_factor", "integer", 3,
           "successive_halving / hyperband: reduction factor.", low=2),
    Option("proxy_upsample_logits", "boolean", False,
           "Proxy loss on logits upsampled to the labels (else labels downsampled: "
           "1.8x faster step at CamVid cache shapes, rho 0.70 vs 0.74; g3doc/search.md)."),
    Option("proxy_compute_dtype", "enum", "float32",
           "Proxy cell compute dtype (bfloat16: Keras mixed_bfloat16).",
           choices=("float32", "bfloat16")),
    Option("jit_compile", "boolean", False, "Compile the proxy step with XLA."),
    Option("study_name", "string", "dpc_search", "Optuna study name.", required=True),
    Option("storage", "string", None,
           "Optuna RDB URL (default sqlite:///<workdir>/search.db)."),
    Option("heartbeat_interval", "integer", 10, "Seconds between trial heartbeats.",
           **_POSITIVE),
    Option("grace_period", "integer", 60,
           "Seconds without heartbeat before a trial is retried.", **_POSITIVE),
    Option("max_retry", "integer", 3, "Retries of a trial whose worker died.", low=0),
    Option("rerank_top_k", "integer", 4, "Cells to re-rank end to end (paper: 50).",
           **_POSITIVE),
    Option("rerank_selection", "enum", "top",
           "Cells to re-rank: the top K, or K spread evenly over the proxy ranking.",
           choices=("top", "spread")),
    Option("rerank_steps", "integer", 100, "Fine-tuning steps per re-ranked cell.",
           **_POSITIVE),
    Option("rerank_batch_size", "integer", 8, "Fine-tuning batch size.", **_POSITIVE),
    Option("rerank_learning_rate", "float", 0.02, "Fine-tuning base learning rate.",
           low=0.0),
    Option("rerank_fine_tune_batch_norm", "boolean", True,
           "Batch norm in training mode while re-ranking (else frozen)."),
    Option("rerank_freeze_backbone_batch_norm", "boolean", False,
           "Backbone batch norm frozen while re-ranking (folded-BN imports)."),
    Option("rerank_last_layer_gradient_multiplier", "float", 1.0,
           "Re-ranking: gradient multiplier of the cell and logits (DeepLab's flag).",
           low=0.0),
    Option("seed", "integer", 0, "Seed of the cache, the policies and the trainers.",
           low=0, high=2**32 - 1),
    Option("search_method", "enum", "dpc",
           "dpc: the DPC study (these flags); auto_deeplab: the Auto-DeepLab search "
           "with its defaults into --workdir (its own knobs: "
           "python -m deeplab_dpc.search.auto_deeplab --help).",
           choices=("dpc", "auto_deeplab")),
)  # fmt: skip
command_line.define_options(SEARCH_OPTIONS)

NEEDS_STORAGE = ("create", "run", "rerank", "report")
NEEDS_CACHE = ("create", "run", "rerank")


def _check_flags():
    """Every flag value, before any stage starts; ValueError names the flag.

    The table's ranges and choices first (`--proxy_steps=-1` fails in a
    second; the choices import the search spaces and samplers), then crops,
    paths and the dataset.
    """
    command_line.option_values(SEARCH_OPTIONS)
    if FLAGS.proxy_crop_size is not None:
        option_table.check_crop("--proxy_crop_size", FLAGS.proxy_crop_size)
    if FLAGS.search_method != "auto_deeplab" and artefacts.is_remote(
        FLAGS.cache_dir or FLAGS.workdir
    ):
        raise ValueError(
            f"--cache_dir: the feature cache is memory-mapped and must be local, not "
            f"{FLAGS.cache_dir or FLAGS.workdir + '/cache'}; give a local --cache_dir"
        )
    for name in ("workdir", "cache_dir"):
        path = FLAGS[name].value  # a remote one (gs://) is checked when written
        if path and not artefacts.is_remote(path):
            if os.path.exists(path) and not os.path.isdir(path):
                raise ValueError(f"--{name}: {path} exists and is not a directory")
    if FLAGS.tf_initial_checkpoint:
        command_line.require_checkpoint(
            FLAGS.tf_initial_checkpoint, "tf_initial_checkpoint"
        )
    from deeplab_dpc.data import registry

    try:
        return registry.get_dataset_info(FLAGS.dataset)
    except ValueError as e:
        raise ValueError(f"--dataset: {e}") from None


def _stages():
    from deeplab_dpc.search.stages import STAGES

    stages = [s.strip() for s in FLAGS.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(
            f"--stages: unknown {unknown or FLAGS.stages!r}; known: {','.join(STAGES)}"
        )
    return stages


def _crop_size(info):
    crop = FLAGS.proxy_crop_size or info.default_crop_size
    if len(crop) != 2:
        raise ValueError(
            f"--proxy_crop_size: needs h,w, got {','.join(map(str, crop))}"
        )
    return [int(v) for v in crop]


def _checkpoint(info, dataset_dir, crop):
    from deeplab_dpc.search import stages as stages_lib

    if FLAGS.tf_initial_checkpoint:
        return FLAGS.tf_initial_checkpoint
    if info.name != "synthetic":
        raise ValueError(f"--tf_initial_checkpoint: needed for dataset {info.name}")
    return stages_lib.pretrain_backbone(
        FLAGS.workdir, info, dataset_dir, model_variant=FLAGS.model_variant,
        output_stride=FLAGS.output_stride, depth_multiplier=FLAGS.depth_multiplier or 0.5,
        steps=FLAGS.pretrain_steps, batch_size=FLAGS.proxy_batch_size, crop_size=crop,
        learning_rate=FLAGS.pretrain_learning_rate, seed=FLAGS.seed,
    )  # fmt: skip


def _cache(stages, info, dataset_dir, crop):
    from deeplab_dpc.search import cache as cache_lib
    from deeplab_dpc.search import stages as stages_lib

    cache_dir = FLAGS.cache_dir or os.path.join(FLAGS.workdir, "cache")
    checkpoint = FLAGS.tf_initial_checkpoint
    want = stages_lib.expected_backbone(
        FLAGS.model_variant, FLAGS.output_stride, FLAGS.depth_multiplier, checkpoint
    )
    if "cache" not in stages:
        return cache_lib.open_cache(cache_dir, expected_backbone=want)
    return stages_lib.stage_cache(
        cache_dir, _checkpoint(info, dataset_dir, crop), info, dataset_dir,
        crop_size=crop, want=want, train_passes=FLAGS.cache_train_passes,
        batch_size=FLAGS.proxy_batch_size, dtype=FLAGS.cache_dtype, seed=FLAGS.seed,
    )  # fmt: skip


def _proxy_objective(cache):
    from deeplab_dpc.search import stages as stages_lib

    return stages_lib.make_proxy_objective(
        cache, steps=FLAGS.proxy_steps, batch_size=FLAGS.proxy_batch_size,
        learning_rate=FLAGS.proxy_learning_rate, seed=FLAGS.seed,
        jit_compile=FLAGS.jit_compile, eval_every=FLAGS.proxy_eval_every,
        memory_limit_bytes=int(FLAGS.cache_memory_gb * (1 << 30)),
        upsample_logits=FLAGS.proxy_upsample_logits,
        compute_dtype=FLAGS.proxy_compute_dtype,
    )  # fmt: skip


def _rerank_objective(cache, info, dataset_dir, crop):
    from deeplab_dpc.search import rerank

    return rerank.make_rerank_objective(
        cache, info, dataset_dir, FLAGS.workdir, steps=FLAGS.rerank_steps,
        batch_size=FLAGS.rerank_batch_size, crop_size=crop,
        learning_rate=FLAGS.rerank_learning_rate, seed=FLAGS.seed,
        fine_tune_batch_norm=FLAGS.rerank_fine_tune_batch_norm,
        freeze_backbone_batch_norm=FLAGS.rerank_freeze_backbone_batch_norm,
        last_layer_gradient_multiplier=FLAGS.rerank_last_layer_gradient_multiplier,
    )  # fmt: skip


def _write_config(stages):
    names = [option.name for option in SEARCH_OPTIONS]
    config = {n: FLAGS[n].value for n in names} | {"stages_run": stages}
    artefacts.makedirs(FLAGS.workdir)
    artefacts.write_json(
        config, os.path.join(FLAGS.workdir, "search_config.json"), sort_keys=False
    )


def _report(storage, out_dir):
    from deeplab_dpc.search import report, rerank
    from deeplab_dpc.search import study as study_lib

    search = study_lib.load_study(storage, FLAGS.study_name, {})
    try:
        reranked = study_lib.load_study(
            storage, rerank.rerank_study_name(FLAGS.study_name), {}, wait_seconds=0
        )
    except study_lib.StudyError:
        reranked = None
    summary = report.write_report(search, reranked, out_dir)
    best = summary["best"]
    rerank_text = "-" if best["rerank_miou"] is None else f"{best['rerank_miou']:.4f}"
    print(
        f"Best cell: {best['key']} (proxy mIoU {best['proxy_miou']:.4f}, re-rank mIoU "
        f"{rerank_text})\n"
        f"Outputs in {artefacts.absolute(out_dir)}: leaderboard.md, leaderboard.csv, "
        "best.json (train.py --dpc_spec), summary.json, proxy_scores.png, "
        "proxy_vs_rerank.png, best_cell.png"
    )


def _auto_deeplab():
    """The default Auto-DeepLab search (all its options:
    `python -m deeplab_dpc.search.auto_deeplab --help`), checked as there."""
    from deeplab_dpc.search.auto_deeplab import options, search

    opts = options.search_options(
        dataset=FLAGS.dataset, dataset_dir=FLAGS.dataset_dir, seed=FLAGS.seed,
        jit_compile=FLAGS.jit_compile,
    )  # fmt: skip
    search.AutoDeepLabSearcher(FLAGS.workdir, opts).run()


def main(argv):
    del argv
    info = _check_flags()
    if FLAGS.search_method == "auto_deeplab":
        return _auto_deeplab()
    from deeplab_dpc.core import console
    from deeplab_dpc.search import stages as stages_lib
    from deeplab_dpc.search import study as study_lib

    console.quiet_optuna()
    stages = _stages()
    space, sampler = stages_lib.get_space_and_sampler(
        FLAGS.space, FLAGS.num_branches, FLAGS.sampler,
        near_best_prob=FLAGS.near_best_prob, top_k=FLAGS.near_best_top_k,
        population=FLAGS.evolution_population, sample_size=FLAGS.evolution_sample_size,
    )  # fmt: skip
    pruner = stages_lib.make_pruner(
        FLAGS.pruner, eval_every=FLAGS.proxy_eval_every, steps=FLAGS.proxy_steps,
        reduction_factor=FLAGS.pruner_reduction_factor,
    )  # fmt: skip
    crop = _crop_size(info)
    storage = None
    if any(s in NEEDS_STORAGE for s in stages):
        try:
            url = FLAGS.storage or study_lib.default_storage_url(FLAGS.workdir)
            storage = study_lib.open_storage(
                url, FLAGS.heartbeat_interval, FLAGS.grace_period, FLAGS.max_retry
            )
        except study_lib.StorageError as e:
            raise ValueError(f"--storage: {e}") from None
    _write_config(stages)
    clock = {"start": time.perf_counter()}

    def timed(name):
        now = time.perf_counter()
        clock[name] = now - clock.get("last", clock["start"])
        clock["last"] = now

    cache = None
    if any(s in ("cache",) + NEEDS_CACHE for s in stages):
        cache = _cache(stages, info, FLAGS.dataset_dir, crop)
        timed("cache" if "cache" in stages else "open cache")
    if "create" in stages:
        stages_lib.stage_create(
            storage, FLAGS.study_name, FLAGS.num_trials, cache, space, FLAGS.seed
        )
        logging.info(
            "Study %s: %d trial slots, space %s (%s cells)",
            FLAGS.study_name, FLAGS.num_trials, space.name, space.size,
        )  # fmt: skip
        timed("create")
    if "run" in stages:
        stages_lib.stage_run(
            storage, FLAGS.study_name, cache, space, sampler, _proxy_objective(cache),
            pruner=pruner, seed=FLAGS.seed, num_trials=FLAGS.num_trials,
        )  # fmt: skip
        timed("run")
    if "rerank" in stages:
        rerank_fn = _rerank_objective(cache, info, FLAGS.dataset_dir, crop)
        stages_lib.stage_rerank(
            storage,
            FLAGS.study_name,
            FLAGS.rerank_top_k,
            rerank_fn,
            FLAGS.seed,
            FLAGS.rerank_selection,
        )
        timed("rerank")
    if "report" in stages:
        _report(storage, os.path.join(FLAGS.workdir, "report"))
        timed("report")
    times = ", ".join(
        f"{name} {seconds:.0f} s"
        for name, seconds in clock.items()
        if name not in ("start", "last")
    )
    logging.info(
        "Done: stages %s in %s (%s; total %.0f s)", ",".join(stages),
        artefacts.absolute(FLAGS.workdir), times, time.perf_counter() - clock["start"],
    )  # fmt: skip


if __name__ == "__main__":
    command_line.run(main)
