"""Evaluation: the evaluator (mIoU of checkpoints) and the visualizer (vis.py).

The metrics (`deeplab_dpc.reporting.metrics`) and colour maps (`deeplab_dpc.reporting.colormaps`)
live below training and evaluation, which both use them.
"""
