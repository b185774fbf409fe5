"""The float32 quotient ``num / p`` of the probability kernel, correctly rounded on every
device: a subnormal ``p`` read from its bits (a flushing device divides by it as by 0), and a
division that is not correctly rounded (XLA:GPU's) corrected by its exact residual.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxbce._arithmetic import is_float32, reciprocal, split


@jax.custom_jvp
def quotient(num: jax.Array, p: jax.Array) -> jax.Array:
    """``num / p`` correctly rounded for :math:`p \\ge 0`, subnormal float32 :math:`p` too.

    A flushing device divides by a subnormal as by 0; here :math:`p = m\\,2^{-149}` is read
    from its bits and :math:`num/p = (num\\,2^{23}/m)\\,2^{126}`, so it overflows only
    where the exact quotient does. Derivative: :math:`d\\,num/p - num\\,dp/p^2`.

    One division, by ``p`` or by ``m``: with one per case and a select, a jitted program of
    several Hessian-vector products got the stand-in branch's quotient at a subnormal ``p``
    on XLA:CPU (the compiler step at fault not pinned down). Correctly rounded at every
    subnormal ``p`` (``tests/test_kernels.py``).

    XLA:GPU's float32 division is not correctly rounded (``div.full.f32``, up to 2 ulps
    from the exact quotient: 2.0015 measured on an H200; openxla/xla#37181): the quotient
    ``q`` is corrected by its residual ``num - q p``, formed from exact partial products,
    where the correction is more than ``(1 + 2^-14)/2`` of the spacing of the numbers
    toward the exact quotient, which a correctly rounded division never needs (its
    correction is below half that spacing; ours is within ``2^-17`` of it). So the CPU's
    quotients are unchanged and a GPU's are within ``0.50004`` ulp. The derivative's
    quotients, which must stay linear in the tangent, are not corrected.
    """
    return _divide(num, p, correct=True)


@jax.custom_jvp
def linear_quotient(num: jax.Array, p: jax.Array) -> jax.Array:
    """:func:`quotient` uncorrected: linear in ``num``, for tangents."""
    return _divide(num, p, correct=False)


def _divide(num: jax.Array, p: jax.Array, *, correct: bool) -> jax.Array:
    if not is_float32(p):
        return num / p
    bits = lax.bitcast_convert_type(p, jnp.int32)
    subnormal = (bits & 0x7F800000) == 0
    # One division, by p or by its integer significand m: no branch divides by a subnormal.
    den = jnp.where(subnormal, (bits & 0x007FFFFF).astype(jnp.float32), p)
    a = num * jnp.where(subnormal, 2.0**23, 1.0)
    q = a / den
    if correct:
        q = correct_quotient(a, den, q)
    return q * jnp.where(subnormal, 2.0**126, 1.0)


def correct_quotient(a: jax.Array, den: jax.Array, q: jax.Array) -> jax.Array:
    """``a / den`` (``den`` normal, positive) from a quotient ``q`` within a few ulps of it:
    ``q`` where its residual is below ``(1 + 2^-14)/2`` of the spacing of the numbers
    between ``q`` and the exact quotient (half of ``q``'s ulp below a power of two), else
    ``q`` corrected by it (:func:`quotient`). ``q`` and ``a`` not normal are left as they
    are."""
    # On the significands A, Q, D in [1, 2) (A times 2^-1, 1 or 2 for a good q), so that no
    # partial product is subnormal however small den is: A - Q D = (a - q den) 2^-(Eq + Ed).
    ia = lax.bitcast_convert_type(a, jnp.int32) & 0x7FFFFFFF
    iq = lax.bitcast_convert_type(q, jnp.int32) & 0x7FFFFFFF
    i_den = lax.bitcast_convert_type(den, jnp.int32)
    ea, eq, e_den = ia >> 23, iq >> 23, (i_den >> 23) & 0xFF
    field = ea - eq - e_den + 254  # A's biased exponent
    ok = (ea > 0) & (ea < 255) & (eq > 0) & (eq < 255) & (field > 100) & (field < 150)
    one = 0x3F800000
    big_a = lax.bitcast_convert_type(
        jnp.where(ok, (field << 23) | (ia & 0x7FFFFF), one), jnp.float32
    )
    big_q, big_den = (
        lax.bitcast_convert_type((i & 0x7FFFFF) | one, jnp.float32) for i in (iq, i_den)
    )
    # The residual, exact (Dekker's order for a quotient within an ulp): the partial
    # products of 12-bit halves are exact, A - Qh Dh too (Sterbenz).
    qh, ql = split(big_q)
    dh, dl = split(big_den)
    residual = (((big_a - qh * dh) - qh * dl) - ql * dh) - ql * dl
    step = residual * reciprocal(big_den)  # within 2^-17 of the exact correction
    # Half an ulp of Q is 2^-24; below a power of two (Q = 1, step down) it is 2^-25.
    half_ulp = jnp.where(((iq & 0x7FFFFF) == 0) & (step < 0), 2.0**-25, 2.0**-24)
    wrong = ok & (jnp.abs(step) > (1.0 + 2.0**-14) * half_ulp)
    scale = lax.bitcast_convert_type(jnp.where(ok, eq, 127) << 23, jnp.float32)
    return jnp.where(wrong, q + jnp.where(q < 0, -step, step) * scale, q)


def _quotient_jvp(
    primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array], *, q: jax.Array
) -> jax.Array:
    num, p = primals
    d_num, d_p = tangents
    # Not quotient(d_num - q d_p, p), transposed into q * (ct / p) = 0 * inf at a subnormal p,
    # nor (q / p) d_p, which overflows at p ~ 1e-20 (0 * inf in forward mode). Where q itself
    # overflows (the exact quotient too), q d_p would be inf * 0 in a zero direction (the
    # other columns of jax.hessian over a vector): there the slope is (num d_p / p) / p,
    # which gives 0 for a zero direction, and so does its transpose for a zero cotangent.
    finite = jnp.isfinite(q)
    slope = jnp.where(
        finite,
        linear_quotient(jnp.where(finite, q, 0.0) * d_p, p),
        linear_quotient(linear_quotient(num * d_p, p), p),
    )
    return linear_quotient(d_num, p) - jnp.where(q == 0, 0.0, slope)


def _quotient_rule(
    f: Callable[[jax.Array, jax.Array], jax.Array],
) -> Callable[
    [tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]], tuple[jax.Array, jax.Array]
]:
    """The JVP rule of :func:`quotient` or :func:`linear_quotient` (``f``): its own primal,
    the tangent of :func:`_quotient_jvp`."""

    def rule(
        primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        q = f(*primals)
        return q, _quotient_jvp(primals, tangents, q=q)

    return rule


quotient.defjvp(_quotient_rule(quotient))
linear_quotient.defjvp(_quotient_rule(linear_quotient))
