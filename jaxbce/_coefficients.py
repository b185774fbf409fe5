"""The derivative coefficients of elementwise kernels and their contraction with tangents.

An elementwise function's JVP is a sum over its inputs of a coefficient (the diagonal of
that input's Jacobian) times the input's tangent. The kernels (:mod:`jaxbce._kernels`,
:mod:`jaxbce._focal`) compute the coefficients; :func:`contract` forms the sum, skipping
symbolic-zero tangents, and an :class:`Overflowing` coefficient, one that may overflow where
the function is finite, is applied through a map that never forms ``inf * 0``.
:func:`contract_scaled` differentiates a contraction with the direction scaled first, and
:func:`with_label_coefficients` and :func:`with_x_coefficients` give a coefficient's own
derivatives in the labels, or in the prediction, as single coefficients rather than chains
that would divide before they scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
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
    (or ``None``) are skipped, so their coefficients are never needed and XLA drops them. A scalar
    tangent (``eps``) broadcasts.
    """
    terms = [
        apply(c, t)
        for c, t in zip(coefficients, tangents, strict=True)
        if c is not None and t is not None and not isinstance(t, SymbolicZero)
    ]
    return sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)


#: ``jacobian(primals, several)``: the coefficients of an elementwise function's inputs
#: (see :func:`contract`); ``several`` asks for the :class:`Overflowing` forms used where
#: two or more inputs carry tangents.
Jacobian: TypeAlias = Callable[[tuple[Any, ...], bool], Sequence[Coefficient]]


def _unit(c: Coefficient, like: jax.Array) -> jax.Array:
    """``c * 1``, through :func:`apply`: the coefficient as a differentiable value."""
    assert c is not None
    return apply(c, jnp.ones_like(like))


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def contract_scaled(
    jacobian: Jacobian, several: bool, primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> jax.Array:
    """:func:`contract` of ``jacobian(primals, several)`` with ``tangents`` (``None`` where a
    tangent is absent or a symbolic zero), whose own derivative in the primals is
    :math:`\\sum_i J_{c_i}(t_i\\,dx)` rather than :math:`\\sum_i J_{c_i}(dx)\\,t_i`.

    The two are equal (a JVP is linear in its tangent), but not in floating point where a
    coefficient's derivative overflows while the product's is finite: ``jacfwd`` in two
    inputs gives the first a zero tangent in the second's column, and forward over forward
    then multiplies the derivative of the first's coefficient by it. For probabilities
    :math:`\\partial_p\\partial_y \\ell = -(1/p + 1/(1-p))` is ``-inf`` at a subnormal
    :math:`p` and :math:`\\partial_p^2 \\ell = \\pi q/p^2 + \\dots` below :math:`p \\approx
    10^{-19}` (float32): ``-inf * 0`` made the finite entries of the Hessian NaN. Scaling
    the direction first, the coefficient's derivative meets :math:`0\\cdot dx = 0`, and its
    rules (:func:`~jaxbce._quotient.quotient`) give 0 for a zero direction. Each
    coefficient is differentiated in its :class:`Overflowing` form (``several=True``), whose
    map stays finite where the coefficient itself overflows.

    The value is :func:`contract`'s, operation for operation; a linearization (``grad``)
    inlines this function, so its first derivatives are those of :func:`contract` too.
    """
    return contract(jnp.zeros(()), jacobian(primals, several), tangents)


@partial(contract_scaled.defjvp, symbolic_zeros=True)
def _contract_scaled_jvp(
    jacobian: Jacobian,
    several: bool,
    primals: tuple[tuple[Any, ...], tuple[Any, ...]],
    tangents: tuple[tuple[Any, ...], tuple[Any, ...]],
) -> tuple[jax.Array, jax.Array]:
    (args, ts), (d_args, d_ts) = primals, tangents
    out = contract_scaled(jacobian, several, args, ts)
    # Linear in the tangents: the first part is the contraction itself (linear in t), the
    # second scales the direction d by the primal t before the (linear) JVP.
    terms = [contract(out, jacobian(args, several), d_ts)] if _carries(d_ts) else []
    moving = [k for k, d in enumerate(d_args) if _live(d)]
    for i, t in enumerate(ts):
        if t is None or not moving:
            continue
        directions = [t * d_args[k] for k in moving]
        start = [
            jnp.broadcast_to(args[k], jnp.shape(d)) for k, d in zip(moving, directions, strict=True)
        ]

        def coefficient(*values: jax.Array, i: int = i, t: jax.Array = t) -> jax.Array:
            moved = list(args)
            for k, v in zip(moving, values, strict=True):
                moved[k] = v
            return _unit(jacobian(tuple(moved), True)[i], t)

        # Where t is 0 the term is 0 (t is a primal here: the mask keeps it linear in d).
        # The mask is for the transpose, ct -> t J^T(ct): reverse over forward (jacrev of
        # jacfwd) forms J^T(ct) before the product by t, so only the mask avoids 0 * inf.
        derivative = jax.jvp(coefficient, start, directions)[1]
        terms.append(jnp.where(t == 0, 0.0, derivative))
    return out, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)


def _live(t: Any) -> bool:
    return t is not None and not isinstance(t, SymbolicZero)


def _carries(ts: Sequence[Any]) -> bool:
    return any(_live(t) for t in ts)


#: ``coefficients(x, labels)``: one :data:`Coefficient` per entry of ``labels``.
LabelCoefficients: TypeAlias = Callable[[jax.Array, tuple[Any, ...]], Sequence[Coefficient]]


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def with_label_coefficients(
    f: Callable[[jax.Array, tuple[Any, ...]], jax.Array],
    coefficients: LabelCoefficients,
    x: jax.Array,
    labels: tuple[Any, ...],
) -> jax.Array:
    """``f(x, labels)``, whose derivative in each entry of ``labels`` is the single
    coefficient ``coefficients(x, labels)[i]`` (applied through :func:`apply`) rather than
    the chain through ``f``'s own operations; its derivative in ``x`` is ``f``'s.

    Reverse mode transposes a chain link by link: where ``f`` divides by a tiny ``x`` a
    label weight that a factor below 1 has scaled, the transposed chain divides the
    cotangent by ``x`` first, and overflows (then ``inf - inf`` in the error-free sums of the
    weights: NaN) where the product of the links is finite. One coefficient is transposed
    into one product.
    """
    return f(x, labels)


@partial(with_label_coefficients.defjvp, symbolic_zeros=True)
def _with_label_coefficients_jvp(
    f: Callable[[jax.Array, tuple[Any, ...]], jax.Array],
    coefficients: LabelCoefficients,
    primals: tuple[jax.Array, tuple[Any, ...]],
    tangents: tuple[Any, tuple[Any, ...]],
) -> tuple[jax.Array, jax.Array]:
    (x, labels), (dx, d_labels) = primals, tangents
    if _live(dx):
        out, d_out = jax.jvp(lambda v: f(v, labels), (x,), (dx,))
    else:
        out = with_label_coefficients(f, coefficients, x, labels)
        d_out = jnp.zeros_like(out)
    if _carries(d_labels):
        d_out = d_out + contract(out, coefficients(x, labels), d_labels)
    return out, d_out


#: ``coefficients(x, labels)``: for each output of a function, its derivative in ``x``.
XCoefficients: TypeAlias = Callable[[jax.Array, tuple[Any, ...]], Sequence[Coefficient]]


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def with_x_coefficients(
    f: Callable[[jax.Array, tuple[Any, ...]], tuple[Any, ...]],
    coefficients: XCoefficients,
    x: jax.Array,
    labels: tuple[Any, ...],
) -> tuple[Any, ...]:
    """``f(x, labels)``, a tuple of arrays (``None`` for an absent one), whose derivative in
    ``x`` is, for output ``i``, the single coefficient ``coefficients(x, labels)[i]``; its
    derivatives in the labels are ``f``'s own.

    The converse of :func:`with_label_coefficients`, for the labels' derivatives of an
    elementwise loss, whose derivatives in ``x`` are the mixed second derivatives: forward
    mode through ``f``'s chain would divide the tangent by a tiny ``x`` before a weight
    below 1 scales it (and overflow where the product is finite).
    """
    return f(x, labels)


@partial(with_x_coefficients.defjvp, symbolic_zeros=True)
def _with_x_coefficients_jvp(
    f: Callable[[jax.Array, tuple[Any, ...]], tuple[Any, ...]],
    coefficients: XCoefficients,
    primals: tuple[jax.Array, tuple[Any, ...]],
    tangents: tuple[Any, tuple[Any, ...]],
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    (x, labels), (dx, d_labels) = primals, tangents
    live = [k for k, d in enumerate(d_labels) if _live(d)]
    if live:

        def of_live(*values: jax.Array) -> tuple[Any, ...]:
            moved = list(labels)
            for k, v in zip(live, values, strict=True):
                moved[k] = v
            return f(x, tuple(moved))

        out, d_out = jax.jvp(of_live, [labels[k] for k in live], [d_labels[k] for k in live])
    else:
        out = with_x_coefficients(f, coefficients, x, labels)
        d_out = tuple(None if o is None else jnp.zeros_like(o) for o in out)
    if _live(dx):
        slopes = coefficients(x, labels)
        d_out = tuple(
            None if o is None else d if c is None else d + apply(c, dx)
            for o, d, c in zip(out, d_out, slopes, strict=True)
        )
    return out, d_out
