"""Test metrics of a binary problem and the choice of its decision threshold.

scikit-learn computes them; each function takes host NumPy labels and probabilities.
"""

from __future__ import annotations

import math

import numpy as np


def best_threshold(y: np.ndarray, probability: np.ndarray) -> float:
    """The probability threshold with the highest F1 on the given (validation) labels.

    Args:
      y: ``[n]`` 0/1 labels.
      probability: ``[n]`` predicted probabilities.

    Returns:
      The threshold; 0.5 when ``y`` has no positives.
    """
    from sklearn.metrics import precision_recall_curve

    if y.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y, probability)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[np.argmax(f1[:-1])])


def binary_metrics(y: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC, average precision, and accuracy and F1 at ``threshold``.

    Args:
      y: ``[n]`` 0/1 labels.
      probability: ``[n]`` predicted probabilities.
      threshold: Predict positive where ``probability >= threshold``.

    Returns:
      ``roc_auc``, ``average_precision``, ``accuracy``, ``f1``, ``threshold``; the ranking
      metrics are NaN when ``y`` holds a single class.
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    predicted = probability >= threshold
    both = 0 < y.sum() < len(y)
    return {
        "roc_auc": float(roc_auc_score(y, probability)) if both else math.nan,
        "average_precision": float(average_precision_score(y, probability)) if both else math.nan,
        "accuracy": float(np.mean(predicted == y)),
        "f1": float(f1_score(y, predicted, zero_division=0.0)),
        "threshold": float(threshold),
    }
