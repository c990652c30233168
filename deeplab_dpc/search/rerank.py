"""Re-ranking: the proxy's top K cells re-trained with the backbone fine-tuned.

Chen et al. (NeurIPS 2018, Sec. 4.1): the top 50 cells of the proxy task are
re-trained end to end (backbone fine-tuned, longer schedule) and the best of
that re-ranking is the result; the 12th best by proxy score won. The rank
correlation between proxy and re-ranked scores (Spearman's rho, 0.36-0.47 in
the paper) measures the proxy's fidelity.

Each candidate trains through the project's training library
(`deeplab_dpc.training.trainer.train`, the loop of train.py), initialised
from the cache's backbone checkpoint (backbone only: the cell and logits
start fresh), and is scored by the evaluation library on the validation
split. The re-ranking is an Optuna study of its own (`<study>.rerank`) with
one pre-filled slot per candidate, so it runs on any number of workers with
the same heartbeat and retry as the search; a killed candidate resumes from
its last checkpoint in `<workdir>/rerank/<spec hash>`.

Deviation: the batch-norm decay of the fine-tuned model is derived from the
number of steps (`proxy.bn_momentum_for_steps`), as in the proxy, for short
CPU runs; the paper's schedule is DeepLab's (decay 0.9997, 30K+ steps).
"""

import contextlib
import os

from absl import logging
from optuna.trial import TrialState

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.search import study as study_lib

RERANK_SUFFIX = ".rerank"
PROXY_MIOU = "proxy_miou"
PROXY_TRIAL = "proxy_trial"
RERANK_MIOU = "rerank_miou"
PER_CLASS_IOU = "per_class_iou"
TABLE_FILENAME = "per_class_iou.txt"  # beside results.json in <logdir>/eval


@contextlib.contextmanager
def _library_info_off():
    """The training and evaluation libraries' INFO lines off (step lines, the
    per-class table): the re-rank prints one line per cell (`stages`) and keeps
    the table in its files. A user who asked for debug output keeps them."""
    level = logging.get_verbosity()
    if level > logging.INFO:  # --verbosity=1 or more: debugging
        yield
        return
    logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        logging.set_verbosity(level)


def rerank_study_name(study_name):
    return study_name + RERANK_SUFFIX


SELECTIONS = ("top", "spread")


def top_candidates(search_study, k, selection="top"):
    """`k` distinct cells of the search by proxy score: Scored tuples.

    `top`: the best `k` (the paper's re-ranking). `spread`: `k` cells at evenly
    spaced ranks from the best to the worst (a fidelity check over the whole
    proxy ranking, not only its top, which has little spread of scores).
    """
    if selection not in SELECTIONS:
        raise ValueError(
            f"rerank selection must be one of {SELECTIONS}, got {selection!r}"
        )
    history = study_lib.scored_history(search_study)
    history.sort(key=lambda s: (-s.score, s.number))
    if selection == "top" or k >= len(history):
        return history[:k]
    if k == 1:
        return history[:1]
    ranks = sorted({round(i * (len(history) - 1) / (k - 1)) for i in range(k)})
    return [history[r] for r in ranks]


def rerank_slots(candidates):
    """One pre-filled slot per candidate, keyed by its canonical key."""
    return [
        (
            c.key,
            {
                study_lib.SPEC: c.spec,
                study_lib.KEY: c.key,
                PROXY_MIOU: c.score,
                PROXY_TRIAL: c.number,
            },
        )
        for c in candidates
    ]


def make_rerank_objective(
    cache, info, dataset_dir, workdir, *, steps, batch_size, crop_size,
    learning_rate, seed, weight_decay=4e-5, fine_tune_batch_norm=True,
    freeze_backbone_batch_norm=False, last_layer_gradient_multiplier=1.0,
):  # fmt: skip
    """evaluate(spec, trial) for `study.run_worker`: fine-tune, then val mIoU.

    `fine_tune_batch_norm=False` keeps every batch norm in inference mode (its
    gamma and beta still train), as DeepLab recommends for small batches and
    as a backbone imported with folded batch norm (gamma 1, mean 0, var 1)
    needs: in training mode its layers would normalise by batch statistics
    that the folded weights were never scaled for, and the pretrained
    function would be lost at the first step. `freeze_backbone_batch_norm`
    freezes the backbone's alone (the head's follows `fine_tune_batch_norm`):
    what `g3doc/camvid.md` uses for the imported MobileNetV2, with
    `last_layer_gradient_multiplier` (DeepLab's flag) giving the fresh cell
    and logits a larger learning rate than the pretrained backbone.
    """
    from deeplab_dpc.core import artefacts
    from deeplab_dpc.evaluation import evaluator
    from deeplab_dpc.modeling.model import model_config
    from deeplab_dpc.search import proxy
    from deeplab_dpc.training import options as options_lib
    from deeplab_dpc.training import trainer

    backbone = cache.backbone

    def evaluate(spec, trial):
        del trial
        logdir = os.path.join(workdir, "rerank", spec_lib.spec_hash(spec))
        model_cfg = model_config(
            backbone["model_variant"], info.num_classes, head="dpc", dpc_spec=spec,
            output_stride=backbone["output_stride"],
            depth_multiplier=backbone["depth_multiplier"],
            batch_norm_decay=proxy.bn_momentum_for_steps(steps),
        )  # fmt: skip
        options = options_lib.train_options(
            logdir, dataset_dir=dataset_dir, dataset=info.name,
            train_crop_size=crop_size, train_batch_size=batch_size,
            training_number_of_steps=steps, base_learning_rate=learning_rate,
            weight_decay=weight_decay, tf_initial_checkpoint=cache.info["checkpoint"],
            initialize_last_layer=False, fine_tune_batch_norm=fine_tune_batch_norm,
            freeze_backbone_batch_norm=freeze_backbone_batch_norm,
            last_layer_gradient_multiplier=last_layer_gradient_multiplier,
            seed=seed, save_interval_secs=600,
            save_summaries_secs=1e9, log_steps=max(1, steps // 5),
            max_checkpoints_to_keep=1, deterministic_input=True,  # reproducible
        )  # fmt: skip
        with _library_info_off():
            trainer.train(model_cfg, options, info)
            results = evaluator.evaluate(
                logdir, os.path.join(logdir, "eval"), info, dataset_dir
            )
        artefacts.write_text(
            evaluator.format_table(results) + "\n",
            os.path.join(logdir, "eval", TABLE_FILENAME),
        )
        return {
            "value": results["miou"],
            "user_attrs": {
                RERANK_MIOU: results["miou"], "logdir": logdir,
                PER_CLASS_IOU: results["per_class_iou"],
            },
        }  # fmt: skip

    return evaluate


def rerank_pairs(search_study, rerank_study):
    """[(key, proxy mIoU, re-rank mIoU)] for every re-ranked cell."""
    pairs = []
    for t in rerank_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        pairs.append((t.user_attrs[study_lib.KEY], t.user_attrs[PROXY_MIOU], t.value))
    unique = {key: (key, p, r) for key, p, r in sorted(pairs)}
    return list(unique.values())


def spearman(pairs):
    """Spearman's rho of proxy vs re-rank scores (None below 2 pairs or if constant).

    With 2 pairs rho is +-1 by construction; the report shows n beside it.
    """
    proxy, end_to_end = [p for _, p, _ in pairs], [r for _, _, r in pairs]
    if len(pairs) < 2 or len(set(proxy)) < 2 or len(set(end_to_end)) < 2:
        return None  # undefined; scipy would warn (ConstantInputWarning) and return NaN
    from scipy import stats

    rho = stats.spearmanr(proxy, end_to_end)[0]
    return None if rho != rho else round(float(rho), 6)
