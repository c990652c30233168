"""Tests for deeplab_dpc.formats.auto_deeplab_spec: format, space sizes, Viterbi and cell decoding."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from deeplab_dpc.formats import auto_deeplab_spec as nas_spec

REPO = Path(__file__).resolve().parents[1]

OFFICIAL_OPERATIONS = [
    "atrous_5x5", "separable_3x3_2", "separable_3x3_2", "atrous_3x3",
    "separable_3x3_2", "separable_3x3_2", "separable_5x5_2",
    "separable_5x5_2", "separable_5x5_2", "atrous_5x5",
]  # fmt: skip
OFFICIAL_INDICES = [1, 0, 1, 0, 3, 1, 4, 2, 3, 5]
OFFICIAL_BACKBONE = [0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1]


def raises(obj, *fragments):
    with pytest.raises(nas_spec.ArchitectureError) as info:
        nas_spec.parse_architecture(obj, source="arch.json")
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def good():
    return json.loads(json.dumps(nas_spec.HNASNET))


# === Space sizes (Sec. 5.1) ================================================


def test_cell_space_size_is_the_papers_for_b5():
    # "the number of cell structures is 5.6 x 10^14"
    size = nas_spec.cell_space_size(5, 8)
    assert size == (2 * 3 * 4 * 5 * 6 * 8**5) ** 2 == 556627761561600
    assert f"{size:.1e}" == "5.6e+14"


def test_cell_space_size_by_enumeration():
    ops = ["a", "b", "c"]
    for blocks in (1, 2):
        cells = set()
        choices = [[(i, op) for i in range(b + 2) for op in ops] for b in range(blocks)]
        for combo in itertools.product(
            *[[(x, y) for x in c for y in c] for c in choices]
        ):
            cells.add(combo)
        assert len(cells) == nas_spec.cell_space_size(blocks, len(ops))


def test_network_space_size_by_enumeration_and_the_papers_figure():
    for layers in range(1, 8):
        assert nas_spec.network_space_size(layers) == len(
            list(nas_spec.enumerate_paths(layers))
        )
    assert nas_spec.network_space_size(12) == 75025
    # The paper's "2.9 x 10^4 unique paths" for L = 12 is the count of 11
    # transitions (the first of the 12 layers fixed at 1/4); see the docstring.
    assert nas_spec.network_space_size(11) == 28657
    assert f"{nas_spec.network_space_size(11):.1e}" == "2.9e+04"
    joint = nas_spec.network_space_size(11) * nas_spec.cell_space_size(5)
    assert math.floor(math.log10(joint)) == 19  # "in the order of 10^19"


def test_reachable_levels():
    assert nas_spec.reachable_levels(5) == [
        [0, 1],
        [0, 1, 2],
        [0, 1, 2, 3],
        [0, 1, 2, 3],
        [0, 1, 2, 3],
    ]
    assert nas_spec.reachable_levels(3, num_levels=2) == [[0, 1], [0, 1], [0, 1]]
    assert nas_spec.legal_moves(0) == [0, 1] and nas_spec.legal_moves(3) == [2, 3]


# === Viterbi against brute force ===========================================


@pytest.mark.parametrize("num_levels", [2, 3, 4])
def test_viterbi_matches_brute_force_on_random_betas(num_levels):
    rng = np.random.default_rng(num_levels)
    for trial in range(40):
        layers = 1 + trial % 7
        beta = rng.normal(scale=2.0, size=(layers, num_levels, 3))
        p = nas_spec.transition_probabilities(beta)
        # Rows sum to 1 over the legal edges, illegal edges have 0.
        mask = nas_spec.edge_mask(num_levels)
        np.testing.assert_allclose(p.sum(-1), 1.0)
        assert np.all(p[:, ~mask] == 0)
        best = max(
            nas_spec.enumerate_paths(layers, num_levels),
            key=lambda path: nas_spec.path_log_probability(p, path),
        )
        path, logp = nas_spec.viterbi_path(p)
        assert path == best
        assert logp == pytest.approx(nas_spec.path_log_probability(p, best))


def test_viterbi_hand_made():
    # Two layers, two levels: stem -> 1 has probability 0.9, then 1 -> 0 0.8.
    p = np.zeros((2, 2, 3))
    p[0, 0] = [0, 0.1, 0.9]
    p[1, 1] = [0.8, 0.2, 0]
    p[1, 0] = [0, 0.5, 0.5]
    path, logp = nas_spec.viterbi_path(p)
    assert path == [1, 0]
    assert logp == pytest.approx(math.log(0.9 * 0.8))
    # Greedy would also pick 1 first, but here the best path is not greedy:
    p[0, 0] = [0, 0.45, 0.55]
    p[1, 1] = [0.1, 0.1, 0]  # (need not sum to 1 for the decoder)
    p[1, 0] = [0, 1.0, 0.0]
    assert nas_spec.viterbi_path(p)[0] == [0, 0]


# === Cell decoding ==========================================================


def test_decode_cell_hand_made():
    ops = nas_spec.SEARCH_OPS
    big = 10.0
    alpha = np.zeros((nas_spec.num_cell_edges(2), len(ops)))
    k = {op: i for i, op in enumerate(ops)}
    # Block 0: inputs 0 and 1 (its only two); strongest non-zero ops.
    alpha[nas_spec.edge_index(0, 0), k["atrous_5x5"]] = big
    alpha[nas_spec.edge_index(0, 1), k["max_pool_3x3"]] = big / 2
    # Block 1: input 2 (block 0) strongest, then input 1; input 0 is
    # dominated by "zero", which does not count as strength.
    alpha[nas_spec.edge_index(1, 0), k["zero"]] = 2 * big
    alpha[nas_spec.edge_index(1, 1), k["none"]] = big / 4
    alpha[nas_spec.edge_index(1, 2), k["separable_5x5_2"]] = big
    cell = nas_spec.decode_cell(alpha)
    assert cell == [
        [{"input": 0, "op": "atrous_5x5"}, {"input": 1, "op": "max_pool_3x3"}],
        [{"input": 2, "op": "separable_5x5_2"}, {"input": 1, "op": "none"}],
    ]
    nas_spec.parse_cell(cell)  # a decoded cell is valid


def test_decode_cell_rejects_bad_shapes():
    with pytest.raises(ValueError, match="number of cell edges"):
        nas_spec.decode_cell(np.zeros((4, 8)))


# === Format ================================================================


def test_hnasnet_is_the_official_genotype_and_the_shipped_file():
    ops, indices, used, backbone = nas_spec.to_official(nas_spec.HNASNET)
    assert ops == OFFICIAL_OPERATIONS
    assert indices == OFFICIAL_INDICES
    assert used == [1, 1, 0, 0, 0, 0, 0]
    assert backbone == OFFICIAL_BACKBONE
    assert (
        nas_spec.load_architecture(REPO / "specs" / "hnasnet.json") == nas_spec.HNASNET
    )
    assert (REPO / "specs" / "hnasnet.json").read_text() == nas_spec.dump_architecture(
        nas_spec.HNASNET
    )


def test_round_trip(tmp_path):
    path = tmp_path / "a.json"
    arch = nas_spec.parse_architecture(good())
    nas_spec.save_architecture(arch, path)
    assert nas_spec.load_architecture(path) == arch
    assert json.loads(path.read_text()) == arch
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp left


def test_errors_name_the_field(tmp_path):
    raises([], "expected a JSON object")
    a = good()
    del a["cell"]
    raises(a, "field 'cell'", "missing")
    a = good()
    a["cells"] = []
    raises(a, "field 'cells'", "unknown field")
    a = good()
    a["cell"][2] = a["cell"][2][:1]
    raises(a, "field 'cell[2]'", "2 branches")
    a = good()
    a["cell"][1][0]["input"] = 3
    raises(a, "field 'cell[1][0].input'", "not an input of block 1")
    a = good()
    a["cell"][0][1]["input"] = True
    raises(a, "field 'cell[0][1].input'")
    a = good()
    a["cell"][3][1]["op"] = "sep_conv_3x3"
    raises(a, "field 'cell[3][1].op'", "unknown operator")
    a = good()
    a["cell"][3][1]["op"] = "zero"
    raises(a, "field 'cell[3][1].op'", "only in the search")
    a = good()
    a["cell"][0][0]["rate"] = 2
    raises(a, "field 'cell[0][0].rate'", "unknown field")
    a = good()
    a["network"][8] = 0
    raises(a, "field 'network[8]'", "level 0 after level 2", "more than one level")
    a = good()
    a["network"][0] = 2
    raises(a, "field 'network[0]'", "after the stem")
    a = good()
    a["network"][8] = 4
    raises(a, "field 'network[8]'", "not a level")
    bad = tmp_path / "bad.json"
    bad.write_text('{"cell": [\n  [}')
    with pytest.raises(
        nas_spec.ArchitectureError, match=r"bad.json:2:\d+: invalid JSON"
    ):
        nas_spec.load_architecture(bad)
    with pytest.raises(nas_spec.ArchitectureError, match="no such architecture file"):
        nas_spec.load_architecture(tmp_path / "missing.json")
    assert issubclass(nas_spec.ArchitectureError, ValueError)
