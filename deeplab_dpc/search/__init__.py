"""Architecture search for the Dense Prediction Cell (Chen et al., NeurIPS 2018).

Sec. 3.3 and 4.1 of "Searching for Efficient Multi-Scale Architectures for
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
