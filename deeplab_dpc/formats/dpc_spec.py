"""Dense Prediction Cell (DPC) specs: parse, validate, write, sample, mutate.

A DPC ("Searching for Efficient Multi-Scale Architectures for Dense Image
Prediction", Chen et al., NeurIPS 2018, arXiv:1809.04184, Sec. 3.1) is a DAG of
B branches. Branch i applies one operator OP_i to one input X_i, where X_i is
the backbone features F (written ``"input": -1``) or the output of an earlier
branch j < i. The cell output is the concatenation of all branch outputs,
projected by a 1x1 conv. The operator space has 81 operators: one 1x1 conv,
64 3x3 atrous separable convs with rates [r_h, r_w] in ``RATES`` x ``RATES``,
and 16 pyramid poolings with grids [g_h, g_w] in ``GRIDS`` x ``GRIDS`` (as in
DeepLab, a grid sets the kernel of a stride-1 average pool, not a set of bins).

A spec is data: a JSON list with one object per branch, in exactly the format
of the original DeepLab release (``research/deeplab/core/
dense_prediction_cell_branch5_top1_cityscapes.json``), e.g.::

    {"op": "conv", "kernel": 3, "rate": [1, 6], "input": -1}
    {"op": "pyramid_pooling", "grid_size": [2, 4], "input": 1}
    {"op": "conv", "kernel": 1, "input": 0}

This module is pure Python + numpy (no TensorFlow), so the search and the tools
can use it without loading a model.

Deviations from the original DeepLab, all deliberate:

* Specs are validated up front with one-line errors naming the file, branch and
  field; the original fails late (KeyError, or a TF shape error in the graph).
* Unknown fields are rejected, to catch typos such as ``"rates"``; the original
  silently ignores them.
* ``input`` must be -1 or an earlier branch; the original treats any negative
  value as F and would index a later branch at graph-build time.
* A 1x1 conv may omit ``rate`` (the original never reads it) and an int rate
  means [r, r] (the original requires a list). Both are written back in the
  original form by ``dump_spec``.
* Kernels, rates and grids outside the paper's space are errors unless
  ``allow_outside_space=True``.
* ``canonical_key`` / ``spec_hash`` are new: they identify functionally
  identical cells (same DAG up to relabelling of branches), so a search never
  trains the same cell twice.
"""

import hashlib
import itertools
import json
import math
import os

import numpy as np

from deeplab_dpc.core import artefacts

# --- Spec vocabulary (the original DeepLab key strings) ---------------------
OP = "op"
CONV = "conv"
PYRAMID_POOLING = "pyramid_pooling"
KERNEL = "kernel"
RATE = "rate"
GRID_SIZE = "grid_size"
INPUT = "input"

# --- The paper's operator space ----------------------------------------
BACKBONE_INPUT = -1  # `input` value that means the backbone features F
KERNELS = (1, 3)
RATES = (1, 3, 6, 9, 12, 15, 18, 21)
# A grid g is DeepLab's pyramid pooling (the only kind here, and the one the
# search samples): a sliding average with kernel (n - 1) // g + 1 over n
# feature pixels, stride 1, VALID (layers/pooling.py, g3doc/dpc_spec.md).
GRIDS = (1, 2, 4, 8)
NUM_OPS = 1 + len(RATES) ** 2 + len(GRIDS) ** 2  # 1 + 64 + 16 = 81
DEFAULT_NUM_BRANCHES = 5

_FIELDS = {
    CONV: (OP, KERNEL, RATE, INPUT),
    PYRAMID_POOLING: (OP, GRID_SIZE, INPUT),
}


# A spec file larger than this is refused before it is parsed (the paper's
# 5-branch cells take about 300 bytes; 1 MiB holds over 10^4 branches).
MAX_SPEC_BYTES = 1 << 20
# Largest kernel, rate or grid accepted outside the paper's space (far beyond
# any feature map; it keeps absurd values out of models and messages).
MAX_OUTSIDE_VALUE = 100_000


def _one_line(text):
    """`text` with control characters and lone surrogates escaped: one printable line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class SpecError(ValueError):
    """An invalid spec; the message is one line naming file, branch and field."""

    def __init__(self, message):
        super().__init__(_one_line(message))


# === Parsing ===============================================================


def _show(value):
    """A short one-line rendering of `value` in JSON terms, with its type."""
    try:
        text = json.dumps(value, allow_nan=True)
    except Exception:  # not JSON (TypeError), too deep (RecursionError), ...
        try:
            text = repr(value)
        except Exception:  # e.g. an int too long for str() (ValueError)
            text = f"<{type(value).__name__}>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _brief(value):
    """`_show(value)` without the type: the value, cut to 60 characters."""
    return _show(value).rsplit(" (", 1)[0]


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _field_error(where, field, problem):
    name = str(field) if isinstance(field, str) else _show(field)
    if len(name) > 40:
        name = name[:37] + "..."
    return SpecError(f"{where}: field '{name}': {problem}")


def _parse_pair(value, where, field, allowed, allow_outside_space, odd=False):
    """Parses an int or [h, w] list of ints into a normalised [h, w] list."""
    if _is_int(value):
        pair = [int(value), int(value)]
    elif isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise _field_error(
                where, field, f"expected [h, w] (2 integers), got {_show(value)}"
            )
        if not all(_is_int(v) for v in value):
            raise _field_error(
                where, field, f"expected integers in [h, w], got {_show(value)}"
            )
        pair = [int(v) for v in value]
    else:
        raise _field_error(
            where, field, f"expected an integer or [h, w], got {_show(value)}"
        )
    if allow_outside_space:
        if any(v > MAX_OUTSIDE_VALUE for v in pair):
            raise _field_error(
                where,
                field,
                f"{_brief(pair)} is too large (at most {MAX_OUTSIDE_VALUE})",
            )
        if any(v < 1 or (odd and v % 2 == 0) for v in pair):
            kind = "positive odd integers" if odd else "positive integers"
            raise _field_error(where, field, f"{_brief(pair)} must be {kind}")
    elif any(v not in allowed for v in pair):
        raise _field_error(
            where,
            field,
            f"{_brief(pair)} is outside the search space (each value in {list(allowed)};"
            " pass allow_outside_space=True to allow it)",
        )
    return pair


def _parse_input(value, index, where):
    if not _is_int(value):
        raise _field_error(where, INPUT, f"expected an integer, got {_show(value)}")
    value = int(value)
    if BACKBONE_INPUT <= value < index:
        return value
    if abs(value) > 10**9:
        problem = f"{_show(value)} is not a branch index"
    elif value == index:
        problem = f"{value} refers to branch {index} itself"
    elif value > index:
        problem = f"{value} refers to branch {value}"
    else:
        problem = f"{value} is below {BACKBONE_INPUT}"
    if index == 0:
        allowed = "branch 0 may only take -1 (backbone features)"
    elif index == 1:
        allowed = "a branch may only take -1 (backbone features) or branch 0"
    else:
        allowed = (
            "a branch may only take -1 (backbone features) or an earlier "
            f"branch 0..{index - 1}"
        )
    raise _field_error(where, INPUT, f"{problem}, but {allowed}")


def _check_fields(branch, where):
    """Checks `op` and the set of fields; returns the op string."""
    if OP not in branch:
        raise _field_error(where, OP, f"missing (one of {CONV!r}, {PYRAMID_POOLING!r})")
    op = branch[OP]
    if not isinstance(op, str) or op not in _FIELDS:
        raise _field_error(
            where, OP, f"unknown op {_show(op)} (one of {CONV!r}, {PYRAMID_POOLING!r})"
        )
    for field in branch:
        if field not in _FIELDS[op]:
            allowed = ", ".join(_FIELDS[op])
            raise _field_error(
                where, field, f"unknown field for op '{op}' (allowed: {allowed})"
            )
    for field in _FIELDS[op]:
        if field not in branch and not (op == CONV and field == RATE):
            raise _field_error(where, field, f"missing (required for op '{op}')")
    return op


def _parse_conv(branch, where, allow_outside_space):
    kernel = _parse_pair(
        branch[KERNEL], where, KERNEL, KERNELS, allow_outside_space, odd=True
    )
    if not allow_outside_space and kernel[0] != kernel[1]:
        raise _field_error(
            where, KERNEL, f"{_brief(kernel)} is outside the search space (1x1 or 3x3)"
        )
    if kernel == [1, 1]:
        rate = _parse_pair(branch.get(RATE, 1), where, RATE, (1,), True)
        if rate != [1, 1]:
            raise _field_error(
                where, RATE, f"{_brief(rate)} on a 1x1 conv (only 1 is valid)"
            )
    elif RATE not in branch:
        raise _field_error(where, RATE, f"missing (required for a {kernel} conv)")
    else:
        rate = _parse_pair(branch[RATE], where, RATE, RATES, allow_outside_space)
    return {OP: CONV, KERNEL: kernel, RATE: rate}


def _parse_branch(branch, index, source, allow_outside_space):
    where = f"{source}: branch {index}"
    if not isinstance(branch, dict):
        raise SpecError(f"{where}: expected a JSON object, got {_show(branch)}")
    op = _check_fields(branch, where)
    if op == CONV:
        parsed = _parse_conv(branch, where, allow_outside_space)
    else:
        grid = _parse_pair(
            branch[GRID_SIZE], where, GRID_SIZE, GRIDS, allow_outside_space
        )
        parsed = {OP: PYRAMID_POOLING, GRID_SIZE: grid}
    parsed[INPUT] = _parse_input(branch[INPUT], index, where)
    return parsed


def parse_spec(obj, allow_outside_space=False, source="spec"):
    """Validates a spec (a list of branch dicts) and returns it normalised.

    Normalised branches are fresh dicts with the keys in the original order:
    ``{"op": "conv", "kernel": [kh, kw], "rate": [rh, rw], "input": i}``
    (a 1x1 conv has kernel [1, 1] and rate [1, 1]) or
    ``{"op": "pyramid_pooling", "grid_size": [gh, gw], "input": i}``.

    Args:
      obj: the spec, e.g. as returned by `json.load`.
      allow_outside_space: accept any positive (odd for kernels) kernel, rate
        and grid instead of only the paper's operator space.
      source: what to call the spec in error messages (e.g. a file name).

    Raises:
      SpecError: with a one-line message naming the branch and field.
    """
    if not isinstance(obj, (list, tuple)):
        raise SpecError(
            f"{source}: expected a JSON list of branch objects, got {_show(obj)}"
        )
    if not obj:
        raise SpecError(f"{source}: expected at least one branch, got an empty list")
    return [
        _parse_branch(branch, i, source, allow_outside_space)
        for i, branch in enumerate(obj)
    ]


# === Files =================================================================


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _no_duplicates(pairs):
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate field {_show(key)} in an object")
            seen.add(key)
    return obj


def load_spec(path, allow_outside_space=False):
    """Reads and validates a spec file; every failure is a one-line SpecError.

    Strict JSON: `NaN` / `Infinity` literals, duplicate fields, files over
    MAX_SPEC_BYTES and nesting deeper than Python can parse are refused. The
    file must be UTF-8; a UTF-8 byte order mark is allowed (and ignored).
    """
    path = os.fspath(path)
    try:
        with artefacts.open_file(path, "rb") as f:  # local or remote (gs://)
            data = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read spec file: {e.strerror or e}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: spec file larger than {MAX_SPEC_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(
            f"{path}: cannot read spec file: not UTF-8 (byte {e.start})"
        ) from None
    try:
        obj = json.loads(
            text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates
        )
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except RecursionError:
        raise SpecError(f"{path}: invalid JSON: nested too deeply") from None
    except ValueError as e:  # our hooks, or an integer of over 4300 digits
        raise SpecError(f"{path}: invalid JSON: {e}") from None
    return parse_spec(obj, allow_outside_space=allow_outside_space, source=path)


def _dump_branch(branch):
    """One branch in the original DeepLab form (int kernel when square)."""
    if branch[OP] == PYRAMID_POOLING:
        return {OP: PYRAMID_POOLING, GRID_SIZE: branch[GRID_SIZE], INPUT: branch[INPUT]}
    kh, kw = branch[KERNEL]
    out = {OP: CONV, KERNEL: kh if kh == kw else [kh, kw]}
    if branch[KERNEL] != [1, 1]:
        out[RATE] = branch[RATE]
    out[INPUT] = branch[INPUT]
    return out


def dump_spec(spec):
    """Returns the spec as JSON text in the original format, one branch a line."""
    branches = parse_spec(spec, allow_outside_space=True)
    lines = [json.dumps(_dump_branch(b)) for b in branches]
    return "[\n  " + ",\n  ".join(lines) + "\n]\n"


def save_spec(spec, path):
    """Writes `dump_spec(spec)` to `path` atomically (see `artefacts.write_text`)."""
    artefacts.write_text(dump_spec(spec), path)


# === The search space ======================================================


def all_ops():
    """The NUM_OPS operators (branches without `input`), in a fixed order.

    Order: the 1x1 conv, then the 3x3 separable convs with r_h major, then the
    pyramid poolings with g_h major.
    """
    ops = [{OP: CONV, KERNEL: [1, 1], RATE: [1, 1]}]
    ops += [{OP: CONV, KERNEL: [3, 3], RATE: [rh, rw]} for rh in RATES for rw in RATES]
    ops += [{OP: PYRAMID_POOLING, GRID_SIZE: [gh, gw]} for gh in GRIDS for gw in GRIDS]
    return ops


def _check_num_branches(num_branches):
    if not _is_int(num_branches) or num_branches < 1:
        raise ValueError(f"num_branches must be a positive integer, got {num_branches}")


def search_space_size(num_branches, num_ops=NUM_OPS):
    """Number of specs with `num_branches` branches: B! * num_ops**B, exactly.

    Branch i has i + 1 input choices (F or branches 0..i-1) and num_ops ops.
    """
    _check_num_branches(num_branches)
    return math.prod((i + 1) * num_ops for i in range(num_branches))


def enumerate_specs(num_branches, ops=None):
    """Yields every spec with `num_branches` branches over `ops` (all_ops()).

    Only practical for tiny spaces (e.g. a reduced op list in tests, or an
    exhaustive search over a few operators).
    """
    ops = all_ops() if ops is None else ops
    choices = [
        [(i, op) for i in range(BACKBONE_INPUT, b) for op in ops]
        for b in range(num_branches)
    ]
    for combo in itertools.product(*choices):
        yield [{**op, INPUT: i} for i, op in combo]


def sample_spec(rng, num_branches=DEFAULT_NUM_BRANCHES):
    """A spec drawn uniformly from the space (rng: numpy.random.Generator)."""
    _check_num_branches(num_branches)
    ops = all_ops()
    spec = []
    for b in range(num_branches):
        op = ops[int(rng.integers(len(ops)))]
        spec.append({**op, INPUT: int(rng.integers(BACKBONE_INPUT, b))})
    return spec


def _op_part(branch):
    return {k: v for k, v in branch.items() if k != INPUT}


def mutate_spec(spec, rng):
    """A different valid spec that changes one branch's input or op.

    The branch is chosen uniformly; its input or op with probability 1/2 each
    (branch 0 always changes its op, since its input can only be F). The new
    value is uniform over the values other than the current one.
    """
    new = parse_spec(spec)
    b = int(rng.integers(len(new)))
    if b > 0 and rng.random() < 0.5:
        inputs = [i for i in range(BACKBONE_INPUT, b) if i != new[b][INPUT]]
        new[b][INPUT] = inputs[int(rng.integers(len(inputs)))]
    else:
        current = _op_part(new[b])
        ops = [op for op in all_ops() if op != current]
        new[b] = {**ops[int(rng.integers(len(ops)))], INPUT: new[b][INPUT]}
    return new


# === Identity ==============================================================


def op_name(branch):
    """A short operator name: conv1x1, sep3x3r1x6, pool2x4."""
    if branch[OP] == PYRAMID_POOLING:
        return "pool{}x{}".format(*branch[GRID_SIZE])
    if branch[KERNEL] == [1, 1]:
        return "conv1x1"
    return "sep{}x{}r{}x{}".format(*branch[KERNEL], *branch[RATE])


def canonical_key(spec):
    """A string identical exactly for functionally identical cells.

    Every branch reads one input, so a cell is a tree rooted at F whose nodes
    (the branches) are labelled with their op; the output concatenates all
    nodes, and the projection after the concat absorbs their order. The key is
    the canonical form of that labelled tree: a node is ``name[children]`` with
    the children's forms sorted, and the key joins F's children with ``+``,
    e.g. ``pool1x1+sep3x3r1x6[conv1x1,sep3x3r6x3]``. Sorting subtrees (rather
    than listing each branch's path from F) also tells apart cells whose paths
    coincide but share intermediates differently.
    """
    branches = parse_spec(spec, allow_outside_space=True)
    children = {i: [] for i in range(BACKBONE_INPUT, len(branches))}
    for i, branch in enumerate(branches):
        children[branch[INPUT]].append(i)

    forms = {}
    for i in reversed(range(len(branches))):  # children come after parents
        name = op_name(branches[i])
        kids = sorted(forms[c] for c in children[i])
        forms[i] = name + ("[" + ",".join(kids) + "]" if kids else "")
    return "+".join(sorted(forms[c] for c in children[BACKBONE_INPUT]))


def spec_hash(spec):
    """Short stable id: the first 12 hex digits of sha1(canonical_key)."""
    return hashlib.sha1(canonical_key(spec).encode("utf-8")).hexdigest()[:12]


def describe_spec(spec):
    """A short multi-line human-readable description of a spec."""
    branches = parse_spec(spec, allow_outside_space=True)
    lines = [f"DPC with {len(branches)} branches (hash {spec_hash(branches)})"]
    for i, branch in enumerate(branches):
        source = "F" if branch[INPUT] == BACKBONE_INPUT else f"branch {branch[INPUT]}"
        if branch[OP] == PYRAMID_POOLING:
            op = "pyramid pooling, grid {}x{}".format(*branch[GRID_SIZE])
        elif branch[KERNEL] == [1, 1]:
            op = "1x1 conv"
        else:
            op = "{}x{} separable conv, rate {}x{}".format(
                *branch[KERNEL], *branch[RATE]
            )
        lines.append(f"  branch {i}: input {source:<9} {op}")
    return "\n".join(lines)


# === Reference cells =======================================================


def _sep(rh, rw, source):
    return {OP: CONV, KERNEL: [3, 3], RATE: [rh, rw], INPUT: source}


# The paper's top-1 DPC found on Cityscapes (the original release's
# dense_prediction_cell_branch5_top1_cityscapes.json). Treat as read-only.
TOP1 = [
    _sep(1, 6, BACKBONE_INPUT),
    _sep(18, 15, 0),
    _sep(6, 3, 1),
    _sep(1, 1, 0),
    _sep(6, 21, 0),
]

# The five parallel ASPP branches of DeepLabv3 expressed as DPC branches
# (the paper's reduced space for checking the proxy task's fidelity: every
# non-empty subset of them). Treat as read-only.
ASPP_BRANCHES = [
    {OP: CONV, KERNEL: [1, 1], RATE: [1, 1], INPUT: BACKBONE_INPUT},
    _sep(6, 6, BACKBONE_INPUT),
    _sep(12, 12, BACKBONE_INPUT),
    _sep(18, 18, BACKBONE_INPUT),
    {OP: PYRAMID_POOLING, GRID_SIZE: [1, 1], INPUT: BACKBONE_INPUT},
]


def aspp_subsets():
    """Every non-empty subset of ASPP_BRANCHES (31 specs), by size then index."""
    n = len(ASPP_BRANCHES)
    return [
        parse_spec([ASPP_BRANCHES[i] for i in subset])
        for size in range(1, n + 1)
        for subset in itertools.combinations(range(n), size)
    ]
