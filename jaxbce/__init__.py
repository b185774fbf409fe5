"""jaxbce: binary cross-entropy for JAX, exact to the last bit and correct under every transform.

The public functions are pure and jit-able; options are keyword-only::

    import jaxbce
    loss = jaxbce.sigmoid_binary_cross_entropy(logits, labels, reduction="mean")
"""

from jaxbce._kernels import nll, nll_bwd, nll_fwd, nll_vjp
from jaxbce._linear import default_chunk_size, linear_sigmoid_binary_cross_entropy
from jaxbce._losses import (
    REDUCTIONS,
    binary_cross_entropy,
    checked,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
)

__version__ = "0.1.0"

__all__ = [
    "REDUCTIONS",
    "binary_cross_entropy",
    "checked",
    "default_chunk_size",
    "linear_sigmoid_binary_cross_entropy",
    "nll",
    "nll_bwd",
    "nll_fwd",
    "nll_vjp",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
]
