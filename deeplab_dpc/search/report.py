"""The search's report: leaderboard, best.json and the paper's figures.

Chen et al. (NeurIPS 2018): Fig. 4a (distribution of proxy scores over all
candidates), Fig. 4b (proxy vs re-ranked scores, with their rank
correlation), Fig. 5 (the best cell: branches, inputs, operations, rates).

Outputs in `out_dir`:

* `leaderboard.csv` and `leaderboard.md`: rank, trial, key, proxy mIoU,
  re-rank mIoU, params and MAdds of the cell, seconds; the Markdown file
  first explains the columns and the cell notation (`LEGEND`), and ends with
  the per-class IoU of every re-ranked cell.
* `best.json`: the best cell in the spec format (`train.py --dpc_spec`):
  best by re-rank score when any cell was re-ranked, else by proxy score.
* `summary.json`: the best cell's scores (its per-class IoU when re-ranked),
  rho and its n, counts, study and cache.
* `proxy_scores.png`, `proxy_vs_rerank.png`, `best_cell.png`.
"""

import csv
import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from deeplab_dpc.core import artefacts  # noqa: E402
from deeplab_dpc.formats import dpc_spec as spec_lib  # noqa: E402
from deeplab_dpc.search import SearchError, rerank  # noqa: E402
from deeplab_dpc.search import study as study_lib  # noqa: E402

MAX_POINT_LABELS = 30

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
    reranked, per_class = {}, {}
    if rerank_study is not None:
        for t in rerank_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            reranked[t.user_attrs[study_lib.KEY]] = t.value
            per_class[t.user_attrs[study_lib.KEY]] = t.user_attrs.get(
                rerank.PER_CLASS_IOU
            )
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
                "per_class_iou": per_class.get(item.key),
            }
        )  # fmt: skip
    return rows


def _fmt(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


LEGEND = """\
# Leaderboard

One row per distinct cell, best proxy score first.

| column | meaning |
| --- | --- |
| rank | rank by proxy mIoU (1: best) |
| trial | the search trial (Optuna trial number) that scored the cell |
| key | the cell, in canonical notation (below) |
| proxy_miou | val mIoU of the cell trained on cached backbone features (the proxy task) |
| rerank_miou | val mIoU after fine-tuning backbone and cell end to end (`-`: not re-ranked) |
| params | parameters of the cell (the backbone excluded) |
| madds | multiply-adds of the cell on the cached feature size |
| seconds | wall time of the proxy trial |

Cell notation: branches joined by `+` read the backbone features F;
`name[a,b]` is a branch whose output branches `a` and `b` read. Names:
`conv1x1` (1x1 convolution), `sep3x3rHxW` (3x3 separable convolution with
atrous rate H x W), `poolHxW` (average pyramid pooling to an H x W grid).
All branches are concatenated and projected by a 1x1 convolution (256).

"""


def write_leaderboard(rows, out_dir):
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    artefacts.write_text(table.getvalue(), os.path.join(out_dir, "leaderboard.csv"))
    lines = [LEGEND + "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_fmt(row[c], 1 if c == "seconds" else 4) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += per_class_table(rows)
    artefacts.write_text(
        "\n".join(lines) + "\n", os.path.join(out_dir, "leaderboard.md")
    )


def per_class_table(rows):
    """Markdown lines: per-class val IoU of each re-ranked cell (none: no lines)."""
    reranked = [r for r in rows if r.get("per_class_iou")]
    if not reranked:
        return []
    names = list(reranked[0]["per_class_iou"])
    lines = [
        "", "## Per-class IoU of the re-ranked cells", "",
        "Val IoU of each class after the end-to-end fine-tuning (`rerank_miou` is"
        " their mean), best re-rank score first.", "",
        "| rank | key | rerank_miou | " + " | ".join(names) + " |",
        "|" + "---|" * (3 + len(names)),
    ]  # fmt: skip
    for row in sorted(reranked, key=lambda r: (-r["rerank_miou"], r["rank"])):
        ious = [_fmt(row["per_class_iou"].get(n)) for n in names]
        lines.append(
            f"| {row['rank']} | {row['key']} | {_fmt(row['rerank_miou'])} | "
            + " | ".join(ious)
            + " |"
        )
    return lines


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
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(6))
    spread = max(scores) - min(scores)
    ax.set_title(
        f"Proxy scores of {len(scores)} cells (range {min(scores):.3f}-"
        f"{max(scores):.3f}, spread {spread:.3f})",
        fontsize=10,
    )
    ax.legend()
    fig.tight_layout()
    artefacts.write_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_proxy_vs_rerank(pairs, rho, path, trials=None):
    """Fig. 4b: proxy vs re-rank mIoU, with Spearman's rho and its n.

    Points are labelled with their search trial (`trials`: {key: number})
    and proxy rank when at most `MAX_POINT_LABELS` points are shown.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    if pairs:
        proxy_scores = [p for _, p, _ in pairs]
        rerank_scores = [r for _, _, r in pairs]
        ax.scatter(proxy_scores, rerank_scores, color="#4a7ebb", zorder=3)
        if len(pairs) <= MAX_POINT_LABELS:
            middle = (min(proxy_scores) + max(proxy_scores)) / 2
            for key, p, r in pairs:
                label = (trials or {}).get(key)
                right = p > middle  # labels point inwards: none leaves the axes
                ax.annotate(
                    key if label is None else label, (p, r),
                    xytext=(-6 if right else 6, 5), textcoords="offset points",
                    ha="right" if right else "left", fontsize=7,
                )  # fmt: skip
        ax.margins(0.25)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        rho_text = "n/a" if rho is None else f"{rho:.2f}"
        note = " (\u00b11 by construction)" if len(pairs) == 2 else ""
        ax.set_title(
            f"Spearman's rho = {rho_text} (n = {len(pairs)}){note}", fontsize=10
        )
    else:
        ax.text(0.5, 0.5, "no re-ranked cells", ha="center", va="center")
        ax.set_title("Proxy vs re-rank")
    ax.set_xlabel("proxy mIoU (cached features)")
    ax.set_ylabel("re-rank mIoU (fine-tuned end to end)")
    fig.tight_layout()
    artefacts.write_figure(fig, path, dpi=120)
    plt.close(fig)


def _op_label(branch):
    if branch[spec_lib.OP] == spec_lib.PYRAMID_POOLING:
        return "avg pyramid pool\ngrid {}x{}".format(*branch[spec_lib.GRID_SIZE])
    if branch[spec_lib.KERNEL] == [1, 1]:
        return "1x1 conv"
    return "3x3 sep conv\nrate {}x{}".format(*branch[spec_lib.RATE])


def _rows(branches):
    """Branch order top to bottom: depth first from F, children below parents."""
    children = {i: [] for i in range(-1, len(branches))}
    for i, b in enumerate(branches):
        children[b[spec_lib.INPUT]].append(i)
    order, stack = [], list(reversed(children[-1]))
    while stack:
        i = stack.pop()
        order.append(i)
        stack.extend(reversed(children[i]))
    return order


def _layout(branches):
    """(x, y) of F, every branch and the concat node.

    x is the depth in the DAG; each branch has its own row, so an edge from
    a branch to the concat runs along its row and crosses no other label,
    and an edge from parent to child spans one column gap only.
    """
    depth = {-1: 0}
    for i, b in enumerate(branches):
        depth[i] = depth[b[spec_lib.INPUT]] + 1
    rows = _rows(branches)
    middle = (len(rows) - 1) / 2.0
    pos = {-1: (0.0, 0.0)}
    for row, i in enumerate(rows):
        pos[i] = (float(depth[i]), middle - row)
    pos["concat"] = (float(max(depth.values()) + 1), 0.0)
    return pos


BOX_W, BOX_H = 0.62, 0.72  # in column / row units


def _box(ax, xy, text, color, fontsize=8):
    x, y = xy
    ax.add_patch(
        FancyBboxPatch(
            (x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
            boxstyle="round,pad=0,rounding_size=0.06", fc=color, ec="#4a7ebb",
            zorder=2,
        )
    )  # fmt: skip
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=3)


def _arrow(ax, start, end, color="#555555", head=True):
    style = "-|>,head_length=5,head_width=3" if head else "-"
    ax.add_patch(
        FancyArrowPatch(
            start, end, arrowstyle=style, color=color, lw=1.2,
            shrinkA=0, shrinkB=0, mutation_scale=1, zorder=1,
        )
    )  # fmt: skip


def plot_cell(spec, path, title="Best DPC"):
    """Fig. 5: the cell as a DAG: F -> branches -> concat -> 1x1 projection.

    Parent -> child edges are dark; every branch also feeds the concat (grey
    edges along its row into a bus before the concat). Every edge ends in an
    arrowhead at a box border or at the bus.
    """
    branches = spec_lib.parse_spec(spec, allow_outside_space=True)
    pos = _layout(branches)
    concat_x = pos["concat"][0]
    rows = len(branches)
    fig, ax = plt.subplots(figsize=(1.9 * (concat_x + 1), 0.8 * max(rows, 2) + 1.0))
    half_w, half_h = BOX_W / 2, BOX_H / 2
    for i, b in enumerate(branches):
        (x0, y0), (x1, y1) = pos[b[spec_lib.INPUT]], pos[i]
        _arrow(ax, (x0 + half_w, y0), (x1 - half_w, y1))
    bus_x = concat_x - half_w - 0.18
    ys = [pos[i][1] for i in range(rows)]
    for i in range(rows):
        x, y = pos[i]
        _arrow(ax, (x + half_w, y), (bus_x, y), color="#aaaaaa")
    _arrow(ax, (bus_x, min(ys + [0.0])), (bus_x, max(ys + [0.0])), "#aaaaaa", False)
    _arrow(ax, (bus_x, 0.0), (concat_x - half_w, 0.0), color="#aaaaaa")
    _box(ax, pos[-1], "F\n(backbone)", "#f3f3f3", 9)
    for i, b in enumerate(branches):
        _box(ax, pos[i], f"branch {i}\n{_op_label(b)}", "#eaf1fb")
    _box(ax, pos["concat"], "concat\n1x1 conv\n256", "#fdf2e9", 9)
    top = max(ys + [0.0]) + half_h + 0.1
    bottom = min(ys + [0.0]) - half_h - 0.1
    ax.set_xlim(-half_w - 0.05, concat_x + half_w + 0.05)
    ax.set_ylim(bottom, top)
    ax.axis("off")
    ax.set_title(f"{title}\n{spec_lib.canonical_key(branches)}", fontsize=9)
    fig.tight_layout()
    artefacts.write_figure(fig, path, dpi=120)
    plt.close(fig)


# === The stage =============================================================


def write_report(search_study, rerank_study, out_dir, extra=None):
    """Writes every report file into `out_dir`; returns the summary dict."""
    rows = leaderboard_rows(search_study, rerank_study)
    if not rows:
        raise SearchError(
            f"study {search_study.study_name!r} has no completed trial yet"
        )
    artefacts.makedirs(out_dir)
    write_leaderboard(rows, out_dir)
    best, by = pick_best(rows)
    spec_lib.save_spec(best["spec"], os.path.join(out_dir, "best.json"))
    pairs = rerank.rerank_pairs(search_study, rerank_study) if rerank_study else []
    rho = rerank.spearman(pairs)
    plot_proxy_scores(rows, os.path.join(out_dir, "proxy_scores.png"))
    trials = {r["key"]: f"trial {r['trial']}, rank {r['rank']}" for r in rows}
    plot_proxy_vs_rerank(
        pairs, rho, os.path.join(out_dir, "proxy_vs_rerank.png"), trials
    )
    plot_cell(best["spec"], os.path.join(out_dir, "best_cell.png"),
              title=f"Best DPC (by {by} mIoU, proxy rank {best['rank']})")  # fmt: skip
    summary = {
        "study": search_study.study_name,
        "num_cells": len(rows),
        "num_reranked": len(pairs),
        "spearman_rho": rho,
        "spearman_n": len(pairs),
        "best": {k: best[k] for k in COLUMNS}
        | {
            "chosen_by": by,
            "spec": best["spec"],
            "per_class_iou": best["per_class_iou"],
        },
        "failed_trials": len(
            search_study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        ),
        **(extra or {}),
    }
    artefacts.write_json(
        summary, os.path.join(out_dir, "summary.json"), sort_keys=False
    )
    return summary
