"""The derivative coefficients of elementwise kernels and their contraction with tangents.

An elementwise function's JVP is a sum over its inputs of a coefficient (the diagonal of
that input's Jacobian) times the input's tangent. The kernels (:mod:`jaxbce._kernels`,
:mod:`jaxbce._focal`) compute the coefficients; :func:`contract` forms the sum, skipping
symbolic-zero tangents, and an :class:`Overflowing` coefficient, one that may overflow where
the function is finite, is applied through a map that never forms ``inf * 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


class Overflowing(NamedTuple):
    """A partial derivative that may overflow where the loss is finite, with the map
    ``t -> value * t`` written so that a zero ``t`` gives 0 rather than ``inf * 0``.

    ``jacfwd`` and ``hessian`` push a zero tangent into every input but one: a coefficient
    that overflowed (``d/dy`` at ``x = -finfo.max`` with ``pos_weight``) would turn the
    finite derivatives of the other inputs into NaN.
    ``times`` multiplies ``t`` by finite factors in turn; it is used only where ``value``
    is not finite, and is linear in ``t``, so reverse mode transposes it.
    """

    value: jax.Array
    times: Callable[[jax.Array], jax.Array]


Coefficient: TypeAlias = "jax.Array | Overflowing | None"


def apply(c: jax.Array | Overflowing, t: jax.Array) -> jax.Array:
    """``c * t``: through ``c.times`` where an :class:`Overflowing` ``c`` is not finite."""
    if not isinstance(c, Overflowing):
        return c * t
    finite = jnp.isfinite(c.value)
    # Both branches stay finite where they are not taken: reverse mode sends a zero
    # cotangent through the other branch too.
    return jnp.where(finite, jnp.where(finite, c.value, 0.0) * t, c.times(t))


def contract(
    out: jax.Array, coefficients: Sequence[Coefficient], tangents: Sequence[Any]
) -> jax.Array:
    """The tangent of an elementwise function: ``sum(c * t)`` over the inputs.

    ``coefficients`` holds the diagonal of each input's Jacobian (``None`` for an absent
    input; :func:`apply` for an :class:`Overflowing` one); tangents that are symbolic zeros
    are skipped, so their coefficients are never needed and XLA drops them. A scalar
    tangent (``eps``) broadcasts.
    """
    terms = [
        apply(c, t)
        for c, t in zip(coefficients, tangents, strict=True)
        if c is not None and not isinstance(t, SymbolicZero)
    ]
    return sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)
