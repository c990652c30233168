"""Tests for deeplab_dpc.formats.dpc_spec: validation, files, search space, identity."""

import collections
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deeplab_dpc.formats import dpc_spec as spec_lib

REPO = Path(__file__).resolve().parents[1]


def sep(rh, rw, source):
    return {"op": "conv", "kernel": [3, 3], "rate": [rh, rw], "input": source}


def conv1(source):
    return {"op": "conv", "kernel": [1, 1], "rate": [1, 1], "input": source}


def pool(gh, gw, source):
    return {"op": "pyramid_pooling", "grid_size": [gh, gw], "input": source}


def raw_sep(source, rate=(1, 6)):
    return {"op": "conv", "kernel": 3, "rate": list(rate), "input": source}


def raises(obj, *fragments, **kwargs):
    """parse_spec(obj) must fail with a one-line message holding `fragments`."""
    with pytest.raises(spec_lib.SpecError) as info:
        spec_lib.parse_spec(obj, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# === Constants =============================================================


def test_constants():
    assert (spec_lib.OP, spec_lib.CONV, spec_lib.PYRAMID_POOLING) == (
        "op",
        "conv",
        "pyramid_pooling",
    )
    assert (spec_lib.KERNEL, spec_lib.RATE, spec_lib.GRID_SIZE, spec_lib.INPUT) == (
        "kernel",
        "rate",
        "grid_size",
        "input",
    )
    assert spec_lib.RATES == (1, 3, 6, 9, 12, 15, 18, 21)
    assert spec_lib.GRIDS == (1, 2, 4, 8)
    assert spec_lib.NUM_OPS == 81
    assert spec_lib.DEFAULT_NUM_BRANCHES == 5
    assert issubclass(spec_lib.SpecError, ValueError)


def test_module_does_not_import_tensorflow():
    code = (
        "import sys, deeplab_dpc.formats.dpc_spec; "
        "sys.exit(1 if 'tensorflow' in sys.modules or 'keras' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False)
    assert result.returncode == 0


# === Parsing: normalisation ================================================


def test_parse_normalises_all_forms():
    raw = [
        {"op": "conv", "kernel": 3, "rate": 6, "input": -1},
        {"op": "conv", "kernel": [3, 3], "rate": [18, 15], "input": 0},
        {"op": "conv", "kernel": 1, "input": 1},
        {"op": "conv", "kernel": [1, 1], "rate": [1, 1], "input": 0},
        {"op": "conv", "kernel": 1, "rate": 1, "input": 2},
        {"op": "pyramid_pooling", "grid_size": [2, 4], "input": 1},
        {"op": "pyramid_pooling", "grid_size": 8, "input": -1},
        {"input": 3, "rate": [1, 21], "kernel": 3, "op": "conv"},
    ]
    assert spec_lib.parse_spec(raw) == [
        sep(6, 6, -1),
        sep(18, 15, 0),
        conv1(1),
        conv1(0),
        conv1(2),
        pool(2, 4, 1),
        pool(8, 8, -1),
        sep(1, 21, 3),
    ]
    # Key order of normalised branches is the original's.
    assert list(spec_lib.parse_spec(raw)[7]) == ["op", "kernel", "rate", "input"]


def test_parse_accepts_numpy_ints_and_returns_fresh_python_objects():
    raw = [{"op": "conv", "kernel": 3, "rate": [np.int64(1), 6], "input": -1}]
    parsed = spec_lib.parse_spec(raw)
    assert parsed == [sep(1, 6, -1)]
    assert all(type(v) is int for v in parsed[0]["rate"])
    parsed[0]["rate"][0] = 21
    assert raw[0]["rate"][0] == 1


def test_parse_top1_is_normalised_fixed_point():
    assert spec_lib.parse_spec(spec_lib.TOP1) == spec_lib.TOP1


# === Parsing: errors =======================================================

BAD_SPECS = [
    # (spec, fragments the one-line message must contain)
    ({"op": "conv"}, ["spec: expected a JSON list", "dict"]),
    ("[]", ["spec: expected a JSON list", "str"]),
    ([], ["spec: expected at least one branch"]),
    ([[1, 2]], ["spec: branch 0: expected a JSON object", "[1, 2]"]),
    ([raw_sep(-1), "conv"], ["spec: branch 1: expected a JSON object"]),
    ([{"kernel": 3, "rate": 1, "input": -1}], ["branch 0: field 'op': missing"]),
    (
        [{"op": "sep_conv", "input": -1}],
        ["branch 0: field 'op': unknown op", "sep_conv"],
    ),
    ([{"op": 3, "input": -1}], ["branch 0: field 'op': unknown op", "3 (int)"]),
    ([{"op": ["conv"], "input": -1}], ["branch 0: field 'op': unknown op"]),
    (
        [raw_sep(-1), {"op": "conv", "kernel": 3, "rates": [1, 1], "input": 0}],
        ["branch 1: field 'rates': unknown field for op 'conv'"],
    ),
    (
        [{"op": "pyramid_pooling", "kernel": 1, "grid_size": 1, "input": -1}],
        ["branch 0: field 'kernel': unknown field for op 'pyramid_pooling'"],
    ),
    ([{"op": "conv", "rate": 1, "input": -1}], ["branch 0: field 'kernel': missing"]),
    ([{"op": "conv", "kernel": 3, "input": -1}], ["branch 0: field 'rate': missing"]),
    ([{"op": "conv", "kernel": 3, "rate": 1}], ["branch 0: field 'input': missing"]),
    (
        [{"op": "pyramid_pooling", "input": -1}],
        ["branch 0: field 'grid_size': missing"],
    ),
    # input
    (
        [raw_sep(-1), raw_sep(0), raw_sep(3)],
        [
            "spec: branch 2: field 'input': 3 refers to branch 3, but a branch may "
            "only take -1 (backbone features) or an earlier branch 0..1"
        ],
    ),
    (
        [raw_sep(-1), raw_sep(1)],
        ["branch 1: field 'input': 1 refers to branch 1 itself"],
    ),
    ([raw_sep(0)], ["branch 0: field 'input'", "branch 0 may only take -1"]),
    ([raw_sep(-1), raw_sep(-2)], ["branch 1: field 'input': -2 is below -1"]),
    (
        [raw_sep(-1), raw_sep(True)],
        ["branch 1: field 'input': expected an integer", "bool"],
    ),
    (
        [raw_sep(-1), raw_sep(0.0)],
        ["branch 1: field 'input': expected an integer", "float"],
    ),
    (
        [raw_sep(-1), raw_sep("0")],
        ["branch 1: field 'input': expected an integer", "str"],
    ),
    ([raw_sep(None)], ["branch 0: field 'input': expected an integer", "null"]),
    # kernel
    (
        [{"op": "conv", "kernel": 5, "rate": 1, "input": -1}],
        ["branch 0: field 'kernel': [5, 5] is outside the search space"],
    ),
    (
        [{"op": "conv", "kernel": [1, 3], "rate": 1, "input": -1}],
        ["branch 0: field 'kernel': [1, 3] is outside the search space"],
    ),
    (
        [{"op": "conv", "kernel": [3], "rate": 1, "input": -1}],
        ["branch 0: field 'kernel': expected [h, w] (2 integers)"],
    ),
    (
        [{"op": "conv", "kernel": True, "rate": 1, "input": -1}],
        ["branch 0: field 'kernel': expected an integer or [h, w]", "bool"],
    ),
    (
        [{"op": "conv", "kernel": 3.0, "rate": 1, "input": -1}],
        ["branch 0: field 'kernel': expected an integer or [h, w]", "float"],
    ),
    # rate
    (
        [{"op": "conv", "kernel": 3, "rate": [1, 7], "input": -1}],
        ["branch 0: field 'rate': [1, 7] is outside the search space", "21]"],
    ),
    (
        [{"op": "conv", "kernel": 3, "rate": [1, 6, 6], "input": -1}],
        ["branch 0: field 'rate': expected [h, w] (2 integers)"],
    ),
    (
        [{"op": "conv", "kernel": 3, "rate": [1.0, 6], "input": -1}],
        ["branch 0: field 'rate': expected integers in [h, w]"],
    ),
    (
        [{"op": "conv", "kernel": 3, "rate": [True, 6], "input": -1}],
        ["branch 0: field 'rate': expected integers in [h, w]"],
    ),
    (
        [{"op": "conv", "kernel": 3, "rate": "6", "input": -1}],
        ["branch 0: field 'rate': expected an integer or [h, w]"],
    ),
    (
        [{"op": "conv", "kernel": 1, "rate": [1, 6], "input": -1}],
        ["branch 0: field 'rate': [1, 6] on a 1x1 conv"],
    ),
    # grid_size
    (
        [{"op": "pyramid_pooling", "grid_size": 3, "input": -1}],
        ["branch 0: field 'grid_size': [3, 3] is outside the search space"],
    ),
    (
        [{"op": "pyramid_pooling", "grid_size": [2], "input": -1}],
        ["branch 0: field 'grid_size': expected [h, w] (2 integers)"],
    ),
    (
        [{"op": "pyramid_pooling", "grid_size": [False, 2], "input": -1}],
        ["branch 0: field 'grid_size': expected integers in [h, w]"],
    ),
]


@pytest.mark.parametrize(
    "obj,fragments", BAD_SPECS, ids=[str(i) for i in range(len(BAD_SPECS))]
)
def test_bad_spec_is_rejected_with_branch_and_field(obj, fragments):
    raises(obj, *fragments)


def test_error_names_the_source():
    raises([raw_sep(1)], "my_cell: branch 0: field 'input'", source="my_cell")


def test_outside_space_is_allowed_on_request():
    raw = [
        {"op": "conv", "kernel": 5, "rate": [2, 7], "input": -1},
        {"op": "conv", "kernel": [1, 3], "rate": 24, "input": 0},
        {"op": "pyramid_pooling", "grid_size": [3, 16], "input": 1},
    ]
    assert spec_lib.parse_spec(raw, allow_outside_space=True) == [
        {"op": "conv", "kernel": [5, 5], "rate": [2, 7], "input": -1},
        {"op": "conv", "kernel": [1, 3], "rate": [24, 24], "input": 0},
        pool(3, 16, 1),
    ]
    raises(raw, "branch 0: field 'kernel'")


@pytest.mark.parametrize(
    "branch,fragment",
    [
        ({"op": "conv", "kernel": 4, "rate": 1}, "field 'kernel': [4, 4] must be"),
        ({"op": "conv", "kernel": -1, "rate": 1}, "field 'kernel': [-1, -1] must be"),
        ({"op": "conv", "kernel": 3, "rate": [0, 2]}, "field 'rate': [0, 2] must be"),
        ({"op": "conv", "kernel": 1, "rate": 2}, "field 'rate': [2, 2] on a 1x1"),
        ({"op": "pyramid_pooling", "grid_size": -1}, "field 'grid_size': [-1, -1]"),
    ],
)
def test_outside_space_still_rejects_nonsense(branch, fragment):
    raises([{**branch, "input": -1}], "branch 0: " + fragment, allow_outside_space=True)


# === Files =================================================================


def test_top1_file_equals_top1(monkeypatch):
    monkeypatch.chdir(REPO)
    assert spec_lib.load_spec("specs/top1.json") == spec_lib.TOP1
    assert (REPO / "specs/top1.json").read_text() == spec_lib.dump_spec(spec_lib.TOP1)


def test_top1_is_the_papers_cell():
    assert spec_lib.TOP1 == [
        sep(1, 6, -1),
        sep(18, 15, 0),
        sep(6, 3, 1),
        sep(1, 1, 0),
        sep(6, 21, 0),
    ]


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(spec_lib.SpecError, match="nope.json: no such spec file"):
        spec_lib.load_spec(path)


def test_load_invalid_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(
        '[\n  {"op": "conv", "kernel": 1, "input": -1},\n  {"op" "conv"}\n]\n'
    )
    with pytest.raises(spec_lib.SpecError) as info:
        spec_lib.load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3:9: invalid JSON: ")
    assert "\n" not in message


def test_load_non_utf8_file(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe[\x00")
    with pytest.raises(spec_lib.SpecError, match="binary.json: cannot read spec file"):
        spec_lib.load_spec(path)


def test_load_bad_branch_names_file_branch_and_field(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps([raw_sep(-1), raw_sep(0), raw_sep(3)]))
    with pytest.raises(spec_lib.SpecError) as info:
        spec_lib.load_spec(path)
    assert str(info.value).startswith(f"{path}: branch 2: field 'input': 3 refers")


def test_load_outside_space_flag(tmp_path):
    path = tmp_path / "wide.json"
    path.write_text('[{"op": "conv", "kernel": 3, "rate": 2, "input": -1}]')
    with pytest.raises(spec_lib.SpecError, match="wide.json: branch 0: field 'rate'"):
        spec_lib.load_spec(path)
    assert spec_lib.load_spec(path, allow_outside_space=True)[0]["rate"] == [2, 2]


def test_dump_writes_the_original_format_one_branch_per_line():
    text = spec_lib.dump_spec([sep(1, 6, -1), pool(2, 4, 0), conv1(0)])
    assert text == (
        "[\n"
        '  {"op": "conv", "kernel": 3, "rate": [1, 6], "input": -1},\n'
        '  {"op": "pyramid_pooling", "grid_size": [2, 4], "input": 0},\n'
        '  {"op": "conv", "kernel": 1, "input": 0}\n'
        "]\n"
    )


def test_dump_validates():
    with pytest.raises(spec_lib.SpecError, match="branch 0: field 'input'"):
        spec_lib.dump_spec([raw_sep(0)])


def test_dump_parse_round_trip_is_exact():
    rng = np.random.default_rng(0)
    specs = [spec_lib.TOP1, *spec_lib.aspp_subsets()]
    specs += [spec_lib.sample_spec(rng, b) for b in (1, 2, 5, 8) for _ in range(50)]
    for spec in specs:
        assert spec_lib.parse_spec(json.loads(spec_lib.dump_spec(spec))) == spec


def test_save_then_load_round_trip_and_atomic_overwrite(tmp_path):
    path = tmp_path / "sub" / "cell.json"
    spec_lib.save_spec(spec_lib.TOP1, path)
    assert spec_lib.load_spec(path) == spec_lib.TOP1
    other = [conv1(-1), pool(1, 1, 0)]
    spec_lib.save_spec(other, str(path))
    assert spec_lib.load_spec(path) == other
    assert sorted(os.listdir(path.parent)) == ["cell.json"]  # no temp files left
    with pytest.raises(spec_lib.SpecError):
        spec_lib.save_spec([raw_sep(2)], path)
    assert spec_lib.load_spec(path) == other  # a failed save leaves the file intact
    assert sorted(os.listdir(path.parent)) == ["cell.json"]


# === The search space ======================================================


def test_all_ops():
    ops = spec_lib.all_ops()
    assert len(ops) == spec_lib.NUM_OPS == 81
    assert len({json.dumps(op) for op in ops}) == 81
    assert ops[0] == {"op": "conv", "kernel": [1, 1], "rate": [1, 1]}
    assert ops[1] == {"op": "conv", "kernel": [3, 3], "rate": [1, 1]}
    assert ops[-1] == {"op": "pyramid_pooling", "grid_size": [8, 8]}
    families = collections.Counter(spec_lib.op_name(op)[:4] for op in ops)
    assert families == {"conv": 1, "sep3": 64, "pool": 16}
    for op in ops:
        assert "input" not in op
        assert spec_lib.parse_spec([{**op, "input": -1}]) == [{**op, "input": -1}]
    ops[0]["kernel"][0] = 99  # callers get fresh copies
    assert spec_lib.all_ops()[0]["kernel"] == [1, 1]


@pytest.mark.parametrize(
    "num_branches,expected",
    [
        (1, 81),
        (2, 2 * 81**2),
        (3, 6 * 81**3),
        (4, 24 * 81**4),
        (5, 120 * 81**5),
    ],
)
def test_search_space_size(num_branches, expected):
    assert spec_lib.search_space_size(num_branches) == expected


def test_search_space_size_for_five_branches_is_about_4_2e11():
    size = spec_lib.search_space_size(5)
    assert isinstance(size, int)
    assert size == 418_414_128_120
    assert 4.15e11 < size < 4.25e11


def test_search_space_size_rejects_bad_counts():
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError):
            spec_lib.search_space_size(bad)


@pytest.mark.parametrize("num_branches", [1, 2, 3])
def test_search_space_size_matches_brute_force_enumeration(num_branches):
    ops = [spec_lib.all_ops()[i] for i in (0, 1, 80)]  # 1x1, 3x3 rate 1, pool 8x8
    specs = list(spec_lib.enumerate_specs(num_branches, ops))
    assert len(specs) == spec_lib.search_space_size(num_branches, num_ops=len(ops))
    assert len(specs) == math.factorial(num_branches) * len(ops) ** num_branches
    assert len({spec_lib.dump_spec(s) for s in specs}) == len(specs)
    for spec in specs:
        assert spec_lib.parse_spec(spec) == spec


def test_enumerate_full_ops_for_one_branch():
    specs = list(spec_lib.enumerate_specs(1))
    assert len(specs) == spec_lib.search_space_size(1) == 81


# === Sampling ==============================================================


def test_sample_spec_stays_in_the_space():
    rng = np.random.default_rng(1)
    for num_branches in (1, 3, 5, 9):
        for _ in range(100):
            spec = spec_lib.sample_spec(rng, num_branches)
            assert len(spec) == num_branches
            assert spec_lib.parse_spec(spec) == spec
    assert len(spec_lib.sample_spec(rng)) == spec_lib.DEFAULT_NUM_BRANCHES


def test_sample_spec_is_deterministic_given_the_seed():
    a = [spec_lib.sample_spec(np.random.default_rng(7)) for _ in range(3)]
    b = [spec_lib.sample_spec(np.random.default_rng(7)) for _ in range(3)]
    assert a == b


def within_sigmas(count, n, p, sigmas=5.0):
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_sample_spec_is_uniform():
    # Fixed seed: deterministic, so it cannot flake; the bounds are 5 sigma
    # wide, so any fair sampler passes and a biased one (e.g. uniform over the
    # three op families, or input always -1) fails by tens of sigma.
    n = 4000
    rng = np.random.default_rng(12345)
    specs = [spec_lib.sample_spec(rng) for _ in range(n)]
    for b in range(5):
        counts = collections.Counter(spec[b]["input"] for spec in specs)
        assert set(counts) == set(range(-1, b))
        for source in range(-1, b):
            assert within_sigmas(counts[source], n, 1 / (b + 1)), (b, counts)
    names = [spec_lib.op_name(branch) for spec in specs for branch in spec]
    families = collections.Counter(name[:4] for name in names)
    total = len(names)
    assert within_sigmas(families["conv"], total, 1 / 81), families
    assert within_sigmas(families["sep3"], total, 64 / 81), families
    assert within_sigmas(families["pool"], total, 16 / 81), families
    # Every single op is drawn about total/81 times (chi-square, 80 dof).
    per_op = collections.Counter(names)
    assert len(per_op) == 81
    expected = total / 81
    chi2 = sum((c - expected) ** 2 / expected for c in per_op.values())
    assert chi2 < 80 + 5 * math.sqrt(2 * 80), chi2


# === Mutation ==============================================================


def diff(a, b):
    """(branch, 'input' or 'op') for each change from a to b."""
    changes = []
    for i, (x, y) in enumerate(zip(a, b)):
        if x["input"] != y["input"]:
            changes.append((i, "input"))
        if {k: v for k, v in x.items() if k != "input"} != {
            k: v for k, v in y.items() if k != "input"
        }:
            changes.append((i, "op"))
    return changes


def test_mutate_spec_changes_exactly_one_field():
    rng = np.random.default_rng(3)
    kinds = collections.Counter()
    branches = collections.Counter()
    for _ in range(2000):
        spec = spec_lib.sample_spec(rng)
        before = json.dumps(spec)
        child = spec_lib.mutate_spec(spec, rng)
        assert json.dumps(spec) == before  # the parent is left untouched
        assert spec_lib.parse_spec(child) == child
        changes = diff(spec, child)
        assert len(changes) == 1, changes
        (branch, kind) = changes[0]
        assert (branch, kind) != (0, "input")
        kinds[kind] += 1
        branches[branch] += 1
    assert set(branches) == set(range(5))
    for b in range(5):
        assert within_sigmas(branches[b], 2000, 1 / 5), branches
    # P(op) = 1/5 (branch 0) + 4/5 * 1/2 = 3/5.
    assert within_sigmas(kinds["op"], 2000, 3 / 5), kinds


def test_mutate_single_branch_spec_changes_its_op():
    rng = np.random.default_rng(4)
    for _ in range(50):
        child = spec_lib.mutate_spec([conv1(-1)], rng)
        assert child != [conv1(-1)] and child[0]["input"] == -1


def test_mutate_rejects_invalid_spec():
    with pytest.raises(spec_lib.SpecError):
        spec_lib.mutate_spec([raw_sep(0)], np.random.default_rng(0))


# === Identity ==============================================================


def relabel(spec, order):
    """The same DAG with branch order[k] moved to position k."""
    new_index = {old: new for new, old in enumerate(order)}
    new_index[-1] = -1
    return [{**spec[old], "input": new_index[spec[old]["input"]]} for old in order]


def random_topological_order(spec, rng):
    order, placed = [], {-1}
    remaining = list(range(len(spec)))
    while remaining:
        ready = [i for i in remaining if spec[i]["input"] in placed]
        pick = ready[int(rng.integers(len(ready)))]
        order.append(pick)
        placed.add(pick)
        remaining.remove(pick)
    return order


def brute_force_class(spec):
    """The smallest dump over every valid relabelling: an isomorphism class id."""
    forms = []
    for order in itertools.permutations(range(len(spec))):
        candidate = relabel(spec, order)
        if all(b["input"] < i for i, b in enumerate(candidate)):
            forms.append(spec_lib.dump_spec(candidate))
    return min(forms)


def test_canonical_key_of_top1_is_pinned():
    key = "sep3x3r1x6[sep3x3r18x15[sep3x3r6x3],sep3x3r1x1,sep3x3r6x21]"
    assert spec_lib.canonical_key(spec_lib.TOP1) == key
    assert (
        spec_lib.spec_hash(spec_lib.TOP1) == hashlib.sha1(key.encode()).hexdigest()[:12]
    )
    assert spec_lib.spec_hash(spec_lib.TOP1) == "5689e9d6f5dc"


def test_canonical_key_ignores_raw_vs_normalised_form():
    raw = json.loads(spec_lib.dump_spec(spec_lib.TOP1))
    assert spec_lib.canonical_key(raw) == spec_lib.canonical_key(spec_lib.TOP1)


def test_canonical_key_is_invariant_under_relabelling():
    rng = np.random.default_rng(5)
    for _ in range(300):
        spec = spec_lib.sample_spec(rng, int(rng.integers(1, 8)))
        other = relabel(spec, random_topological_order(spec, rng))
        assert spec_lib.canonical_key(other) == spec_lib.canonical_key(spec)
        assert spec_lib.spec_hash(other) == spec_lib.spec_hash(spec)
    # A hand-written relabelling of TOP1: the chain b1 -> b2 moved to the end.
    moved = [sep(1, 6, -1), sep(1, 1, 0), sep(6, 21, 0), sep(18, 15, 0), sep(6, 3, 3)]
    assert spec_lib.canonical_key(moved) == spec_lib.canonical_key(spec_lib.TOP1)


def test_canonical_key_tells_apart_cells_with_equal_branch_paths():
    # Both cells have branch expressions {a(F), a(F), c(a(F)), p(a(F))}, but in
    # the first c and p read the same a, in the second two different ones.
    shared = [sep(1, 1, -1), sep(1, 1, -1), conv1(0), pool(1, 1, 0)]
    split = [sep(1, 1, -1), sep(1, 1, -1), conv1(0), pool(1, 1, 1)]
    assert spec_lib.canonical_key(shared) != spec_lib.canonical_key(split)


def test_canonical_key_distinguishes_different_cells():
    chain = [sep(1, 6, -1), sep(1, 6, 0), sep(1, 6, 1)]
    star = [sep(1, 6, -1), sep(1, 6, 0), sep(1, 6, 0)]
    parallel = [sep(1, 6, -1), sep(1, 6, -1), sep(1, 6, -1)]
    transposed = [sep(6, 1, -1), sep(1, 6, 0), sep(1, 6, 1)]
    keys = {spec_lib.canonical_key(s) for s in (chain, star, parallel, transposed)}
    assert len(keys) == 4


@pytest.mark.parametrize("num_branches,op_ids", [(3, (0, 1, 80)), (4, (0, 80))])
def test_canonical_key_equals_brute_force_isomorphism(num_branches, op_ids):
    ops = [spec_lib.all_ops()[i] for i in op_ids]
    specs = list(spec_lib.enumerate_specs(num_branches, ops))
    by_key = collections.defaultdict(set)
    by_class = collections.defaultdict(set)
    for spec in specs:
        by_key[spec_lib.canonical_key(spec)].add(spec_lib.dump_spec(spec))
        by_class[brute_force_class(spec)].add(spec_lib.dump_spec(spec))
    assert sorted(map(sorted, by_key.values())) == sorted(
        map(sorted, by_class.values())
    )
    assert len({spec_lib.spec_hash(s) for s in specs}) == len(by_key)


# === Reference cells and description =======================================


def test_aspp_subsets():
    subsets = spec_lib.aspp_subsets()
    assert len(subsets) == 31
    assert len({spec_lib.canonical_key(s) for s in subsets}) == 31
    assert len({spec_lib.spec_hash(s) for s in subsets}) == 31
    sizes = collections.Counter(len(s) for s in subsets)
    assert sizes == {k: math.comb(5, k) for k in range(1, 6)}
    assert subsets[0] == [conv1(-1)]
    assert subsets[-1] == spec_lib.ASPP_BRANCHES
    assert spec_lib.ASPP_BRANCHES == [
        conv1(-1),
        sep(6, 6, -1),
        sep(12, 12, -1),
        sep(18, 18, -1),
        pool(1, 1, -1),
    ]
    for spec in subsets:
        assert spec_lib.parse_spec(spec) == spec
        assert all(b["input"] == -1 for b in spec)
    assert spec_lib.aspp_subsets() == subsets  # stable order
    subsets[0][0]["input"] = 7  # callers get fresh copies
    assert spec_lib.aspp_subsets()[0] == [conv1(-1)]


def test_describe_spec():
    text = spec_lib.describe_spec([sep(1, 6, -1), pool(2, 4, 0), conv1(1)])
    lines = text.splitlines()
    assert len(lines) == 4
    assert "3 branches" in lines[0]
    assert "branch 0: input F" in lines[1] and "separable conv, rate 1x6" in lines[1]
    assert "branch 1: input branch 0" in lines[2]
    assert "pyramid pooling, grid 2x4" in lines[2]
    assert "branch 2: input branch 1" in lines[3] and "1x1 conv" in lines[3]


def test_describe_example_from_docs_runs():
    code = (
        "from deeplab_dpc.formats import dpc_spec as spec_lib; "
        "print(spec_lib.describe_spec(spec_lib.load_spec('specs/top1.json')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "branch 4: input branch 0" in result.stdout
    assert "rate 6x21" in result.stdout
