"""jaxbce: binary cross-entropy for JAX, faithfully rounded and correct under every transform.

The public functions are pure and jit-able; options are keyword-only::

    import jaxbce
    loss = jaxbce.sigmoid_binary_cross_entropy(logits, labels, reduction="mean")

The modules behind them are private: ``_losses`` (the public elementwise losses),
``_kernels`` (their elementwise kernel and its custom derivatives, contracted with tangents
by ``_coefficients``, on ``_elementary``'s faithfully rounded float32 functions, built from
``_arithmetic``'s error-free operations),
``_focal`` (the focal loss' kernel), ``_fused`` (the custom_jvp and shard_map parts shared
by scalar losses whose gradients come with their value), ``_checks`` (argument checks),
``_sharding`` (what a value's type says about its split over devices),
``_reductions`` (masks, sums and means), ``_linear`` (the fused linear loss) and
``_pairwise`` (SigLIP's pairwise loss). ``python -m jaxbce.check`` is the numerical
self-check, on ``_sweep``'s device sweeps and ``_exact``'s float64 references.
"""

from jaxbce._checks import with_value_checks
from jaxbce._linear import linear_sigmoid_binary_cross_entropy
from jaxbce._losses import (
    binary_cross_entropy,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
)
from jaxbce._pairwise import pairwise_sigmoid_loss

__version__ = "0.1.0"

__all__ = [
    "binary_cross_entropy",
    "linear_sigmoid_binary_cross_entropy",
    "pairwise_sigmoid_loss",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "with_value_checks",
]
