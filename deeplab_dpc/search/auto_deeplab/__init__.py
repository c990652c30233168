"""Auto-DeepLab: hierarchical (cell and network level) architecture search.

Liu et al., "Auto-DeepLab: Hierarchical Neural Architecture Search for
Semantic Image Segmentation", CVPR 2019. `supernet` holds the continuous
relaxation, `search` the bi-level optimisation, `figures` the plots.
"""
