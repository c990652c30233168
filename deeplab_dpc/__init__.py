"""deeplab_dpc: DPC and Auto-DeepLab architecture search for segmentation, TF2 / Keras 3.

Reproduces, in the DeepLab style, "Searching for Efficient Multi-Scale
Architectures for Dense Image Prediction" (Chen et al., NeurIPS 2018,
arXiv:1809.04184: the Dense Prediction Cell and its search) and
"Auto-DeepLab: Hierarchical Neural Architecture Search for Semantic Image
Segmentation" (Liu et al., CVPR 2019, arXiv:1901.02985: the cell and network
search and the found `nas_hnasnet` network). The sub-packages are the layers
of g3doc/architecture.md, lowest first: `core`, `formats` and `data`,
`layers`, `backbones`, `modeling`, `reporting`, `training` and `evaluation`,
`search`, `export`, then `command_line` and the `tools`. Heavy modules (TensorFlow)
are imported lazily by the submodules that need them, so `import deeplab_dpc`
is cheap.
"""

__version__ = "0.1.0"
