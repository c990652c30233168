"""The search's report: leaderboard, best.json and the paper's figures.

Chen et al. (NeurIPS 2018): Fig. 4a (distribution of proxy scores over all
candidates), Fig. 4b (proxy vs re-ranked scores, with their rank
correlation), Fig. 5 (the best cell: branches, inputs, operations, rates).

Outputs in `out_dir`:

* `leaderboard.csv` and `leaderboard.md`: rank, trial, key, proxy mIoU,
  re-rank mIoU, params and MAdds of the cell, seconds.
* `best.json`: the best cell in the spec format (`train.py --dpc_spec`):
  best by re-rank score when any cell was re-ranked, else by proxy score.
* `summary.json`: the best cell's scores, rho, counts, study and cache.
* `proxy_scores.png`, `proxy_vs_rerank.png`, `best_cell.png`.
"""

import csv
import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from deeplab_dpc import artefacts  # noqa: E402
from deeplab_dpc import spec as spec_lib  # noqa: E402
from deeplab_dpc.search import SearchError, rerank  # noqa: E402
from deeplab_dpc.search import study as study_lib  # noqa: E402

COLUMNS = (
    "rank",
    "trial",
    "key",
    "proxy_miou",
    "rerank_miou",
    "params",
    "madds",
    "seconds",
)


def leaderboard_rows(search_study, rerank_study=None):
    """One row per distinct cell, best proxy score first."""
    reranked = {}
    if rerank_study is not None:
        for t in rerank_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            reranked[t.user_attrs[study_lib.KEY]] = t.value
    trials = {
        t.number: t
        for t in search_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    history = sorted(
        study_lib.scored_history(search_study), key=lambda s: (-s.score, s.number)
    )
    rows = []
    for rank, item in enumerate(history, 1):
        attrs = trials[item.number].user_attrs
        rows.append(
            {
                "rank": rank, "trial": item.number, "key": item.key,
                "proxy_miou": item.score, "rerank_miou": reranked.get(item.key),
                "params": attrs.get("params"), "madds": attrs.get("madds"),
                "seconds": attrs.get(study_lib.SECONDS), "spec": item.spec,
            }
        )  # fmt: skip
    return rows


def _fmt(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_leaderboard(rows, out_dir):
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    artefacts.write_text(table.getvalue(), os.path.join(out_dir, "leaderboard.csv"))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_fmt(row[c], 1 if c == "seconds" else 4) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    artefacts.write_text(
        "\n".join(lines) + "\n", os.path.join(out_dir, "leaderboard.md")
    )


def pick_best(rows):
    """Best by re-rank mIoU when any row has one, else by proxy mIoU."""
    reranked = [r for r in rows if r["rerank_miou"] is not None]
    if reranked:
        return max(reranked, key=lambda r: (r["rerank_miou"], -r["rank"])), "rerank"
    return rows[0], "proxy"


# === Figures ===============================================================


def plot_proxy_scores(rows, path):
    """Fig. 4a: histogram of the proxy mIoU of every evaluated cell."""
    scores = [r["proxy_miou"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(scores, bins=max(5, min(50, len(scores) // 2)), color="#4a7ebb")
    ax.axvline(
        max(scores), color="#c0392b", linestyle="--", label=f"best {max(scores):.3f}"
    )
    ax.set_xlabel("proxy mIoU (val)")
    ax.set_ylabel("cells")
    ax.set_title(f"Proxy scores of {len(scores)} cells")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_proxy_vs_rerank(pairs, rho, path):
    """Fig. 4b: proxy vs re-rank mIoU, with Spearman's rho."""
    fig, ax = plt.subplots(figsize=(5, 5))
    if pairs:
        proxy_scores = [p for _, p, _ in pairs]
        rerank_scores = [r for _, _, r in pairs]
        ax.scatter(proxy_scores, rerank_scores, color="#4a7ebb")
        rho_text = "n/a" if rho is None else f"{rho:.2f}"
        ax.set_title(f"Spearman's rho = {rho_text} (n = {len(pairs)})")
    else:
        ax.text(0.5, 0.5, "no re-ranked cells", ha="center", va="center")
        ax.set_title("Proxy vs re-rank")
    ax.set_xlabel("proxy mIoU (cached features)")
    ax.set_ylabel("re-rank mIoU (fine-tuned end to end)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _op_label(branch):
    if branch[spec_lib.OP] == spec_lib.PYRAMID_POOLING:
        return "avg pyramid pool\ngrid {}x{}".format(*branch[spec_lib.GRID_SIZE])
    if branch[spec_lib.KERNEL] == [1, 1]:
        return "1x1 conv"
    return "3x3 sep conv\nrate {}x{}".format(*branch[spec_lib.RATE])


def _layout(branches):
    """(x, y) of F, every branch (by depth in the DAG) and the concat node."""
    depth = {-1: 0}
    for i, b in enumerate(branches):
        depth[i] = depth[b[spec_lib.INPUT]] + 1
    columns = {}
    for i in range(len(branches)):
        columns.setdefault(depth[i], []).append(i)
    pos = {-1: (0.0, 0.0)}
    for d, members in columns.items():
        for j, i in enumerate(members):
            pos[i] = (float(d), (len(members) - 1) / 2.0 - j)
    pos["concat"] = (float(max(columns) + 1), 0.0)
    return pos


def plot_cell(spec, path, title="Best DPC"):
    """Fig. 5: the cell as a DAG: F -> branches -> concat -> 1x1 projection."""
    branches = spec_lib.parse_spec(spec, allow_outside_space=True)
    pos = _layout(branches)
    width = pos["concat"][0] + 1.5
    height = max(abs(y) for _, y in pos.values()) * 2 + 2
    fig, ax = plt.subplots(figsize=(2.4 * width, 1.3 * height + 1))
    box = {"boxstyle": "round,pad=0.4", "fc": "#eaf1fb", "ec": "#4a7ebb"}
    arrow = {"arrowstyle": "->", "color": "#555555", "shrinkA": 28, "shrinkB": 28}
    ax.text(
        *pos[-1],
        "F\n(backbone)",
        ha="center",
        va="center",
        bbox={**box, "fc": "#f3f3f3"},
    )
    for i, b in enumerate(branches):
        ax.annotate("", pos[i], pos[b[spec_lib.INPUT]], arrowprops=arrow)
        # Every branch feeds the concat; an edge that skips a column is curved
        # so it is not hidden behind the branches it would pass straight through.
        skips = pos["concat"][0] - pos[i][0] > 1
        bend = {"connectionstyle": "arc3,rad=-0.3"} if skips else {}
        ax.annotate(
            "", pos["concat"], pos[i], arrowprops={**arrow, "color": "#bbbbbb", **bend}
        )
        ax.text(
            *pos[i],
            f"branch {i}\n{_op_label(b)}",
            ha="center",
            va="center",
            bbox=box,
            fontsize=8,
        )
    ax.text(
        *pos["concat"],
        "concat\n1x1 conv 256",
        ha="center",
        va="center",
        bbox={**box, "fc": "#fdf2e9"},
    )
    ax.set_xlim(-0.7, width - 0.8)
    ax.set_ylim(-height / 2, height / 2)
    ax.axis("off")
    ax.set_title(f"{title}\n{spec_lib.canonical_key(branches)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# === The stage =============================================================


def write_report(search_study, rerank_study, out_dir, extra=None):
    """Writes every report file into `out_dir`; returns the summary dict."""
    rows = leaderboard_rows(search_study, rerank_study)
    if not rows:
        raise SearchError(
            f"study {search_study.study_name!r} has no completed trial yet"
        )
    os.makedirs(out_dir, exist_ok=True)
    write_leaderboard(rows, out_dir)
    best, by = pick_best(rows)
    spec_lib.save_spec(best["spec"], os.path.join(out_dir, "best.json"))
    pairs = rerank.rerank_pairs(search_study, rerank_study) if rerank_study else []
    rho = rerank.spearman(pairs)
    plot_proxy_scores(rows, os.path.join(out_dir, "proxy_scores.png"))
    plot_proxy_vs_rerank(pairs, rho, os.path.join(out_dir, "proxy_vs_rerank.png"))
    plot_cell(best["spec"], os.path.join(out_dir, "best_cell.png"),
              title=f"Best DPC (by {by} mIoU, proxy rank {best['rank']})")  # fmt: skip
    summary = {
        "study": search_study.study_name,
        "num_cells": len(rows),
        "num_reranked": len(pairs),
        "spearman_rho": rho,
        "best": {k: best[k] for k in COLUMNS} | {"chosen_by": by, "spec": best["spec"]},
        "failed_trials": len(
            search_study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        ),
        **(extra or {}),
    }
    artefacts.write_json(
        summary, os.path.join(out_dir, "summary.json"), sort_keys=False
    )
    return summary
