"""deeplab_dpc: Dense Prediction Cells for semantic segmentation in TF2 / Keras 3.

Reproduces "Searching for Efficient Multi-Scale Architectures for Dense Image
Prediction" (Chen et al., NeurIPS 2018, arXiv:1809.04184) in the DeepLab style.
Heavy modules (TensorFlow) are imported lazily by the submodules that need them,
so `import deeplab_dpc` is cheap.
"""

__version__ = "0.1.0"
