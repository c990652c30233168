"""Layer 5: what training, evaluation and the searches report.

`metrics` (confusion matrix, mIoU, pixel accuracy; NumPy), `colormaps`
(dataset colour maps, PNG panels), `summaries` (TensorBoard scalars and
images, training progress lines).
"""
