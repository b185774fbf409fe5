"""What the loss tests share: the three public losses and inputs suited to each."""

from __future__ import annotations

import numpy as np

import jaxbce

BCE = jaxbce.sigmoid_binary_cross_entropy
PROBS = jaxbce.binary_cross_entropy
FOCAL = jaxbce.sigmoid_focal_loss
FUNCTIONS = [BCE, PROBS, FOCAL]


def inputs(fn, shape=(4, 5), seed=0, dtype=np.float32):
    """Predictions suited to ``fn`` (logits, or probabilities for BCELoss) and soft labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * 3
    if fn is PROBS:
        x = 1 / (1 + np.exp(-x))
    return x.astype(dtype), rng.uniform(size=shape).astype(dtype)
