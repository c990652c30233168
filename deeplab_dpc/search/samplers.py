"""Search policies: which cell to evaluate next, given the cells scored so far.

The paper (Chen et al., NeurIPS 2018, Sec. 3.3) used Google Vizier's random
search, which "samples architectures uniformly from the space and also samples
points near the best architectures observed so far". Vizier is not public, so
this is our own reimplementation of that description:

* `random`: uniform over the space (the paper's baseline policy).
* `paper`: uniform, or, with probability `near_best_prob` once `top_k` cells
  are scored, a neighbour (one branch's input or op changed, `spaces.py`) of
  a cell drawn uniformly from the current top `top_k`. Vizier's exact mixing
  rule and neighbourhood are unknown; ours are documented here.
* `evolution`: regularised evolution (Real et al., AAAI 2019), which the
  paper names as future work: the population is the `population` most
  recently completed cells; the parent is the best of `sample_size` of them
  drawn at random; the child is its neighbour. Uniform until the population
  is full.

Deviation from Vizier: trials are stored and scheduled by Optuna (see
`study.py`); a policy is a plain object with `propose(history, rng,
exclude)` that the worker calls inside an ask/tell loop, so that every worker
of a shared study decides from the same stored history. `exclude` holds the
canonical keys already claimed by other trials; policies avoid them when they
can (exhaustively in a finite space, by rejection otherwise).
"""

import collections

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.search import SearchError

SAMPLERS = ("random", "paper", "evolution")
REJECTION_TRIES = 100

# One scored cell of the study: trial number, canonical key, spec, proxy score.
Scored = collections.namedtuple("Scored", ["number", "key", "spec", "score"])


def _finite_choices(space, exclude):
    specs = space.enumerate()
    free = [s for s in specs if spec_lib.canonical_key(s) not in exclude]
    return free or specs


def _uniform(space, rng, exclude):
    if hasattr(space, "enumerate"):
        choices = _finite_choices(space, exclude)
        return list(choices[int(rng.integers(len(choices)))])
    spec = space.sample(rng)
    for _ in range(REJECTION_TRIES):
        if spec_lib.canonical_key(spec) not in exclude:
            break
        spec = space.sample(rng)
    return spec


def _neighbour(space, parents, rng, exclude):
    """A neighbour of one of `parents` not in `exclude`, or None if none found."""
    for _ in range(REJECTION_TRIES):
        parent = parents[int(rng.integers(len(parents)))]
        child = space.mutate(parent.spec, rng)
        if spec_lib.canonical_key(child) not in exclude:
            return child, parent
    return None, None


def _best(history, k):
    """The top `k` cells by score, one per canonical key (ties: earliest)."""
    by_key = {}
    for item in sorted(history, key=lambda s: (-s.score, s.number)):
        by_key.setdefault(item.key, item)
    return list(by_key.values())[:k]


class RandomSampler:
    """Uniform over the space."""

    name = "random"

    def __init__(self, space):
        self.space = space

    def propose(self, history, rng, exclude=frozenset()):
        del history
        return _uniform(self.space, rng, exclude), {"origin": "uniform"}


class PaperSampler:
    """Uniform samples mixed with neighbours of the current top cells."""

    name = "paper"

    def __init__(self, space, near_best_prob=0.5, top_k=5):
        if not 0.0 <= near_best_prob <= 1.0:
            raise SearchError(f"near_best_prob must be in [0, 1], got {near_best_prob}")
        if top_k < 1:
            raise SearchError(f"near_best top_k must be >= 1, got {top_k}")
        self.space = space
        self.near_best_prob = float(near_best_prob)
        self.top_k = int(top_k)

    def propose(self, history, rng, exclude=frozenset()):
        top = _best(history, self.top_k)
        if len(top) >= self.top_k and rng.random() < self.near_best_prob:
            child, parent = _neighbour(self.space, top, rng, exclude)
            if child is not None:
                return child, {"origin": "near_best", "parent": parent.number}
        return _uniform(self.space, rng, exclude), {"origin": "uniform"}


class EvolutionSampler:
    """Regularised evolution: tournament over the most recent cells, then mutate."""

    name = "evolution"

    def __init__(self, space, population=20, sample_size=5):
        if population < 1 or not 1 <= sample_size <= population:
            raise SearchError(
                "evolution needs population >= 1 and 1 <= sample_size <= population,"
                f" got {population} and {sample_size}"
            )
        self.space = space
        self.population = int(population)
        self.sample_size = int(sample_size)

    def propose(self, history, rng, exclude=frozenset()):
        if len(history) < self.population:
            return _uniform(self.space, rng, exclude), {"origin": "uniform"}
        alive = list(history)[-self.population :]
        for _ in range(REJECTION_TRIES):
            picks = rng.choice(len(alive), self.sample_size, replace=False)
            parent = max((alive[int(i)] for i in picks), key=lambda s: s.score)
            child = self.space.mutate(parent.spec, rng)
            if spec_lib.canonical_key(child) not in exclude:
                return child, {"origin": "mutation", "parent": parent.number}
        return _uniform(self.space, rng, exclude), {"origin": "uniform"}


def get_sampler(name, space, **options):
    """The policy called `name` (one of SAMPLERS), with its own options.

    Options: `near_best_prob`, `top_k` (paper); `population`, `sample_size`
    (evolution). Options meant for another policy are ignored.
    """
    if name == "random":
        return RandomSampler(space)
    if name == "paper":
        keys = ("near_best_prob", "top_k")
        return PaperSampler(space, **{k: options[k] for k in keys if k in options})
    if name == "evolution":
        keys = ("population", "sample_size")
        return EvolutionSampler(space, **{k: options[k] for k in keys if k in options})
    raise SearchError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
