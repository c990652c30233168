"""Search spaces: the full DPC space and the 31 ASPP subsets.

The full space (Chen et al., NeurIPS 2018, Sec. 3.1) has B! * 81^B cells
(about 4.2e11 for B = 5); sampling is uniform over it (`spec.sample_spec`:
each branch's input and op independently uniform, which is uniform over
specs since every spec is one such choice). Neighbours of a cell change one
branch's input or op (`spec.mutate_spec`).

The reduced space (Sec. 4.1, the fidelity check of the proxy task) is every
non-empty subset of the five parallel ASPP branches (1x1, separable rates 6,
12, 18, image pooling): 31 cells, small enough to evaluate exhaustively. Its
neighbours add or remove one branch.
"""

from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.search import SearchError

SPACES = ("full", "aspp_subsets")


class FullSpace:
    """Every DPC with `num_branches` branches (the paper's space)."""

    name = "full"

    def __init__(self, num_branches=spec_lib.DEFAULT_NUM_BRANCHES):
        self.num_branches = int(num_branches)
        self.size = spec_lib.search_space_size(self.num_branches)

    def sample(self, rng):
        return spec_lib.sample_spec(rng, self.num_branches)

    def mutate(self, spec, rng):
        return spec_lib.mutate_spec(spec, rng)

    def contains(self, spec):
        try:
            return len(spec_lib.parse_spec(spec)) == self.num_branches
        except spec_lib.SpecError:
            return False


class AsppSubsetSpace:
    """The 31 non-empty subsets of the five ASPP branches, enumerated exactly."""

    name = "aspp_subsets"

    def __init__(self):
        self.specs = spec_lib.aspp_subsets()
        self.size = len(self.specs)
        self._masks = {spec_lib.canonical_key(s): self._mask(s) for s in self.specs}
        self._by_mask = {m: s for s, m in zip(self.specs, self._masks.values())}

    @staticmethod
    def _mask(spec):
        ops = [{k: v for k, v in b.items() if k != spec_lib.INPUT} for b in spec]
        return frozenset(
            i
            for i, branch in enumerate(spec_lib.ASPP_BRANCHES)
            if {k: v for k, v in branch.items() if k != spec_lib.INPUT} in ops
        )

    def enumerate(self):
        return [list(s) for s in self.specs]

    def sample(self, rng):
        return list(self.specs[int(rng.integers(self.size))])

    def mutate(self, spec, rng):
        """Adds or removes one ASPP branch (never leaving the cell empty)."""
        mask = self._masks[spec_lib.canonical_key(spec)]
        choices = [
            i for i in range(len(spec_lib.ASPP_BRANCHES)) if mask != frozenset([i])
        ]
        flip = choices[int(rng.integers(len(choices)))]
        return list(self._by_mask[mask ^ {flip}])

    def contains(self, spec):
        try:
            return spec_lib.canonical_key(spec) in self._masks
        except spec_lib.SpecError:
            return False


def get_space(name, num_branches=spec_lib.DEFAULT_NUM_BRANCHES):
    """The space called `name` (one of SPACES); SearchError otherwise."""
    if name == "full":
        return FullSpace(num_branches)
    if name == "aspp_subsets":
        return AsppSubsetSpace()
    raise SearchError(f"unknown search space {name!r}; known: {', '.join(SPACES)}")
