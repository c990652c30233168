"""Streaming confusion matrix and IoU: known answers and the ignore label."""

import numpy as np
import pytest

from deeplab_dpc.reporting import metrics


def test_confusion_matrix_known_answer_rows_truth_columns_prediction():
    labels = np.array([[0, 0, 1, 1, 2, 255]])
    preds = np.array([[0, 1, 1, 1, 0, 2]])
    matrix = metrics.confusion_matrix(labels, preds, 3, 255)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    # IoU: class0 1/(2+2-1)=1/3, class1 2/(2+3-2)=2/3, class2 0/(1+0-0)=0.
    np.testing.assert_allclose(metrics.iou_per_class(matrix), [1 / 3, 2 / 3, 0.0])
    assert metrics.mean_iou(matrix) == pytest.approx(1 / 3)
    assert metrics.pixel_accuracy(matrix) == pytest.approx(3 / 5)


def test_absent_classes_do_not_count_and_streaming_adds_up():
    stream = metrics.StreamingConfusionMatrix(4, 255)
    stream.update(np.array([0, 0, 1]), np.array([0, 0, 1]))
    stream.update(np.array([[1, 255]]), np.array([[0, 3]]))
    result = stream.result(["a", "b", "c", "d"])
    assert result["per_class_iou"]["c"] is None and result["per_class_iou"]["d"] is None
    assert result["per_class_iou"]["a"] == pytest.approx(2 / 3)
    assert result["per_class_iou"]["b"] == pytest.approx(1 / 2)
    assert result["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert np.sum(result["confusion_matrix"]) == 4


def test_ignore_label_zero_as_ade20k_and_bad_labels_rejected():
    matrix = metrics.confusion_matrix(np.array([0, 1, 2]), np.array([2, 1, 2]), 3, 0)
    assert matrix.sum() == 2 and matrix[1, 1] == 1 and matrix[2, 2] == 1
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix(np.array([5]), np.array([0]), 3, 255)
    with pytest.raises(ValueError, match="differ in size"):
        metrics.confusion_matrix(np.array([1, 1]), np.array([0]), 3, 255)
