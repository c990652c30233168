"""Tables and figures of an experiment plan, from its committed records alone.

`report(plan)` reads `results/*.json` of the plan (see `tools/experiment.py`)
and writes beside the plan `report.md` (every row: seeds, parameters,
multiply-adds, training cost, val mIoU mean and sample standard deviation per
evaluation; the significance of the plan's comparisons; per-class IoU) and
`curves.png` (val mIoU against training steps, every seed and the row mean).
With `page`, the block between `<!-- experiment-report:NAME -->` and
`<!-- /experiment-report:NAME -->` of that Markdown page is replaced by the
same tables, so the page is regenerated from the records.

Significance: Welch's two-sided t-test (unequal variances) on the per-seed
mIoUs of two rows, at the 0.05 level; with 2-3 seeds per row only large
differences can pass it, which the table says next to the p-value.
"""

import os
import re
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deeplab_dpc.core import artefacts  # noqa: E402

ALPHA = 0.05
REPORT = "report.md"
CURVES = "curves.png"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ReportError(ValueError):
    """Nothing to report, or a page without its block; one line."""


def _mean_std(values):
    """Mean and sample standard deviation (None where undefined) of the known values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (
        statistics.stdev(values) if len(values) > 1 else None
    )


def _pct(mean, std):
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def welch(a, b):
    """(t, p) of Welch's two-sided t-test, or None with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    if len(set(a)) == 1 and len(set(b)) == 1:
        return None  # no variance on either side: the test is undefined
    result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def _by_row(plan, records):
    rows = {name: [] for name in plan["rows_by_name"]}
    for record in records.values():
        rows.setdefault(record["row"], []).append(record)
    for items in rows.values():
        items.sort(key=lambda r: r["seed"])
    return rows


def _miou(record, key):
    result = record["results"].get(key)
    return None if result is None else result["miou"]


def tables(plan, records):
    """The report's Markdown lines."""
    keys = list(plan["evaluations"])
    rows = _by_row(plan, records)
    lines = [
        f"Records: {len(records)} of {len(plan['runs'])} runs "
        f"(`{os.path.relpath(plan['results_dir'], ROOT)}/`). "
        "val mIoU in %, mean ± sample standard deviation over seeds.",
        "",
        "| row | seeds | params (M) | MAdds (G) | s/step | train min/run | "
        + " | ".join(f"val mIoU {k}" for k in keys)
        + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(keys),
    ]
    for name, items in rows.items():
        if not items:
            lines.append(
                f"| {name} | 0 | | | | | " + " | ".join("-" for _ in keys) + " |"
            )
            continue
        model = items[0].get("model") or {}
        params = f"{model['params'] / 1e6:.2f}" if model.get("params") else "-"
        madds = f"{model['madds'] / 1e9:.2f}" if model.get("madds") else "-"
        sps, _ = _mean_std([r["seconds_per_step"] for r in items])
        # Seconds per step x steps: a resumed run's killed process left no
        # wall time in its record, its steps still cost.
        train_min, _ = _mean_std(
            [r["seconds_per_step"] * r["steps"] / 60 for r in items]
        )
        cells = [_pct(*_mean_std([_miou(r, k) for r in items])) for k in keys]
        lines.append(
            f"| {name} | {', '.join(str(r['seed']) for r in items)} | {params} | "
            f"{madds} | {sps:.2f} | {train_min:.0f} | " + " | ".join(cells) + " |"
        )
    crop = next(
        (r["model"]["crop_size"] for r in records.values() if r.get("model")), None
    )
    if crop:
        lines += [
            "",
            f"Parameters (batch norm included) and multiply-adds at {crop[0]}x{crop[1]}.",
        ]
    comparisons = plan.get("comparisons", [])
    if comparisons:
        lines += [
            "",
            f"Significance: Welch's two-sided t-test on the per-seed mIoUs, alpha = {ALPHA}.",
            "",
            "| comparison | evaluation | difference (points) | t | p | verdict |",
            "|---|---|---:|---:|---:|---|",
        ]
        for a, b in comparisons:
            for key in keys:
                va = [
                    m for m in (_miou(r, key) for r in rows.get(a, [])) if m is not None
                ]
                vb = [
                    m for m in (_miou(r, key) for r in rows.get(b, [])) if m is not None
                ]
                if not va or not vb:
                    lines.append(
                        f"| {a} vs {b} | {key} | - | - | - | records missing |"
                    )
                    continue
                diff = 100 * (sum(va) / len(va) - sum(vb) / len(vb))
                test = welch(va, vb)
                if test is None:
                    lines.append(
                        f"| {a} vs {b} | {key} | {diff:+.2f} | - | - | too few seeds |"
                    )
                    continue
                t, p = test
                verdict = (
                    (f"{a} better" if t > 0 else f"{b} better")
                    if p < ALPHA
                    else "not significant"
                )
                lines.append(
                    f"| {a} vs {b} | {key} | {diff:+.2f} | {t:.2f} | {p:.3f} | {verdict} "
                    f"(n = {len(va)}, {len(vb)}) |"
                )
    lines += _class_table(rows, keys[0])
    hosts = sorted({(r["host"].get("cpu") or "?") for r in records.values()})
    loads = [
        r["load"]["mean_1min"]
        for r in records.values()
        if r["load"]["mean_1min"] is not None
    ]
    if hosts:
        lines += [
            "",
            f"Hosts: {'; '.join(hosts)}. Mean 1-minute load while training: "
            + (f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not sampled")
            + " (the run's own training included).",
        ]
    return lines


def _class_table(rows, key):
    classes = None
    for items in rows.values():
        for r in items:
            if key in r["results"]:
                classes = list(r["results"][key]["per_class_iou"])
                break
        if classes:
            break
    if not classes:
        return []
    names = [n for n, items in rows.items() if items]
    lines = [
        "",
        f"Per-class IoU ({key}, %, mean over seeds):",
        "",
        "| class | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for cls in classes:
        cells = []
        for name in names:
            values = [r["results"][key]["per_class_iou"].get(cls) for r in rows[name]
                      if key in r["results"]]  # fmt: skip
            mean, _ = _mean_std(values)
            cells.append("-" if mean is None else f"{100 * mean:.1f}")
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    return lines


def curves_figure(plan, records, path):
    """val mIoU against steps: every seed thin, the row mean thick."""
    rows = _by_row(plan, records)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, items) in enumerate(r for r in rows.items() if r[1]):
        color = colors[i % len(colors)]
        by_step = {}
        for r in items:
            steps, mious = zip(*r["curve"]) if r["curve"] else ((), ())
            ax.plot(steps, [100 * m for m in mious], color=color, lw=0.8, alpha=0.45)
            for s, m in r["curve"]:
                by_step.setdefault(s, []).append(m)
        steps = sorted(s for s, v in by_step.items() if len(v) == len(items))
        ax.plot(steps, [100 * sum(by_step[s]) / len(by_step[s]) for s in steps],
                color=color, lw=2.2, marker="o", ms=3,
                label=f"{name} (n = {len(items)})")  # fmt: skip
    key = next(iter(plan["evaluations"]))
    ax.set_xlabel("training step")
    ax.set_ylabel(f"val mIoU (%), {key}")
    ax.set_title(f"{plan['name']}: val mIoU against training steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = artefacts.temporary_path(path) + ".png"
    try:
        fig.savefig(tmp)
        artefacts.commit(tmp, path)
    finally:
        artefacts.remove_quietly(tmp)
        plt.close(fig)


def _marks(name):
    return f"<!-- experiment-report:{name} -->", f"<!-- /experiment-report:{name} -->"


def update_page(page, name, body):
    """Replaces the marked block of `page` with `body`; PlanError if it has none."""
    with open(page, encoding="utf-8") as f:
        text = f.read()
    start, end = _marks(name)
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ReportError(f"{page}: no block {start} ... {end} to rewrite")
    text = pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)
    artefacts.write_text(text, page)


def report(plan, records, page=None):
    """Writes report.md and curves.png beside the plan (and the page); returns lines said.

    `plan`: `tools.experiment.load_plan`'s; `records`: {run id: record}.
    """
    if not records:
        raise ReportError(
            f"{plan['file']}: no records yet under {plan['results_dir']}; "
            "'experiment run' writes them"
        )
    folder = os.path.dirname(plan["file"])
    figure = os.path.join(folder, CURVES)
    curves_figure(plan, records, figure)
    lines = tables(plan, records)
    artefacts.write_text(
        f"# {plan['name']}: report\n\nGenerated by `python -m deeplab_dpc.tools.experiment "
        f"report` from the records.\n\n![val mIoU against steps]({CURVES})\n\n"
        + "\n".join(lines)
        + "\n",
        os.path.join(folder, REPORT),
    )
    said = [f"wrote {os.path.relpath(os.path.join(folder, REPORT))} and "
            f"{os.path.relpath(figure)} from {len(records)} records"]  # fmt: skip
    if page:
        rel = os.path.relpath(figure, os.path.dirname(os.path.abspath(page)))
        update_page(page, plan["name"],
                    f"![val mIoU against steps]({rel})\n\n" + "\n".join(lines))  # fmt: skip
        said.append(f"rewrote the {plan['name']} block of {page}")
    return said
