"""The elementwise benchmark's inputs: the ``(B, C)`` layout of N elements and the arrays."""

from __future__ import annotations

import dataclasses

import numpy as np


def shape_for(n: int, classes: int) -> tuple[int, int]:
    """Returns the multi-label ``(batch, classes)`` shape used for ``n`` elements.

    Args:
      n: Total number of elements.
      classes: Preferred number of labels per example.

    Returns:
      ``(n // classes, classes)`` when ``classes`` divides ``n``, else ``(1, n)``.
    """
    if n > classes and n % classes == 0:
        return (n // classes, classes)
    return (1, n)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Host (NumPy) inputs shared by every contender at one size.

    Attributes:
      logits: Float32 logits, standard normal times 3, shape ``(B, C)``.
      labels: Float32 labels in {0, 1}, a third of them ones.
      mask: Bool mask for ``where=``, nine tenths of it True.
    """

    logits: np.ndarray
    labels: np.ndarray
    mask: np.ndarray

    @property
    def n(self) -> int:
        """The number of elements."""
        return int(self.logits.size)

    @classmethod
    def make(cls, shape: tuple[int, int], seed: int = 0) -> Batch:
        """Draws the inputs for one shape.

        Args:
          shape: ``(B, C)``.
          seed: NumPy seed.

        Returns:
          The batch.
        """
        rng = np.random.default_rng(seed)
        logits = (3.0 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        labels = (rng.random(shape, dtype=np.float32) < 1 / 3).astype(np.float32)
        mask = rng.random(shape, dtype=np.float32) < 0.9
        return cls(logits=logits, labels=labels, mask=mask)
