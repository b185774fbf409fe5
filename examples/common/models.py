"""The model of the two classifier examples: an MLP that returns logits."""

from __future__ import annotations

import itertools

import jax
from flax import nnx


class MLP(nnx.Module):
    """A multi-layer perceptron that returns logits (no sigmoid: the loss applies it stably)."""

    def __init__(
        self, in_features: int, hidden: int, out_features: int, *, depth: int = 2, rngs: nnx.Rngs
    ) -> None:
        """Builds the layers.

        Args:
          in_features: Width of the input.
          hidden: Width of each hidden layer.
          out_features: Number of logits per example.
          depth: Number of hidden layers.
          rngs: Source of the initial weights.
        """
        widths = [in_features] + [hidden] * depth
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(widths)])
        self.head = nnx.Linear(hidden, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``float32[batch, in_features]`` to logits ``float32[batch, out_features]``."""
        for layer in self.layers:
            x = nnx.gelu(layer(x))
        return self.head(x)
