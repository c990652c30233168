"""Layer 1: the two architecture file formats, their validation and spaces; no TensorFlow.

`dpc_spec`: the Dense Prediction Cell spec (branch list JSON, the paper's
operator space, the top-1 cell). `auto_deeplab_spec`: the Auto-DeepLab
architecture (cell and network path JSON), space sizes, Viterbi and cell
decoding. See g3doc/dpc_spec.md and g3doc/auto_deeplab.md.
"""
