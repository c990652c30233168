"""Streaming confusion matrix, mIoU, per-class IoU and pixel accuracy (numpy).

As DeepLab's `eval.py` (`tf.metrics.mean_iou` over whole images at original
size, ignore-label pixels excluded): IoU_c = TP / (TP + FP + FN), mIoU the
mean over classes whose union is non-empty (classes absent from both ground
truth and prediction do not count, as in `tf.metrics.mean_iou`), pixel
accuracy = trace / total. Rows are ground truth, columns predictions.

Deviation: plain numpy (`np.bincount`) instead of TF1 metric variables; the
matrix is int64, so no overflow on large datasets.
"""

import numpy as np


def confusion_matrix(labels, predictions, num_classes, ignore_label):
    """[C, C] int64 counts of (ground truth, prediction) over non-ignored pixels.

    A ground-truth id outside [0, C) that is not the ignore label is an error.
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions differ in size: {labels.size} vs {predictions.size}"
        )
    keep = labels != ignore_label
    labels, predictions = labels[keep], predictions[keep]
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"ground-truth class id {int(labels[bad][0])} is outside [0, {num_classes}) "
            f"and not the ignore label {ignore_label}"
        )
    if ((predictions < 0) | (predictions >= num_classes)).any():
        raise ValueError(f"predicted class ids must be in [0, {num_classes})")
    flat = labels * num_classes + predictions
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def iou_per_class(matrix):
    """IoU per class (float, NaN where the class is in neither truth nor prediction)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(matrix):
    """Mean IoU over classes with a non-empty union (0.0 for an empty matrix)."""
    ious = iou_per_class(matrix)
    valid = ~np.isnan(ious)
    return float(ious[valid].mean()) if valid.any() else 0.0


def pixel_accuracy(matrix):
    """Correct pixels / all counted pixels (0.0 for an empty matrix)."""
    matrix = np.asarray(matrix)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else 0.0


class StreamingConfusionMatrix:
    """Accumulates a confusion matrix over batches; ignore-label pixels excluded."""

    def __init__(self, num_classes, ignore_label):
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, labels, predictions):
        """Adds one batch (any shapes with the same number of pixels)."""
        self.matrix += confusion_matrix(
            labels, predictions, self.num_classes, self.ignore_label
        )

    def result(self, class_names=None):
        """{"miou", "per_class_iou" (name -> IoU or None), "pixel_accuracy", ...}."""
        names = list(class_names or [f"class_{i}" for i in range(self.num_classes)])
        ious = iou_per_class(self.matrix)
        return {
            "miou": mean_iou(self.matrix),
            "per_class_iou": {
                name: None if np.isnan(v) else float(v) for name, v in zip(names, ious)
            },
            "pixel_accuracy": pixel_accuracy(self.matrix),
            "confusion_matrix": self.matrix.tolist(),
        }
