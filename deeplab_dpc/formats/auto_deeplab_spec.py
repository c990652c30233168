"""Auto-DeepLab architectures as data: parse, validate, write, count, decode.

Auto-DeepLab ("Hierarchical Neural Architecture Search for Semantic Image
Segmentation", Liu et al., CVPR 2019, arXiv:1901.02985) searches two levels:

* the cell: B blocks; block i sums two branches, each one operator applied to
  one input chosen from H^{l-1} (the previous cell), H^{l-2} (the one before)
  and the blocks 0..i-1 of the same cell; the cell output concatenates all
  blocks (Sec. 3.1);
* the network: the path of resolution levels through L layers after the stem
  (level 0, 1, 2, 3 = output stride 4, 8, 16, 32), each layer at most one
  level above or below the previous one, the first at level 0 or 1 (Sec. 3.2).

An architecture is one JSON object::

    {"cell": [[{"input": 1, "op": "atrous_5x5"},
               {"input": 0, "op": "separable_3x3_2"}],
              ...],
     "network": [0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1]}

with one list of two branches per block. Inputs are numbered as the official
DeepLab's `hiddenstate_indices` (`core/nas_cell.py`): 0 is H^{l-1}, 1 is
H^{l-2} and 2 + j is block j, so a block i may read 0 .. i + 1. Operator names
are the official ones (`core/nas_network.py`, `nas_cell.py`): note that in the
official NASBaseCell (as in NASNet) ``"none"`` is the *skip connection*
(identity); the paper's "no connection" is called ``"zero"`` here, exists only
in the search and never appears in a decoded architecture.

Pure Python + numpy (no TensorFlow), like `deeplab_dpc.formats.dpc_spec`.

Deviations, all deliberate:

* The paper states 2.9 x 10^4 network-level paths for L = 12. Counting every
  legal path of 12 layers after the stem (first layer at 1/4 or 1/8, as the
  paper's text says) gives 75025; the paper's figure is 28657, the count for
  11 layers (equivalently 12 layers with the first fixed at 1/4).
  `network_space_size` counts exactly and the tests pin both numbers.
* The cell's output concatenates every block (the paper's H^l); the official
  `used_hiddenstates` mechanism (concatenate only unused blocks, from NASNet)
  is not part of the format. `to_official` writes the equivalent
  `used_hiddenstates = [1, 1, 0, ..., 0]` of `hnasnet`.
"""

import itertools
import json
import math
import os

import numpy as np

from deeplab_dpc.core import artefacts

# --- Format vocabulary ------------------------------------------------------
CELL = "cell"
NETWORK = "network"
INPUT = "input"
OP = "op"

# --- The paper's operator set, official names (Sec. 3.1) --------------------
SEPARABLE_3X3 = "separable_3x3_2"  # two ReLU-sepconv-BN layers, as NASNet
SEPARABLE_5X5 = "separable_5x5_2"
ATROUS_3X3 = "atrous_3x3"  # 3x3 conv with rate 2
ATROUS_5X5 = "atrous_5x5"
AVG_POOL_3X3 = "avg_pool_3x3"
MAX_POOL_3X3 = "max_pool_3x3"
SKIP = "none"  # the official name of the identity (skip connection)
ZERO = "zero"  # no connection: search only

SEARCH_OPS = (
    SEPARABLE_3X3,
    SEPARABLE_5X5,
    ATROUS_3X3,
    ATROUS_5X5,
    AVG_POOL_3X3,
    MAX_POOL_3X3,
    SKIP,
    ZERO,
)
ARCHITECTURE_OPS = SEARCH_OPS[:-1]  # what a decoded cell may hold

NUM_LEVELS = 4  # output strides 4, 8, 16, 32
DEFAULT_NUM_LAYERS = 12
DEFAULT_NUM_BLOCKS = 5
PREV = 0  # input index of H^{l-1}
PREV_PREV = 1  # input index of H^{l-2}
_FIELDS = (CELL, NETWORK)


class ArchitectureError(ValueError):
    """An invalid architecture; the message is one line naming file and field."""


def level_stride(level):
    """Output stride of a resolution level: 4 * 2**level."""
    return 4 * 2 ** int(level)


# === Parsing ===============================================================


def _show(value):
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _error(source, field, problem):
    return ArchitectureError(f"{source}: field '{field}': {problem}")


def _parse_branch(branch, block, k, source):
    field = f"{CELL}[{block}][{k}]"
    if not isinstance(branch, dict):
        raise _error(
            source, field, f"expected an object {{input, op}}, got {_show(branch)}"
        )
    for key in branch:
        if key not in (INPUT, OP):
            raise _error(source, f"{field}.{key}", "unknown field (allowed: input, op)")
    for key in (INPUT, OP):
        if key not in branch:
            raise _error(source, f"{field}.{key}", "missing")
    value = branch[INPUT]
    if not _is_int(value) or not 0 <= value <= block + 1:
        raise _error(
            source,
            f"{field}.{INPUT}",
            f"{_show(value)} is not an input of block {block} (0: H^(l-1), "
            f"1: H^(l-2), 2..{block + 1}: blocks 0..{block - 1})"
            if block
            else f"{_show(value)} is not an input of block 0 (0: H^(l-1), 1: H^(l-2))",
        )
    op = branch[OP]
    if op == ZERO:
        raise _error(
            source, f"{field}.{OP}", "'zero' (no connection) exists only in the search"
        )
    if not isinstance(op, str) or op not in ARCHITECTURE_OPS:
        raise _error(
            source,
            f"{field}.{OP}",
            f"unknown operator {_show(op)} (one of {', '.join(ARCHITECTURE_OPS)})",
        )
    return {INPUT: int(value), OP: op}


def parse_cell(cell, source="architecture"):
    """Validates a cell (list of blocks of two branches); returns it normalised."""
    if not isinstance(cell, (list, tuple)) or not cell:
        raise _error(
            source, CELL, f"expected a non-empty list of blocks, got {_show(cell)}"
        )
    blocks = []
    for b, block in enumerate(cell):
        if not isinstance(block, (list, tuple)) or len(block) != 2:
            raise _error(
                source,
                f"{CELL}[{b}]",
                f"expected a list of 2 branches, got {_show(block)}",
            )
        blocks.append(
            [_parse_branch(branch, b, k, source) for k, branch in enumerate(block)]
        )
    return blocks


def parse_network(path, source="architecture", num_levels=NUM_LEVELS):
    """Validates a network path (list of levels); returns a list of ints."""
    if not isinstance(path, (list, tuple)) or not path:
        raise _error(
            source, NETWORK, f"expected a non-empty list of levels, got {_show(path)}"
        )
    previous = 0  # the stem ends at level 0 (output stride 4)
    out = []
    for i, level in enumerate(path):
        where = f"{NETWORK}[{i}]"
        if not _is_int(level) or not 0 <= level < num_levels:
            raise _error(
                source, where, f"{_show(level)} is not a level 0..{num_levels - 1}"
            )
        if abs(int(level) - previous) > 1:
            after = "the stem (level 0)" if i == 0 else f"level {previous}"
            raise _error(
                source,
                where,
                f"level {level} after {after}: moves by more than one level",
            )
        previous = int(level)
        out.append(previous)
    return out


def parse_architecture(obj, source="architecture"):
    """Validates an architecture object; returns {"cell": ..., "network": ...}.

    Raises:
      ArchitectureError: a one-line message naming the source and the field.
    """
    if not isinstance(obj, dict):
        raise ArchitectureError(f"{source}: expected a JSON object, got {_show(obj)}")
    for key in obj:
        if key not in _FIELDS:
            raise _error(source, key, "unknown field (allowed: cell, network)")
    for key in _FIELDS:
        if key not in obj:
            raise _error(source, key, "missing")
    return {
        CELL: parse_cell(obj[CELL], source),
        NETWORK: parse_network(obj[NETWORK], source),
    }


# === Files =================================================================


def load_architecture(path):
    """Reads and validates an architecture file; failures are one-line errors."""
    path = os.fspath(path)
    try:
        with artefacts.open_file(path) as f:  # local or remote (gs://)
            text = f.read()
    except FileNotFoundError:
        raise ArchitectureError(f"{path}: no such architecture file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArchitectureError(f"{path}: cannot read architecture file: {e}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArchitectureError(
            f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}"
        ) from None
    return parse_architecture(obj, source=path)


def dump_architecture(arch):
    """The architecture as JSON text, one block a line."""
    arch = parse_architecture(arch)
    blocks = [json.dumps(block) for block in arch[CELL]]
    return (
        '{\n  "cell": [\n    '
        + ",\n    ".join(blocks)
        + '\n  ],\n  "network": '
        + json.dumps(arch[NETWORK])
        + "\n}\n"
    )


def save_architecture(arch, path):
    """Writes `dump_architecture(arch)` atomically (`artefacts.write_text`)."""
    artefacts.write_text(dump_architecture(arch), os.fspath(path))


# === The official encoding =================================================


def from_official(operations, hiddenstate_indices, backbone):
    """An architecture from the official `hnasnet` lists (nas_network.py)."""
    if len(operations) != len(hiddenstate_indices) or len(operations) % 2:
        raise ArchitectureError(
            "official cell: operations and hiddenstate_indices need one entry per "
            f"branch, two per block (got {len(operations)} and {len(hiddenstate_indices)})"
        )
    cell = [
        [
            {INPUT: hiddenstate_indices[2 * b + k], OP: operations[2 * b + k]}
            for k in range(2)
        ]
        for b in range(len(operations) // 2)
    ]
    return parse_architecture({CELL: cell, NETWORK: list(backbone)}, source="official")


def to_official(arch):
    """(operations, hiddenstate_indices, used_hiddenstates, backbone) of nas_network.py."""
    arch = parse_architecture(arch)
    operations = [br[OP] for block in arch[CELL] for br in block]
    indices = [br[INPUT] for block in arch[CELL] for br in block]
    used = [1, 1] + [0] * len(arch[CELL])
    return operations, indices, used, list(arch[NETWORK])


# The paper's Cityscapes architecture, as the official `hnasnet`. Read-only.
HNASNET = from_official(
    operations=[
        "atrous_5x5",
        "separable_3x3_2",
        "separable_3x3_2",
        "atrous_3x3",
        "separable_3x3_2",
        "separable_3x3_2",
        "separable_5x5_2",
        "separable_5x5_2",
        "separable_5x5_2",
        "atrous_5x5",
    ],
    hiddenstate_indices=[1, 0, 1, 0, 3, 1, 4, 2, 3, 5],
    backbone=[0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1],
)


def describe_architecture(arch):
    """A short multi-line human-readable description."""
    arch = parse_architecture(arch)
    names = ["H(l-1)", "H(l-2)"] + [f"block {b}" for b in range(len(arch[CELL]))]
    strides = ", ".join(str(level_stride(v)) for v in arch[NETWORK])
    lines = [f"network: {len(arch[NETWORK])} layers at output strides {strides}"]
    for b, block in enumerate(arch[CELL]):
        parts = " + ".join(f"{br[OP]}({names[br[INPUT]]})" for br in block)
        lines.append(f"  block {b} = {parts}")
    return "\n".join(lines)


# === Search spaces =========================================================


def cell_space_size(num_blocks=DEFAULT_NUM_BLOCKS, num_ops=len(SEARCH_OPS)):
    """Number of cells: prod_i ((i + 2) * num_ops)**2, exactly.

    Each of the two branches of block i picks one of i + 2 inputs and one of
    num_ops operators, independently (the count the paper's 5.6 x 10^14 for
    B = 5 and the 8 operators follows).
    """
    return math.prod(((i + 2) * num_ops) ** 2 for i in range(num_blocks))


def legal_moves(level, num_levels=NUM_LEVELS):
    """Levels reachable from `level` in one layer: level - 1, level, level + 1 in range."""
    return [v for v in (level - 1, level, level + 1) if 0 <= v < num_levels]


def reachable_levels(num_layers, num_levels=NUM_LEVELS):
    """For each layer 1..L (list index 0..L-1), the levels a path can be at."""
    return [
        list(range(min(layer, num_levels - 1) + 1))
        for layer in range(1, num_layers + 1)
    ]


def network_space_size(num_layers=DEFAULT_NUM_LAYERS, num_levels=NUM_LEVELS):
    """Number of legal paths of `num_layers` layers after the stem (level 0)."""
    counts = np.zeros(num_levels, dtype=object)
    counts[0] = 1
    for _ in range(num_layers):
        new = np.zeros(num_levels, dtype=object)
        for level in range(num_levels):
            for nxt in legal_moves(level, num_levels):
                new[nxt] += counts[level]
        counts = new
    return int(sum(counts))


def enumerate_paths(num_layers, num_levels=NUM_LEVELS):
    """Yields every legal path (brute force; small L only)."""
    for path in itertools.product(range(num_levels), repeat=num_layers):
        previous, ok = 0, True
        for level in path:
            if abs(level - previous) > 1:
                ok = False
                break
            previous = level
        if ok:
            yield list(path)


# === Decoding ==============================================================

# Directions of the three outgoing edges of a node: to level - 1 (finer), the
# same level, level + 1 (coarser). beta has shape [L, num_levels, 3]: beta[l,
# j, d] weighs the edge from level j of layer l - 1 (layer 0 is the stem) to
# level j + d - 1 of layer l.
DIRECTIONS = (-1, 0, 1)


def _softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def edge_mask(num_levels=NUM_LEVELS):
    """[num_levels, 3] booleans: which outgoing edges stay inside the levels."""
    return np.array(
        [[0 <= j + d < num_levels for d in DIRECTIONS] for j in range(num_levels)]
    )


def transition_probabilities(beta):
    """Softmax of beta over each node's legal outgoing edges (illegal ones: 0).

    beta: [L, num_levels, 3] logits. Rows of nodes a path cannot reach are
    normalised all the same (they are never used).
    """
    beta = np.asarray(beta, dtype=np.float64)
    mask = edge_mask(beta.shape[1])
    logits = np.where(mask[None], beta, -np.inf)
    return _softmax(logits, axis=-1)


def viterbi_path(probabilities):
    """The most probable path through transition probabilities [L, levels, 3].

    The path starts at the stem (level 0); its probability is the product of
    the probabilities of its L edges. Ties go to the lower level.
    Returns (path as a list of L levels, log-probability).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    num_layers, num_levels = p.shape[0], p.shape[1]
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    score = np.full(num_levels, -np.inf)
    score[0] = 0.0
    back = np.zeros((num_layers, num_levels), dtype=int)
    for layer in range(num_layers):
        new = np.full(num_levels, -np.inf)
        for level in range(num_levels):
            for d_index, d in enumerate(DIRECTIONS):
                source = level - d
                if not 0 <= source < num_levels:
                    continue
                cand = score[source] + logp[layer, source, d_index]
                if cand > new[level] or (
                    cand == new[level] and source < back[layer, level]
                ):
                    new[level], back[layer, level] = cand, source
        score = new
    level = int(np.argmax(score))
    best = float(score[level])
    path = [level]
    for layer in range(num_layers - 1, 0, -1):
        level = int(back[layer, level])
        path.append(level)
    return path[::-1], best


def path_log_probability(probabilities, path):
    """log prod of the edge probabilities along `path` (from the stem's level 0)."""
    p = np.asarray(probabilities, dtype=np.float64)
    total, previous = 0.0, 0
    for layer, level in enumerate(path):
        total += math.log(p[layer, previous, level - previous + 1])
        previous = level
    return total


def decode_network(beta):
    """The Viterbi path of beta logits [L, levels, 3] (a list of levels)."""
    return viterbi_path(transition_probabilities(beta))[0]


def num_cell_edges(num_blocks):
    """Edges of the relaxed cell: block i has i + 2 inputs."""
    return sum(i + 2 for i in range(num_blocks))


def edge_index(block, source):
    """Row of alpha for the edge from input `source` to `block`."""
    return sum(i + 2 for i in range(block)) + source


def decode_cell(alpha, ops=SEARCH_OPS):
    """Decodes alpha logits [num_edges, len(ops)] into a cell (DARTS, Sec. 4.3).

    Each block keeps its two strongest inputs, the strength of an edge being
    its largest softmax weight over the operators other than "zero"; each kept
    edge takes that operator. Branches are listed strongest first; ties go to
    the lower input and the earlier operator.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    weights = _softmax(alpha, axis=-1)
    ops = list(ops)
    usable = [k for k, op in enumerate(ops) if op != ZERO]
    if not usable:
        raise ValueError("decode_cell: the operator set has nothing but 'zero'")
    num_blocks = 0
    while num_cell_edges(num_blocks + 1) <= weights.shape[0]:
        num_blocks += 1
    if num_cell_edges(num_blocks) != weights.shape[0]:
        raise ValueError(
            f"decode_cell: {weights.shape[0]} rows is no number of cell edges"
        )
    cell = []
    for block in range(num_blocks):
        candidates = []
        for source in range(block + 2):
            row = weights[edge_index(block, source)]
            k = max(usable, key=lambda i, row=row: (row[i], -i))
            candidates.append((-row[k], source, ops[k]))
        candidates.sort()
        cell.append([{INPUT: s, OP: op} for _, s, op in candidates[:2]])
    return cell
