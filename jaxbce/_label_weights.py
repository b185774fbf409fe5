"""Label weights: the weights of the two log terms of every loss, as exact pairs.

Every loss weighs :math:`A = -\\log p` by :math:`\\pi q w` and :math:`B = -\\log(1 - p)` by
:math:`\\bar q w` (:mod:`jaxbce._kernels`), with the smoothed label :math:`q` and its
complement :math:`\\bar q`. :func:`label_weights` forms them from the labels and options as
unevaluated pairs of float32 numbers, so that forming them adds no rounding to the loss or
its slope; :func:`label_weight_slopes` gives their derivatives in each label input (the
second derivatives of the probability loss are built from them). The pair arithmetic the
kernels share with them (:func:`times`, :func:`plus`, :func:`pair_value`,
:func:`add_scaled`) is here too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbce._arithmetic import Pair, exact_mul, fast_two_sum, opaque, two_sum


def add_scaled(a: jax.Array, c: jax.Array, pair: Pair) -> jax.Array:
    """``a + c * (hi + lo)`` rounded once when ``c * hi`` is exact (``c`` = 0, 1, -1).

    ``a`` may be infinite (an infinite logit), and NaN propagates.
    """
    s, err = two_sum(a, c * pair[0])
    return jnp.where(jnp.isfinite(s), s + (err + c * pair[1]), s)


def total(pair: Pair) -> jax.Array:
    return pair[0] + pair[1]


class LabelWeights(NamedTuple):
    """The weights of the two terms, ``pq = w pw q`` and ``qc = w qc``, and ``c = pq + qc``.

    ``lo`` is ``None`` for plain labels (no smoothing, ``pos_weight`` or weights): then
    ``pq = y``, ``qc = 1 - y`` (rounded once) and ``c = 1``. With any option each weight is
    an unevaluated pair ``hi + lo`` good to about ``2^-44``, so that forming it adds no
    rounding to the loss or its slope.
    """

    pq: jax.Array
    qc: jax.Array
    c: jax.Array
    lo: tuple[jax.Array, jax.Array, jax.Array] | None = None


def times(a: jax.Array, hi: jax.Array, lo: jax.Array | None) -> Pair:
    """``a * (hi + lo)`` as a normalized pair (``|lo| <= ulp(hi) / 2``, about), so that a
    product of two such pairs may drop ``lo * lo``: ``fl(a * hi)`` and the rest."""
    p_hi, p_lo = exact_mul(a, hi)
    return fast_two_sum(p_hi, p_lo if lo is None else p_lo + a * lo)


def plus(a: Pair, b: Pair) -> Pair:
    s, err = two_sum(a[0], b[0])
    return fast_two_sum(s, err + (a[1] + b[1]))


def pair_value(a: Pair, f: Pair, c: Pair, g: Pair) -> Pair:
    """``a f + c g`` as a pair whose sum is it rounded once: ``a``, ``c`` label-weight
    pairs, ``f``, ``g`` pairs of the two terms (``lo * lo`` products dropped: the weights
    are normalized)."""
    p_hi, p_lo = times(f[0], a[0], a[1])
    m_hi, m_lo = times(g[0], c[0], c[1])
    s, err = two_sum(p_hi, m_hi)
    rest = err + ((p_lo + m_lo) + (a[0] * f[1] + c[0] * g[1]))
    return s, jnp.where(jnp.isfinite(s), rest, 0.0)


def smoothed(y: jax.Array, eps: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """``(q, qc)``: the smoothed label and its complement, each rounded about once.

    :math:`q = y(1-\\epsilon) + \\epsilon/2 = y + \\epsilon(\\tfrac12 - y)` and
    :math:`\\bar q = (1-y) + \\epsilon(y - \\tfrac12)` (Keras' convention), with
    :math:`1 - y` kept as an exact pair: the small correction is the only rounded term
    before the sum, so each is within about half an ulp, and exact for hard labels
    (:math:`\\bar q = \\epsilon/2` at :math:`y = 1`); ``eps=None`` is no smoothing.
    """
    if eps is None:
        return y, 1.0 - y
    qc_hi, qc_lo = fast_two_sum(opaque(1.0, y), -y)
    return y + eps * (0.5 - y), qc_hi + (qc_lo + eps * (y - 0.5))


def label_weights(
    y: jax.Array, eps: jax.Array | None, pw: jax.Array | None, w: jax.Array | None
) -> LabelWeights:
    """The weights of A and B, ``w pw q`` and ``w qc``, and their sum ``c``.

    The element weight is folded in here rather than multiplied into the loss, so a large
    term cannot overflow before ``w`` scales it down. Plain labels keep the one-rounding
    weights ``(y, 1 - y, 1)``. With an option every weight is carried as a pair: ``1 - y``
    and ``1/2 - y`` exactly, the products by ``eps``, ``pw`` and ``w`` as exact products
    plus a rounded remainder, and ``c = pq + qc`` as an exact sum (without ``pos_weight``
    it is exactly ``w``, since :math:`q + \\bar q = 1`).
    """
    if eps is None and pw is None and w is None:
        return LabelWeights(y, 1.0 - y, jnp.ones_like(y))
    qc = fast_two_sum(opaque(1.0, y), -y)  # 1 - y, exact for y in [0, 1]
    q: tuple[jax.Array, jax.Array | None] = (y, None)
    if eps is not None:
        half_gap = two_sum(opaque(0.5, y), -y)  # 1/2 - y exactly
        m = times(eps, *half_gap)
        q = plus((y, jnp.zeros_like(y)), m)
        qc = plus(qc, (-m[0], -m[1]))
    c: tuple[jax.Array, jax.Array | None]
    if pw is None:
        pq = q
        c = (jnp.ones_like(y), None)
    else:
        pq_pair = times(pw, *q)
        pq, c = pq_pair, plus(pq_pair, qc)
    if w is not None:
        pq, qc = times(w, *pq), times(w, *qc)
        c = (w, None) if pw is None else times(w, *c)
    zero = jnp.zeros_like(y)

    def low(lo: jax.Array | None) -> jax.Array:
        return zero if lo is None else lo

    return LabelWeights(pq[0], qc[0], c[0], (low(pq[1]), low(qc[1]), low(c[1])))


def label_weight_slopes(labels: tuple[Any, ...]) -> list[tuple[jax.Array, jax.Array] | None]:
    """For each of ``(y, eps, pw, w)``, the derivatives of the label weights ``(pq, qc)``
    in it (``None`` for an absent one)."""
    y, eps, pw, w = labels
    q, qc = smoothed(y, eps)
    ones = jnp.ones_like(y)
    w1 = ones if w is None else w
    pw1 = ones if pw is None else pw
    scale = w1 if eps is None else w1 * (1.0 - eps)
    return [
        (scale * pw1, -scale),
        None if eps is None else (w1 * (0.5 - y) * pw1, -w1 * (0.5 - y)),
        None if pw is None else (w1 * q, jnp.zeros_like(y)),
        None if w is None else (pw1 * q, qc),
    ]
