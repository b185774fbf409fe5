"""Error-free float32 arithmetic: exact sums and products as unevaluated pairs, quotients
without a division.

:mod:`jaxbce._elementary`, :mod:`jaxbce._kernels` and :mod:`jaxbce._focal` carry values as
pairs ``(hi, lo)`` of float32 numbers whose sum is the value to about :math:`2^{-34}` or
better, and round once at the end. The building blocks are here.

Products that must be exact are formed from halves of 12 bits split with an integer mask
(:func:`split`), whose partial products are exact: a compiler that contracts ``a * b + c``
into a fused multiply-add (XLA:CPU and GPUs do) computes the same numbers. Dekker's
``two_prod`` is not used: it is wrong when only some uses of ``fl(a * b)`` are contracted.
Additions are Knuth's :func:`two_sum` and Dekker's :func:`fast_two_sum`, with the
constants in them hidden from XLA's simplifier (:func:`opaque`). No division is used:
XLA does not fuse a division whose result is read more than once, and would write it to
memory.

In other dtypes (float64) the functions compute plainly, with ``lo = 0``, but
:func:`exact_product` and :func:`compensated_sum`, which stay exact there too (the focal
loss' float64 closed forms whose constants must cancel exactly).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

Pair = tuple[jax.Array, jax.Array]


def two_sum(a: jax.Array, b: jax.Array) -> Pair:
    """``(s, err)`` with ``s = fl(a + b)`` and ``s + err = a + b`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def fast_two_sum(a: jax.Array, b: jax.Array) -> Pair:
    """:func:`two_sum` for ``|a| >= |b|`` (Dekker), three operations instead of six."""
    s = a + b
    return s, b - (s - a)


def split(a: jax.Array) -> Pair:
    """``(hi, lo)``, ``hi + lo = a``, each with at most 12 significant bits (float32).

    ``hi`` is ``a`` with the low 12 mantissa bits cleared by an integer mask, so the split
    involves no multiplication that a compiler could contract.
    """
    bits = lax.bitcast_convert_type(a, jnp.uint32)
    hi = lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
    return hi, a - hi


@jax.custom_jvp
def exact_mul(a: jax.Array, b: jax.Array) -> Pair:
    """``a * b`` as a pair: the product of the 12-bit halves' leading parts, exact, and the
    rest, rounded at about ``2^-36`` of the product (not normalized); ``(a * b, 0)`` in
    other dtypes."""
    if not is_float32(a):
        return a * b, jnp.zeros_like(a * b)
    # A factor below 2^-40 is split times 2^80: for smaller factors a partial product (a
    # high half times a low one) may be subnormal, and a device that flushes it loses up to
    # 2^-12 of the product. Where the other factor is above 2^40, it is divided by 2^80
    # instead (the product unchanged); otherwise the product is normalized and scaled back:
    # its high part is exact down to the smallest normal number, a flushed low part is below
    # half an ulp of it.
    small_a, small_b = jnp.abs(a) < 2.0**-40, jnp.abs(b) < 2.0**-40
    big_a, big_b = jnp.abs(a) > 2.0**40, jnp.abs(b) > 2.0**40
    up_a, up_b = small_a & ~big_b, small_b & ~big_a
    swap_ab, swap_ba = small_a & big_b, small_b & big_a
    ah, al = split(a * jnp.where(up_a | swap_ab, 2.0**80, jnp.where(swap_ba, 2.0**-80, 1.0)))
    bh, bl = split(b * jnp.where(up_b | swap_ba, 2.0**80, jnp.where(swap_ab, 2.0**-80, 1.0)))
    p_hi, p_lo = ah * bh, (ah * bl + al * bh) + al * bl
    n_hi, n_lo = fast_two_sum(p_hi, p_lo)
    scaled = up_a | up_b
    back_a, back_b = jnp.where(up_a, 2.0**-80, 1.0), jnp.where(up_b, 2.0**-80, 1.0)
    hi = jnp.where(scaled, (n_hi * back_a) * back_b, p_hi)
    return hi, jnp.where(scaled, (n_lo * back_a) * back_b, p_lo)


@exact_mul.defjvp
def _exact_mul_jvp(
    primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]
) -> tuple[Pair, Pair]:
    # The product rule on the product, not through the splits and scalings: a reverse pass
    # through them would multiply a cotangent by 2^-80 before the 2^80 (flushed to 0).
    (a, b), (da, db) = primals, tangents
    hi, lo = exact_mul(a, b)
    d = a * db + b * da
    return (hi, lo), (d, jnp.zeros_like(d))


def exact_product(a: jax.Array, b: jax.Array) -> Pair:
    """``a * b`` as a pair in float32 (:func:`exact_mul`) and in float64, where
    :func:`exact_mul` rounds: there the factors' halves of 26 bits (the low 27 mantissa bits
    cleared by an integer mask), whose partial products are exact but the last, about
    ``2^-106`` of the product, as for float32 a contraction into a fused multiply-add
    computes the same numbers. For sums whose terms must cancel exactly
    (:func:`compensated_sum`)."""
    if is_float32(a):
        return exact_mul(a, b)
    mask = jnp.uint64(0xFFFFFFFFF8000000)
    ah, bh = (
        lax.bitcast_convert_type(lax.bitcast_convert_type(v, jnp.uint64) & mask, v.dtype)
        for v in (a, b)
    )
    al, bl = a - ah, b - bh
    return ah * bh, (ah * bl + al * bh) + al * bl


def product_terms(a: jax.Array, b: jax.Array) -> tuple[jax.Array, ...]:
    """The four partial products of ``a * b`` from halves of the factors (12 bits in
    float32, 26 in float64: :func:`split`, :func:`exact_product`'s mask), each exact but the
    product of the low halves (rounded at about ``2^-48``, ``2^-106`` of ``a * b``), for a
    :func:`compensated_sum` in which ``a * b`` must cancel with other terms to the last bit:
    :func:`exact_product` adds the three lower ones, which rounds at about ``2^-77`` of the
    product in float64. Partial products below the smallest normal number flush to 0 on
    devices that flush subnormals: the caller keeps the factors away from them."""
    if is_float32(a):
        (ah, al), (bh, bl) = split(a), split(b)
    else:
        mask = jnp.uint64(0xFFFFFFFFF8000000)
        ah, bh = (
            lax.bitcast_convert_type(lax.bitcast_convert_type(v, jnp.uint64) & mask, v.dtype)
            for v in (a, b)
        )
        al, bl = a - ah, b - bh
    return ah * bh, ah * bl, al * bh, al * bl


def compensated_sum(*terms: jax.Array) -> jax.Array:
    """The sum of ``terms``, each addition's rounding error (:func:`two_sum`) added back at
    the end: exact where the terms are exact pairs that cancel."""
    total, err = terms[0], jnp.zeros_like(terms[0])
    for term in terms[1:]:
        total, e = two_sum(total, term)
        err = err + e
    return total + err


def reciprocal(d: jax.Array) -> jax.Array:
    """``1 / d`` to about ``2^-17`` for normal ``d > 0``, no division (other dtypes divide).

    A bit-pattern seed (5% error) and two Newton steps. XLA will not fuse a division (an
    "expensive" operation) into a consumer that reads its result more than once, and
    every error-free correction below does; multiplications it fuses freely. The
    corrections in :func:`refine_quotient` make the quotient exact whatever this error is.
    """
    if not is_float32(d):
        return 1.0 / d
    r = lax.bitcast_convert_type(
        jnp.uint32(0x7EF311C3) - lax.bitcast_convert_type(d, jnp.uint32), jnp.float32
    )
    r = r + r * (1.0 - d * r)
    return r + r * (1.0 - d * r)


def refine_quotient(num: Pair, den: Pair, q0: jax.Array, inv_den: jax.Array) -> Pair:
    """``num / den`` as a normalized pair ``(hi, lo)``, to about ``2^-34``.

    ``q0`` is the caller's approximate quotient (:func:`reciprocal`, within ``2^-17``).
    It is split at once into ``qh`` (12 bits, by a mask) and ``ql``, and only the two
    halves are used from then on: ``q0`` is itself a product, and a compiler that fuses
    it into some of its uses but not others (contraction into a multiply-add) would use
    two different quotients. The residual ``num - (qh + ql) den`` comes from partial
    products with ``den_hi`` cut to 12 bits: ``qh * dh`` is exact and ``num - qh * dh``
    exact (Sterbenz), the rest is ``2^-11`` smaller and rounded at ``2^-35``.
    ``inv_den`` needs about 17 correct bits: the correction is ``2^-17`` of ``q0``.
    """
    qh, ql = split(q0)
    dh, dl = split(den[0])
    dl = dl + den[1]
    residual = ((num[0] - qh * dh) - ql * dh) + (num[1] - (qh + ql) * dl)
    return fast_two_sum(qh, ql + residual * inv_den)


def divide(num: Pair, den: Pair) -> Pair:
    """``num / den`` for normalized pairs (``num`` finite, ``den > 0`` normal) as a pair within
    about ``2^-34`` in float32, without a division (:func:`refine_quotient`); other dtypes
    divide."""
    if not is_float32(den[0]):
        q = (num[0] + num[1]) / (den[0] + den[1])
        return q, jnp.zeros_like(q)
    inv = reciprocal(den[0])
    return refine_quotient(num, den, num[0] * inv, inv)


def times_pow2(x: jax.Array, n: jax.Array) -> jax.Array:
    """``x * 2^n`` for an integer-valued ``n`` in [-180, 180], exact unless the result is
    subnormal: two factors built from their exponent bits, applied in turn (``2^n`` itself
    may not be a normal number; ``exp2`` would not be fused where it is read more than once).
    """
    half = jnp.trunc(n / 2)

    def factor(e: jax.Array) -> jax.Array:
        bits = (e.astype(jnp.int32) + 127).astype(jnp.uint32) << 23
        return lax.bitcast_convert_type(bits, jnp.float32).astype(n.dtype)

    return (x * factor(half)) * factor(n - half)


def opaque(value: float, like: jax.Array) -> jax.Array:
    """The constant ``value`` hidden from XLA's algebraic simplifier.

    The simplifier reassociates constants: it rewrites ``(2 + x) - 2`` to ``x``, which is
    exactly the rounding error that an error-free transformation must keep.
    """
    hidden: jax.Array = lax.optimization_barrier(jnp.asarray(value, like.dtype))
    return hidden


def is_float32(x: jax.Array) -> bool:
    is_f32: bool = x.dtype == jnp.float32
    return is_f32
