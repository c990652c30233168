"""Architecture search: the Dense Prediction Cell's and Auto-DeepLab's.

Two methods. The DPC search (Chen et al., NeurIPS 2018), in the modules
here and run by `search.py`, and Auto-DeepLab's hierarchical search (Liu et
al., CVPR 2019) in the package `auto_deeplab` (`supernet`: the continuous
relaxation of cells and network levels; `relaxed_cell`; `search`: the
bi-level loop alternating weight and architecture steps, decoded into an
`auto_deeplab_spec` architecture; `figures`; `options`), run by
`python -m deeplab_dpc.search.auto_deeplab` (g3doc/auto_deeplab.md).

The DPC search follows Sec. 3.3 and 4.1 of "Searching for Efficient Multi-Scale Architectures for
Dense Image Prediction" (arXiv:1809.04184): a proxy task (cached features of a
small backbone, a short training run, validation mIoU), a random search with
sampling near the best cells (Vizier's in the paper, `samplers.py` here),
re-ranking of the top candidates by end-to-end fine-tuning, and a reduced
space of 31 ASPP subsets to measure the proxy's fidelity.

Modules: `spaces` (full space and ASPP subsets), `samplers` (search
policies), `cache` (backbone feature cache), `proxy` (cached-feature
trainer), `study` (Optuna storage, heartbeat, trial slots, dedup), `rerank`
(end-to-end fine-tuning and evaluation of the top cells), `report`,
`stages` (the stages that `search.py` runs).
"""


class SearchError(ValueError):
    """A search setting or state that cannot be used; the message is one line."""
