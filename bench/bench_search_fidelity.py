r"""Proxy options and multi-fidelity policies measured on a real feature cache.

    W=workdir/camvid   # the CamVid runs of g3doc/camvid.md
    COMMON="--cache_dir=$W/cache_os16_161 --proxy_steps=100 --proxy_learning_rate=0.05 \
      --rerank_storage=sqlite:///$W/fidelity/search.db --rerank_study=aspp_fidelity.rerank"
    # 1. --proxy_upsample_logits and bf16 on the 31 ASPP subsets: speed and rank fidelity
    python bench/bench_search_fidelity.py --experiment=proxy_options $COMMON \
      --json=proxy_options.json
    # 2. the paper's fixed schedule against Hyperband at one wall-clock budget
    python bench/bench_search_fidelity.py --experiment=multifidelity $COMMON \
      --budget_minutes=30 --proxy_eval_every=20 --json=multifidelity.json \
      --figure=multifidelity.png

`proxy_options`: every cell of `--space` (default the 31 ASPP subsets)
trained on the cache with each option set of `--options` (`up` / `down`:
logits upsampled to the labels / labels downsampled to the logits; `fp32` /
`bf16`), one after another in one process; prints, per option set, the
seconds per candidate, Spearman's rho against the end-to-end re-rank scores
of `--rerank_study` (the cells it re-ranked) and against the proxy scores
of the first option set (all cells).

`multifidelity`: one search per policy of `--policies` on a fresh SQLite
study (in a temp dir, or `<study_dir>/<policy>/search.db`, study name = the
policy), each given `--budget_minutes` of wall clock (no trial starts after
it; the running one finishes): `paper` (every candidate trains
`--proxy_steps`, no pruner) and `hyperband` (`--pruner=hyperband` on the val
mIoU reported every `--proxy_eval_every` steps; `successive_halving` and
`median` work too). Both use `--sampler`. With `--study_dir` the wall clock
spent is kept in the study, so a killed run resumes with the rest of its
budget, and a policy whose budget is spent is only reported: run one process
per policy side by side, re-rank each study with `search.py
--stages=rerank,report`, then run the bench once more with all policies for
the table and figure. Prints candidates evaluated, completed and pruned, the
best proxy score, rho of the completed cells' final proxy scores against the
re-rank scores (`--rerank_study` / `--reference_json`, else each policy's own
re-rank study `<policy>.rerank` beside it), the wall clock and the 1-minute
load average at the start and end of each run; `--figure` plots the best
score against wall-clock time and the re-ranked cells. Not a test.
"""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deeplab_dpc.core import console  # noqa: E402

console.quiet_tensorflow()  # before TensorFlow loads (--verbosity=1 brings its logging back)

import keras  # noqa: E402
import optuna  # noqa: E402
from absl import app, flags  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from deeplab_dpc.formats import dpc_spec as spec_lib  # noqa: E402
from deeplab_dpc.search import cache as cache_lib  # noqa: E402
from deeplab_dpc.search import proxy, rerank, samplers, spaces, stages  # noqa: E402
from deeplab_dpc.search import study as study_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("experiment", "proxy_options", ["proxy_options", "multifidelity"], "")
flags.DEFINE_string("cache_dir", None, "The feature cache (search.py's).")
flags.DEFINE_string("space", "aspp_subsets", "Search space.")
flags.DEFINE_integer("num_branches", 5, "Branches (space full).")
flags.DEFINE_integer("proxy_steps", 100, "Proxy steps per candidate.")
flags.DEFINE_integer("proxy_batch_size", 8, "Proxy batch size.")
flags.DEFINE_float("proxy_learning_rate", 0.05, "Proxy base learning rate.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("rerank_storage", None, "Storage of the re-rank study.")
flags.DEFINE_string("rerank_study", None, "Re-rank study (end-to-end scores).")
flags.DEFINE_string(
    "reference_json", None,
    "Instead of a re-rank study: a JSON whose 'rerank' maps canonical keys to "
    "end-to-end mIoU (bench/camvid_round1_rerank.json: g3doc/camvid.md's 14).",
)  # fmt: skip
flags.DEFINE_bool(
    "upsample_logits", True, "multifidelity: the proxy's --proxy_upsample_logits."
)
flags.DEFINE_string(
    "study_dir", None,
    "multifidelity: keep each policy's study in <study_dir>/<policy>/search.db "
    "(study name = the policy) to re-rank with search.py; default a temp dir.",
)  # fmt: skip
flags.DEFINE_list("options", ["up-fp32", "down-fp32", "up-bf16", "down-bf16"], "")
flags.DEFINE_list("policies", ["paper", "hyperband"], "paper or a pruner name.")
flags.DEFINE_string("sampler", "random", "Policy sampler (multifidelity).")
flags.DEFINE_float("budget_minutes", 30.0, "Wall clock per policy (multifidelity).")
flags.DEFINE_integer("proxy_eval_every", 20, "Report interval of the pruners.")
flags.DEFINE_integer("reduction_factor", 3, "Hyperband / successive halving.")
flags.DEFINE_integer(
    "max_trials",
    300,
    "Slots per policy (at most the space's size); the budget ends it.",
)
flags.DEFINE_integer(
    "max_cells", None, "proxy_options: only the first N cells (smoke runs)."
)
flags.DEFINE_string("json", None, "Write the figures here.")
flags.DEFINE_string("figure", None, "multifidelity: best score vs time (PNG).")


def rerank_scores():
    """{key: end-to-end mIoU} of the re-rank study ({} without one)."""
    if FLAGS.reference_json:
        with open(FLAGS.reference_json) as f:
            return {k: float(v) for k, v in json.load(f)["rerank"].items()}
    if not FLAGS.rerank_study:
        return {}
    study = optuna.load_study(
        study_name=FLAGS.rerank_study, storage=FLAGS.rerank_storage
    )
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {t.user_attrs[study_lib.KEY]: t.value for t in done}


def rho(scores, reference):
    pairs = [(k, scores[k], reference[k]) for k in sorted(scores) if k in reference]
    return rerank.spearman(pairs), len(pairs)


def proxy_options(cache, cells, reference):
    results = {}
    for option in FLAGS.options:
        side, dtype = option.split("-")
        upsample, compute = side == "up", {"fp32": "float32", "bf16": "bfloat16"}[dtype]
        scores, seconds = {}, []
        for spec in cells:
            keras.backend.clear_session()
            out = proxy.train_proxy(
                spec, cache, steps=FLAGS.proxy_steps, batch_size=FLAGS.proxy_batch_size,
                learning_rate=FLAGS.proxy_learning_rate, seed=FLAGS.seed,
                upsample_logits=upsample, compute_dtype=compute,
            )  # fmt: skip
            scores[spec_lib.canonical_key(spec)] = out["miou"]
            seconds.append(out["seconds"])
            print(f"{option} {spec_lib.canonical_key(spec)} {out['miou']:.4f} "
                  f"{out['seconds']:.1f} s", flush=True)  # fmt: skip
        results[option] = {"scores": scores, "seconds": seconds}
    first = results[FLAGS.options[0]]["scores"]
    print("\n| option | s per candidate | rho vs re-rank (n) | rho vs first |")
    print("| --- | --- | --- | --- |")
    for option, r in results.items():
        r["rho_rerank"], r["n_rerank"] = rho(r["scores"], reference)
        r["rho_first"], _ = rho(r["scores"], first)
        r["mean_seconds"] = sum(r["seconds"]) / len(r["seconds"])
        print(f"| {option} | {r['mean_seconds']:.1f} | {r['rho_rerank']} "
              f"({r['n_rerank']}) | {r['rho_first']} |")  # fmt: skip
    return results


class BudgetSpent(KeyboardInterrupt):
    """Raised at the start of a trial once the policy's wall-clock budget is spent."""


SPENT = "bench_budget_spent_seconds"  # study attr: wall clock spent by this policy
ELAPSED = "bench_budget_elapsed_seconds"  # trial attr: when it finished, in that clock
LOADS = "bench_load_averages"  # study attr: [(elapsed, 1-min load average), ...]


def own_rerank_scores(storage, policy):
    """{key: end-to-end mIoU} of study `<policy>.rerank` in `storage` ({} if none)."""
    try:
        study = optuna.load_study(
            study_name=rerank.rerank_study_name(policy), storage=storage
        )
    except KeyError:
        return {}
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {t.user_attrs[study_lib.KEY]: t.value for t in done}


def one_policy(cache, space, policy, tmp, reference):
    """Runs (or resumes, or only reports) one policy's search in `tmp`/search.db.

    The wall clock spent is kept in the study (attr SPENT, updated after every
    trial), so a killed run resumes with the rest of its budget; a study whose
    budget is spent is only reported (how separate runs' policies are merged
    into one table and figure).
    """
    storage = study_lib.open_storage(study_lib.default_storage_url(tmp))
    pruning = policy != "paper"
    pruner = stages.make_pruner(
        policy if pruning else "none", eval_every=FLAGS.proxy_eval_every,
        steps=FLAGS.proxy_steps, reduction_factor=FLAGS.reduction_factor,
    )  # fmt: skip
    slots = min(FLAGS.max_trials, space.size)
    stages.stage_create(storage, policy, slots, cache, space, FLAGS.seed)
    study = study_lib.load_study(
        storage, policy, stages.study_attrs(cache, space), pruner=pruner
    )
    objective = stages.make_proxy_objective(
        cache, steps=FLAGS.proxy_steps, batch_size=FLAGS.proxy_batch_size,
        learning_rate=FLAGS.proxy_learning_rate, seed=FLAGS.seed, jit_compile=False,
        eval_every=FLAGS.proxy_eval_every if pruning else 0, memory_limit_bytes=4 << 30,
        upsample_logits=FLAGS.upsample_logits,
    )  # fmt: skip
    spent = float(study.user_attrs.get(SPENT, 0.0))
    budget = 60 * FLAGS.budget_minutes
    start = time.time()
    loads = list(study.user_attrs.get(LOADS, []))

    def elapsed():
        return spent + time.time() - start

    def note_load():
        loads.append((round(elapsed(), 1), os.getloadavg()[0]))
        study.set_user_attr(LOADS, loads)

    def evaluate(spec, trial):
        if elapsed() > budget:
            raise BudgetSpent
        began = time.time()
        line = f"{policy} trial {trial.number} | {spec_lib.canonical_key(spec)} | "
        try:
            out = objective(spec, trial)
        except optuna.TrialPruned as e:
            print(f"{line}{e} | {time.time() - began:.1f} s", flush=True)
            raise
        finally:
            study.set_user_attr(SPENT, elapsed())
        out["user_attrs"][ELAPSED] = elapsed()
        print(
            f"{line}mIoU {out['value']:.4f} | {time.time() - began:.1f} s"
            f" | {elapsed():.0f} of {budget:.0f} s spent",
            flush=True,
        )
        return out

    sampler = samplers.get_sampler(FLAGS.sampler, space)
    if spent < budget:
        note_load()
        print(f"{policy}: {spent:.0f} of {budget:.0f} s spent, running", flush=True)
        try:
            study_lib.run_worker(study, storage, evaluate, sampler, FLAGS.seed, 0.5)
        except BudgetSpent:
            pass
        study.set_user_attr(SPENT, max(elapsed(), budget))
        note_load()
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    scores = {t.user_attrs[study_lib.KEY]: t.value for t in complete}
    if not reference:  # the policy's own re-rank (search.py --stages=rerank), if run
        reference = own_rerank_scores(storage, policy)
    curve, best = [], None
    for t in sorted(complete, key=lambda t: t.user_attrs.get(ELAPSED, 0.0)):
        best = t.value if best is None else max(best, t.value)
        curve.append((t.user_attrs.get(ELAPSED, 0.0), best))
    r, n = rho(scores, reference)
    pairs = [(k, scores[k], reference[k]) for k in sorted(scores) if k in reference]
    return {
        "evaluated": len(complete) + len(pruned), "completed": len(complete),
        "pruned": len(pruned), "best": max(scores.values(), default=None),
        "rho_rerank": r, "n_rerank": n,
        "wall_seconds": float(study.user_attrs.get(SPENT, 0.0)),
        "load_averages": loads, "curve": curve, "scores": scores, "pairs": pairs,
    }  # fmt: skip


def multifidelity(cache, space, reference):
    results = {}
    for policy in FLAGS.policies:
        if FLAGS.study_dir:
            keep = os.path.join(FLAGS.study_dir, policy)
            os.makedirs(keep, exist_ok=True)
            results[policy] = one_policy(cache, space, policy, keep, reference)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            results[policy] = one_policy(cache, space, policy, tmp, reference)
    print(
        "\n| policy | evaluated | completed | pruned | best proxy | rho vs re-rank (n)"
        " | wall clock | load average (1 min) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for policy, r in results.items():
        best = "-" if r["best"] is None else f"{r['best']:.4f}"
        rho_text = "-" if r["rho_rerank"] is None else f"{r['rho_rerank']:.3f}"
        loads = ", ".join(f"{v:.1f}" for _, v in r["load_averages"])
        print(f"| {policy} | {r['evaluated']} | {r['completed']} | {r['pruned']} | "
              f"{best} | {rho_text} ({r['n_rerank']}) | {r['wall_seconds'] / 60:.1f} min "
              f"| {loads} |")  # fmt: skip
    if FLAGS.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pairs = {p: r["pairs"] for p, r in results.items() if r["pairs"]}
        fig, axes = plt.subplots(1, 2 if pairs else 1, figsize=(11 if pairs else 6, 4))
        ax = axes[0] if pairs else axes
        for policy, r in results.items():
            if r["curve"]:
                t, best = zip(*r["curve"])
                ax.step([v / 60 for v in t], best, where="post", label=policy)
        ax.set_xlabel("wall clock (minutes)")
        ax.set_ylabel("best proxy val mIoU")
        ax.set_title("best proxy score so far")
        ax.legend()
        if pairs:
            for policy, ps in pairs.items():
                r = results[policy]
                axes[1].scatter([p for _, p, _ in ps], [e for _, _, e in ps],
                                label=f"{policy}: rho {r['rho_rerank'] if r['rho_rerank'] is not None else 'n/a'} (n = {r['n_rerank']})")  # fmt: skip
                # P1, H1, ...: the policy's initial and the cell's proxy rank
                # among its re-ranked cells (the cells themselves are in the JSON).
                ranked = sorted(ps, key=lambda x: -x[1])
                for rank, (_, proxy, end) in enumerate(ranked, 1):
                    axes[1].annotate(
                        f"{policy[0].upper()}{rank}", (proxy, end), fontsize=8,
                        xytext=(4, -10 if policy == "hyperband" else 4),
                        textcoords="offset points",
                    )  # fmt: skip
            axes[1].set_xlabel("final proxy val mIoU")
            axes[1].set_ylabel("end-to-end re-rank val mIoU")
            axes[1].set_title("re-ranked cells")
            axes[1].legend()
        fig.tight_layout()
        fig.savefig(FLAGS.figure, dpi=120)
    return results


def main(argv):
    del argv
    console.quiet_optuna()  # no "A new study created in RDB" lines
    if not FLAGS.cache_dir:
        raise app.UsageError("--cache_dir: required (search.py's feature cache)")
    cache = cache_lib.open_cache(FLAGS.cache_dir)
    space = spaces.get_space(FLAGS.space, FLAGS.num_branches)
    reference = rerank_scores()
    if FLAGS.experiment == "proxy_options":
        if space.size > 1000:
            raise app.UsageError("proxy_options trains every cell: use a small --space")
        cells = list(space.enumerate())[: FLAGS.max_cells]
        results = proxy_options(cache, cells, reference)
    else:
        results = multifidelity(cache, space, reference)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"flags": FLAGS.flag_values_dict(), "results": results}, f,
                      indent=2, default=str)  # fmt: skip


if __name__ == "__main__":
    app.run(main)
