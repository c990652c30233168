"""Figures of an Auto-DeepLab search (matplotlib, written atomically).

* `trellis.png`: the network level as the paper's Fig. 1 / Fig. 3: layers
  across, output strides down, every trellis edge drawn with a width and
  darkness proportional to its beta (transition probability), the decoded
  (Viterbi) path drawn over it;
* `cell.png`: the decoded cell, H^{l-1} and H^{l-2} on the left, the blocks,
  and the concatenation, each edge labelled with its operator;
* `alpha.png`: the softmax weight of every operator, averaged over the cell's
  edges, against the search step;
* `history.png`: convergence against the search step, from `history.json`:
  the mean entropies of alpha and beta (with their uniform values), the
  architecture half's mIoU, the decoded cell's parameter-free branches, and
  the logs at which the decoded cell or path changed (`history_changes`).
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deeplab_dpc.core import artefacts  # noqa: E402
from deeplab_dpc.formats import auto_deeplab_spec as nas_spec  # noqa: E402


def _save(fig, path):
    try:
        artefacts.write_figure(fig, path, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def trellis_figure(probabilities, path, edges, path_out):
    """Draws the trellis with beta and the decoded path; `edges` from `supernet.trellis`."""
    p = np.asarray(probabilities)
    num_layers = p.shape[0]
    num_levels = p.shape[1]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * num_layers, 0.8 + 0.8 * num_levels))
    for layer in range(1, num_layers + 1):
        for source, target in edges[layer]:
            w = float(p[layer - 1, source, target - source + 1])
            ax.plot(
                [layer - 1, layer], [source, target], color=str(0.85 - 0.85 * w),
                linewidth=0.5 + 4.0 * w, zorder=1,
            )  # fmt: skip
    xs = list(range(num_layers + 1))
    ys = [0] + list(path)
    ax.plot(xs, ys, color="tab:red", linewidth=2.5, zorder=2, label="decoded path")
    for layer in range(num_layers + 1):
        levels = [0] if layer == 0 else range(min(layer, num_levels - 1) + 1)
        ax.scatter([layer] * len(levels), list(levels), s=60, zorder=3,
                   color="gray" if layer == 0 else "tab:blue")  # fmt: skip
    ax.set_yticks(range(num_levels))
    ax.set_yticklabels([f"1/{nas_spec.level_stride(v)}" for v in range(num_levels)])
    ax.set_xticks(xs)
    ax.set_xticklabels(["stem"] + [str(i) for i in range(1, num_layers + 1)])
    ax.invert_yaxis()
    ax.set_xlabel("layer")
    ax.set_ylabel("resolution")
    ax.set_title("network level: beta (edge width) and the Viterbi path")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path_out)


def cell_figure(cell, path_out):
    """Draws a decoded cell (nas_spec format)."""
    num_blocks = len(cell)
    fig, ax = plt.subplots(figsize=(3.0 + 1.6 * num_blocks, 3.5))
    pos = {0: (0.0, 1.5), 1: (0.0, -1.5)}
    for b in range(num_blocks):
        pos[b + 2] = (1.5 + 1.5 * b, 1.2 if b % 2 else -1.2)
    out = (1.5 + 1.5 * num_blocks, 0.0)
    for b, block in enumerate(cell):
        x1, y1 = pos[b + 2]
        for k, branch in enumerate(block):
            x0, y0 = pos[branch[nas_spec.INPUT]]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="->", color=f"C{k}",
                                        connectionstyle=f"arc3,rad={0.15 if k else -0.15}"))  # fmt: skip
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + (0.25 if k else -0.25),
                    branch[nas_spec.OP], fontsize=7, ha="center", color=f"C{k}")  # fmt: skip
        ax.annotate("", xy=out, xytext=(x1, y1),
                    arrowprops=dict(arrowstyle="->", color="0.7", linestyle=":"))  # fmt: skip
    names = {0: "H(l-1)", 1: "H(l-2)"}
    for node, (x, y) in pos.items():
        ax.text(x, y, names.get(node, f"block {node - 2}"), ha="center", va="center",
                bbox=dict(boxstyle="round", fc="white", ec="0.3"), fontsize=8)  # fmt: skip
    ax.text(*out, "concat", ha="center", va="center",
            bbox=dict(boxstyle="round", fc="lightyellow", ec="0.3"), fontsize=8)  # fmt: skip
    ax.set_xlim(-0.8, out[0] + 0.8)
    ax.set_ylim(-2.3, 2.3)
    ax.axis("off")
    ax.set_title("decoded cell")
    _save(fig, path_out)


def alpha_figure(history, ops, path_out):
    """Mean softmax(alpha) of each operator against the step."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history:
        steps = [h["step"] for h in history]
        means = np.array([np.asarray(h["alpha"]).mean(axis=0) for h in history])
        for k, op in enumerate(ops):
            ax.plot(steps, means[:, k], label=op)
    ax.set_xlabel("step")
    ax.set_ylabel("mean softmax(alpha) over edges")
    ax.set_title("alpha over the search")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path_out)


def history_changes(history):
    """(cell_changes, path_changes): the steps whose decoded cell / path differ from the log before."""
    cells, paths = [], []
    for before, entry in zip(history, history[1:]):
        if entry["cell"] != before["cell"]:
            cells.append(entry["step"])
        if entry["network"] != before["network"]:
            paths.append(entry["step"])
    return cells, paths


def history_figure(history, num_ops, arch_start_step, path_out):
    """Entropies, architecture mIoU, parameter-free branches and decoding changes by step.

    `num_ops` gives alpha's uniform entropy (ln of it); beta's uniform entropy
    depends on the trellis node (ln 2 or ln 3 outgoing edges), so the first
    log's value, taken before any architecture step, stands for it.
    """
    fig, axes = plt.subplots(4, 1, figsize=(7, 8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 1.5, 1]})  # fmt: skip
    steps = [h["step"] for h in history]
    ax = axes[0]
    ax.plot(steps, [h["alpha_entropy"] for h in history], color="tab:blue",
            label="alpha (operators)")  # fmt: skip
    ax.plot(steps, [h["beta_entropy"] for h in history], color="tab:orange",
            label="beta (paths)")  # fmt: skip
    ax.axhline(np.log(num_ops), color="tab:blue", linestyle=":", linewidth=1,
               label=f"uniform alpha, ln {num_ops}")  # fmt: skip
    if history:
        ax.axhline(history[0]["beta_entropy"], color="tab:orange", linestyle=":",
                   linewidth=1, label="beta at the first log")  # fmt: skip
    ax.set_ylabel("mean entropy (nats)")
    ax.legend(fontsize=7, loc="center left")
    ax = axes[1]
    miou = [h.get("arch_miou") for h in history]
    ax.plot(steps, [np.nan if m is None else m for m in miou], color="tab:green")
    ax.set_ylabel("mIoU on\nthe arch half")
    ax = axes[2]
    ax.step(steps, [h["parameter_free_ops"] for h in history], where="post",
            color="tab:purple")  # fmt: skip
    ax.set_ylabel("parameter-free\nbranches")
    ax = axes[3]
    cells, paths = history_changes(history)
    ax.eventplot([cells, paths], lineoffsets=[1, 0], linelengths=0.8,
                 colors=["tab:red", "tab:brown"])  # fmt: skip
    ax.set_yticks([1, 0])
    ax.set_yticklabels(["cell changed", "path changed"], fontsize=8)
    ax.set_xlabel("step")
    for ax in axes:
        ax.axvline(arch_start_step, color="0.5", linestyle="--", linewidth=1)
    axes[0].set_title("convergence of the search (dashed: first architecture step)")
    _save(fig, path_out)


def write_figures(workdir, model, history, architecture, arch_start_step):
    """trellis.png, cell.png, alpha.png and history.png under `workdir`."""
    trellis_figure(
        model.beta_probabilities().numpy(),
        architecture[nas_spec.NETWORK],
        model.edges,
        os.path.join(workdir, artefacts.SEARCH_TRELLIS_FIGURE),
    )
    cell_figure(
        architecture[nas_spec.CELL], os.path.join(workdir, artefacts.SEARCH_CELL_FIGURE)
    )
    alpha_figure(
        history, model.op_names, os.path.join(workdir, artefacts.SEARCH_ALPHA_FIGURE)
    )
    history_figure(
        history,
        len(model.op_names),
        arch_start_step,
        os.path.join(workdir, artefacts.SEARCH_HISTORY_FIGURE),
    )
