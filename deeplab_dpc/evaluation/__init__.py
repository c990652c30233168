"""Evaluation: streaming confusion matrix and mIoU, the evaluator, visualisation."""
