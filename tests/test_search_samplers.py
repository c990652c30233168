"""Search spaces and policies: uniformity, exact enumeration, near-best locality."""

import numpy as np
import pytest
from scipy import stats

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.search import SearchError, samplers, spaces
from deeplab_dpc.search.samplers import Scored

OP_NAMES = [spec_lib.op_name(op) for op in spec_lib.all_ops()]


def _hamming(a, b):
    """Number of (branch, field) values that differ between two specs."""
    diff = 0
    for x, y in zip(spec_lib.parse_spec(a), spec_lib.parse_spec(b)):
        diff += x[spec_lib.INPUT] != y[spec_lib.INPUT]
        diff += spec_lib.op_name(x) != spec_lib.op_name(y)
    return diff


def _history(space, n, seed=1):
    rng = np.random.default_rng(seed)
    specs = [space.sample(rng) for _ in range(n)]
    scores = rng.permutation(n) / n  # distinct scores, random order
    return [
        Scored(i, spec_lib.canonical_key(s), s, float(v))
        for i, (s, v) in enumerate(zip(specs, scores))
    ]


def test_random_sampler_is_uniform_over_inputs_and_ops():
    space = spaces.FullSpace(5)
    sampler = samplers.get_sampler("random", space)
    rng = np.random.default_rng(0)
    n = 16200  # 200 per op
    specs = [sampler.propose([], rng)[0] for _ in range(n)]
    for b in range(5):
        inputs = [s[b][spec_lib.INPUT] for s in specs]
        counts = np.bincount(np.array(inputs) + 1, minlength=b + 1)
        assert len(counts) == b + 1  # only F or earlier branches
        if b > 0:
            assert stats.chisquare(counts).pvalue > 1e-4, (b, counts)
        ops = np.array([OP_NAMES.index(spec_lib.op_name(s[b])) for s in specs])
        op_counts = np.bincount(ops, minlength=len(OP_NAMES))
        assert stats.chisquare(op_counts).pvalue > 1e-4, b
    # Joint check: the 3x3 rates of branch 0 are uniform over the 8 x 8 grid
    # (so r_h and r_w are independent, as the space's product form needs).
    convs = [s[0] for s in specs if spec_lib.op_name(s[0]).startswith("sep")]
    pairs = [
        spec_lib.RATES.index(c[spec_lib.RATE][0]) * 8
        + spec_lib.RATES.index(c[spec_lib.RATE][1])
        for c in convs
    ]
    assert stats.chisquare(np.bincount(pairs, minlength=64)).pvalue > 1e-4


def test_full_space_size_is_the_papers():
    assert spaces.FullSpace(5).size == 120 * 81**5  # B! * 81^B, about 4.2e11


def test_aspp_subsets_are_enumerated_exactly():
    space = spaces.get_space("aspp_subsets")
    specs = space.enumerate()
    keys = {spec_lib.canonical_key(s) for s in specs}
    assert space.size == len(specs) == len(keys) == 31
    assert sorted(len(s) for s in specs) == sorted(
        [1] * 5 + [2] * 10 + [3] * 10 + [4] * 5 + [5]
    )
    full_aspp = spec_lib.canonical_key(spec_lib.ASPP_BRANCHES)
    assert full_aspp in keys
    assert all(b[spec_lib.INPUT] == -1 for s in specs for b in s)


def test_aspp_random_sampler_visits_every_subset_once_when_excluding():
    space = spaces.get_space("aspp_subsets")
    sampler = samplers.get_sampler("random", space)
    rng = np.random.default_rng(3)
    claimed = set()
    for _ in range(31):
        spec, _ = sampler.propose([], rng, frozenset(claimed))
        key = spec_lib.canonical_key(spec)
        assert key not in claimed
        claimed.add(key)
    assert len(claimed) == 31


def test_aspp_mutation_adds_or_removes_one_branch():
    space = spaces.get_space("aspp_subsets")
    rng = np.random.default_rng(0)
    for spec in space.enumerate():
        for _ in range(5):
            child = space.mutate(spec, rng)
            assert space.contains(child)
            assert abs(len(child) - len(spec)) == 1


def test_paper_sampler_near_best_stays_next_to_the_top_cells():
    space = spaces.FullSpace(5)
    history = _history(space, 30)
    top = sorted(history, key=lambda s: -s.score)[:5]
    sampler = samplers.get_sampler("paper", space, near_best_prob=1.0, top_k=5)
    rng = np.random.default_rng(0)
    parents = set()
    for _ in range(200):
        child, info = sampler.propose(history, rng)
        assert info["origin"] == "near_best"
        parent = next(t for t in history if t.number == info["parent"])
        assert parent in top
        assert _hamming(child, parent.spec) == 1
        parents.add(parent.number)
    assert parents == {t.number for t in top}  # every top cell gets neighbours
    # A uniform sample is almost never that close to a top cell.
    uniform = samplers.get_sampler("random", space)
    far = [
        min(_hamming(uniform.propose([], rng)[0], t.spec) for t in top)
        for _ in range(200)
    ]
    assert min(far) >= 3


def test_paper_sampler_mixes_uniform_and_waits_for_history():
    space = spaces.FullSpace(5)
    sampler = samplers.get_sampler("paper", space, near_best_prob=0.5, top_k=5)
    rng = np.random.default_rng(1)
    few = _history(space, 4)
    assert all(sampler.propose(few, rng)[1]["origin"] == "uniform" for _ in range(50))
    history = _history(space, 20)
    origins = [sampler.propose(history, rng)[1]["origin"] for _ in range(400)]
    share = origins.count("near_best") / len(origins)
    assert 0.4 < share < 0.6


def test_evolution_mutates_the_tournament_winner_of_the_recent_population():
    space = spaces.FullSpace(5)
    history = _history(space, 40)
    sampler = samplers.get_sampler("evolution", space, population=10, sample_size=3)
    rng = np.random.default_rng(2)
    recent = {t.number: t for t in history[-10:]}
    ranks = sorted(recent.values(), key=lambda t: -t.score)
    for _ in range(100):
        child, info = sampler.propose(history, rng)
        assert info["parent"] in recent  # older cells have left the population
        assert _hamming(child, recent[info["parent"]].spec) == 1
        # The winner of 3 draws from 10 is never among the 2 worst.
        assert recent[info["parent"]] not in ranks[-2:]


def test_samplers_avoid_claimed_keys():
    space = spaces.FullSpace(1)  # 81 one-branch cells
    keys = [
        spec_lib.canonical_key([{**op, spec_lib.INPUT: -1}])
        for op in spec_lib.all_ops()
    ]
    claimed = frozenset(keys[::2])  # 41 of 81
    rng = np.random.default_rng(0)
    uniform = samplers.get_sampler("random", space)
    assert all(
        spec_lib.canonical_key(uniform.propose([], rng, claimed)[0]) not in claimed
        for _ in range(100)
    )
    history = [Scored(0, keys[1], [{**spec_lib.all_ops()[1], spec_lib.INPUT: -1}], 0.5)]
    near = samplers.get_sampler("paper", space, near_best_prob=1.0, top_k=1)
    for _ in range(100):
        child, info = near.propose(history, rng, claimed)
        assert info["origin"] == "near_best"
        assert spec_lib.canonical_key(child) not in claimed | {keys[1]}


def test_unknown_sampler_and_space_are_one_line_errors():
    space = spaces.FullSpace(5)
    with pytest.raises(
        SearchError, match="unknown sampler 'vizier'; known: random, paper, evolution"
    ):
        samplers.get_sampler("vizier", space)
    with pytest.raises(SearchError, match="unknown search space 'tiny'"):
        spaces.get_space("tiny")
    with pytest.raises(SearchError, match="sample_size"):
        samplers.get_sampler("evolution", space, population=3, sample_size=5)
