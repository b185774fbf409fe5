"""Elementary functions of the kernel, accurate to a fraction of a float32 ulp.

The losses need a few functions of one argument, each faithfully rounded in float32:

* :func:`softplus_neg_abs`: :math:`\\operatorname{log1p}(e^{-t})`, :math:`t \\ge 0`
  (:math:`\\operatorname{softplus}(\\pm z) = \\max(\\pm z, 0) + L(|z|)`);
* :func:`sigmoid_neg_abs`: :math:`\\sigma(-t) = e^{-t}/(1 + e^{-t})`, :math:`t \\ge 0`;
* :func:`neg_log`: :math:`-\\log p` and :func:`neg_log1m`: :math:`-\\log(1 - p)`, for
  :math:`p \\in [0, 1]`, and :func:`recip_one_minus`: :math:`1/(1 - p)`;
* :func:`pow_neg_log`: :math:`u^\\gamma` from :math:`-\\log u` (the focal loss' factor),
  and :func:`softplus_over_sigmoid`: :math:`L(t)/\\sigma(-t)` from the pairs of both;
* :func:`exp_neg`: :math:`e^{-t}` and :func:`tanh_half`: :math:`\\tanh(t/2)`, single
  floats within an ulp, which the focal kernel needs where XLA's ``exp`` and ``tanh`` would
  be calls in XLA:CPU's loops (a loop that holds one is not vectorized at odd sizes).

XLA's own float32 ``exp``, ``log1p`` and ``log`` are each within an ulp or two, but a
composition of correctly rounded functions is not itself within one ulp: the rounding of
:math:`e^{-t}` alone moves :math:`\\operatorname{log1p}(e^{-t})` by up to half an ulp before
its own rounding. Each function here therefore returns an unevaluated sum ``(hi, lo)`` of
two float32 numbers whose total is within about :math:`2^{-26}` relative of the exact value;
the caller adds its own terms to ``hi`` exactly (:func:`~jaxbce._arithmetic.two_sum`) and
rounds once, so the result is faithfully rounded: within one ulp, and mostly within half
an ulp (measured at every float32 input by ``python -m jaxbce.check --exhaustive``).

Error analysis, float32 (:math:`u = 2^{-24}`):

1. Range reduction. :math:`k = \\operatorname{round}(t/\\ln 2)`, :math:`r = t - k \\ln 2`
   with :math:`\\ln 2 = C_1 + C_2`, :math:`C_1` of 15 bits, so :math:`kC_1` and
   :math:`t - kC_1` are exact (Sterbenz) for :math:`k \\le 127`; :math:`r = r_h + r_l`
   with an absolute error below :math:`10^{-11}` from the rounding of :math:`kC_2`.
2. :math:`E = e^{-r}`, :math:`|r| \\lesssim \\ln 2 / 2`:
   :math:`E = 1 - r_h + r_h^2/2 + r_h^3 Q(r_h) - r_l E`, with :math:`r_h^2` formed exactly
   (:func:`~jaxbce._arithmetic.split`) and the two leading additions error-free, so only
   the terms below :math:`r^3/6 \\le 0.007` are rounded:
   :math:`|E - \\hat E| \\lesssim 2^{-29} E` (:math:`Q` is a degree-4 fit with relative
   error :math:`8 \\cdot 10^{-8}`). Then :math:`e^{-t} = 2^{-k} E`.
3. :math:`L = \\operatorname{log1p}(e) = 2\\operatorname{artanh}(w)`, :math:`w = e / (2 + e)
   \\le 1/3`, taken unscaled as :math:`W = E / (2 + e)` so that nothing is subnormal before
   the final exact scaling by :math:`2^{-k}`. The quotient is an approximate reciprocal
   (:func:`~jaxbce._arithmetic.reciprocal`) corrected by its exact residual
   (:func:`~jaxbce._arithmetic.refine_quotient`), a pair good to :math:`2^{-34}`;
   :math:`L = 2w + 2w^3 T(w^2)`, whose tail is at most 3.6% of :math:`L` and carries a
   relative error of :math:`4u`: :math:`L` is within :math:`2^{-27}`.
4. :math:`\\sigma(-t) = 2^{-k} E/(1 + e)`, the same corrected quotient.
5. :math:`-\\log p = -m \\ln 2 - 2\\operatorname{artanh}((f - 1)/(f + 1))` for
   :math:`p = 2^m f`, :math:`f \\in [\\sqrt{1/2}, \\sqrt 2)` (:math:`f - 1` exact; a
   subnormal :math:`p` is normalised from its bits); :math:`-\\log(1 - p)` is :math:`-\\log`
   of the exact :math:`1 - p` for :math:`p \\ge 1/2` and
   :math:`-2\\operatorname{artanh}(-p/(2 - p))` below.

The exact products, error-free additions and division-free quotients these are built from
are :mod:`jaxbce._arithmetic`'s. Subnormal intermediates flush to zero on XLA:CPU, and
results below the smallest normal number with them (the check scores a 0 there as exact);
a GPU keeps subnormals (an H200 did), and there the final scaling by :math:`2^{-k}` rounds
a subnormal result once, so it is faithful too (at the first measurement on a GPU the
scaling stopped at the smallest normal number and such results were 0: 5.9 million
subnormal ulps off).

Derivatives. Each function is a :func:`jax.custom_jvp` whose rule is the exact formula
(:math:`L' = -\\sigma(-t)`, :math:`\\sigma(-t)' = -\\sigma(-t)\\sigma(t)`,
:math:`(-\\log p)' = -1/p`, :math:`(-\\log(1-p))' = 1/(1-p)`), built from the same
functions, so derivatives of every order are finite and accurate rather than derivatives of
the polynomials.

Other dtypes (float64) use XLA's functions in their own precision, with the same
``(hi, lo)`` interface and ``lo = 0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxbce._arithmetic import (
    Pair,
    divide,
    fast_two_sum,
    is_float32,
    opaque,
    reciprocal,
    refine_quotient,
    split,
    two_sum,
)
from jaxbce._quotient import linear_quotient

#: The primals or tangents of a one-argument function's JVP rule.
Unary = tuple[jax.Array]

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # 15 significant bits: k * _LN2_HI is exact for k < 512
_LN2_LO = 1.4286068203094173e-06  # ln 2 - _LN2_HI, rounded to float32
#: exp(-r) = 1 - r + r^2/2 + r^3 Q(r) on |r| <= ln(2)/2 (fit, relative error 8e-8).
_Q = (
    -0.1666666716337204,
    0.041666556149721146,
    -0.008333356119692326,
    0.001392614794895053,
    -0.00019853668345604092,
)
#: tanh(h) = h + h^3 H(h^2) on |h| <= 1/2 (least-squares fit, coefficients rounded to
#: float32; within 0.62 ulp there in float32, where XLA:CPU's tanh is up to 4.2 ulp off).
_H = (
    -0.3333333134651184,
    0.13333244621753693,
    -0.05394712835550308,
    0.021682363003492355,
    -0.008094599470496178,
    0.0020432076416909695,
)
#: 2 artanh(w) = 2w + 2w^3 T(w^2) on |w| <= 1/3 (fit, relative error 3e-8).
_T = (
    0.3333333432674408,
    0.19999854266643524,
    0.14296136796474457,
    0.10853894054889679,
    0.11609423160552979,
)
#: Above this t, e^-t is below the smallest normal float32 and flushes to 0.
_T_MAX = 88.0
#: From this t, e^-t (below 2^-150) rounds to 0 also where subnormals are kept.
_T_SUB = 104.0


def _poly(x: jax.Array, coefficients: tuple[float, ...]) -> jax.Array:
    acc = jnp.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        acc = acc * x + c
    return acc


def _artanh2(w: Pair) -> Pair:
    """``2 artanh(w)`` for ``|w| <= 1/3`` as a pair, from the normalized pair ``w``."""
    v = w[0] * w[0]
    return 2.0 * w[0], 2.0 * w[1] + 2.0 * (w[0] * v) * _poly(v, _T)


def _exp_neg(
    t: jax.Array, t_lo: jax.Array | None = None, shift: jax.Array | None = None
) -> tuple[jax.Array, ...]:
    """``e^-(t + t_lo) = scale * (E_hi + E_lo)`` with ``scale = 2^(shift - k)``, for
    ``0 <= t <= _T_MAX + shift ln 2``.

    ``t_lo``, if given, is at most half an ulp of ``t``; ``shift`` is an integer in [0, 180]
    (0 if not given). With a ``shift``, ``scale`` is 0 for ``k - shift = 127``. Without one,
    ``t <= _T_SUB`` and ``scale`` is ``2^-k`` from its bits, subnormal for ``k > 126``: a
    product with it rounds once where the device keeps subnormals, and is 0 where it flushes
    them, as the result would be; 0 at ``k = 150``, where the result is at most 0.71 of the
    smallest subnormal number. (Formed as ``2^(64 - k)`` times ``2^-64`` instead, the extra
    multiplication made ``value_and_grad`` slower on XLA:CPU, beyond timing noise.)
    """
    k = jnp.round(t * _LOG2E)
    # t - k C1 is exact, k C2 < 2e-4; where |t - k C1| < |k C2| the sum is tiny and the
    # three-operation two_sum's error is far below 2^-30 of E.
    r_hi, r_lo = fast_two_sum(t - k * _LN2_HI, -(k * _LN2_LO))
    if t_lo is not None:
        # Renormalized: the tail below drops r_lo r_hi^2 / 2, negligible only while r_lo is
        # within half an ulp of r_hi (a t_lo of half an ulp of t = 84 left it 2^-22 off).
        r_hi, r_lo = two_sum(r_hi, r_lo + t_lo)
    rh, rl = split(r_hi)
    sq_hi, sq_lo = rh * rh, rl * (2.0 * rh + rl)  # r_hi^2, the first term exact
    s1, e1 = fast_two_sum(opaque(1.0, t), -r_hi)
    e_hi, e2 = fast_two_sum(s1, 0.5 * sq_hi)
    tail = (r_hi * (sq_hi + sq_lo)) * _poly(r_hi, _Q) + 0.5 * sq_lo - r_lo * (1.0 - r_hi)
    e_hi, e_lo = fast_two_sum(e_hi, (e1 + e2) + tail)  # |e_lo| <= ulp(e_hi) / 2
    if shift is None:
        ki = k.astype(jnp.int32)
        subnormal = jnp.where(ki > 149, 0, jnp.left_shift(1, jnp.clip(149 - ki, 0, 31)))
        bits = jnp.where(ki < 127, (127 - ki) << 23, subnormal)
        return e_hi, e_lo, lax.bitcast_convert_type(bits, jnp.float32)
    exponent = (127 - k.astype(jnp.int32) + shift).astype(jnp.uint32) << 23
    return e_hi, e_lo, lax.bitcast_convert_type(exponent, jnp.float32)


@jax.custom_jvp
def exp_neg(t: jax.Array) -> jax.Array:
    """:math:`e^{-t}` for :math:`t \\ge 0`, within an ulp in float32 (below the smallest
    normal number from :math:`t = 87.3`: subnormal where the device keeps subnormals, up to
    :math:`t = 104`, 0 where it flushes them). Derivative: :math:`-e^{-t}`.

    In float32 it is this module's range reduction and polynomial rather than XLA's
    ``exp``, which XLA:CPU emits as a call: a loop that holds one is not vectorized where
    its length leaves a remainder between threads (the focal loss ran at a tenth of its
    speed at every odd size; ``benchmarks/vectorized_loops.py``).
    """
    if is_float32(t):
        e_hi, e_lo, scale = _exp_neg(jnp.minimum(t, _T_SUB))
        return jnp.where(t >= _T_SUB, 0.0, scale * (e_hi + e_lo))  # NaN stays NaN
    return jnp.exp(-t)


@exp_neg.defjvp
def _exp_neg_jvp(primals: Unary, tangents: Unary) -> tuple[jax.Array, jax.Array]:
    (t,), (dt,) = primals, tangents
    out = exp_neg(t)
    return out, -out * dt


# ------------------------------------------------------------------- logistic


def _scaled(scale: jax.Array, pair: Pair) -> Pair:
    # A normalized pair times 2^-k: the high part stays exact down to the smallest normal
    # number; a low part that flushes to 0 there is below half an ulp of the high part.
    return scale * pair[0], scale * pair[1]


def _exp_over(
    t: jax.Array, c: float, shift: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, Pair]:
    """``(2^-k, 2^(shift - k), W)`` with ``e^-t / (c + e^-t) = 2^-k W``: the
    quotient taken unscaled, so that no intermediate is subnormal before the caller's final
    scaling. ``shift`` (an integer in [0, 64], or None for 0) lets a result below the
    smallest normal number stay exact, scaled up, for ``t`` up to ``_T_MAX + shift ln 2``.
    Without a shift, the scales are subnormal or 0 above ``t = 87.3`` (:func:`_exp_neg`)."""
    limit = _T_SUB if shift is None else _T_MAX + shift * _LN2_HI
    e_hi, e_lo, scale = _exp_neg(jnp.minimum(t, limit))
    if shift is not None:  # 2^-k for k above 126 is 0 here (only c + e^-t reads it)
        k = jnp.round(jnp.minimum(t, limit) * _LOG2E).astype(jnp.int32)
        scale = jnp.where(k > 126, 0.0, scale)
    x_hi, x_lo = scale * e_hi, scale * e_lo
    copaque = opaque(c, t)
    d_hi = copaque + x_hi
    d_lo = (x_hi - (d_hi - copaque)) + x_lo
    w0 = e_hi * reciprocal(d_hi)
    # 1 / (c + e) = (1 - w) / c: the reciprocal the correction needs, from w itself.
    w = refine_quotient((e_hi, e_lo), (d_hi, d_lo), w0, (1.0 - scale * w0) / c)
    out_scale = scale
    if shift is not None:
        exponent = (127 - k + shift.astype(jnp.int32)).astype(jnp.uint32) << 23
        out_scale = lax.bitcast_convert_type(exponent, jnp.float32)
    return scale, out_scale, w


def _softplus_neg_abs_f32(t: jax.Array, shift: jax.Array | None = None) -> Pair:
    # log1p(e) = 2 artanh(w), w = e / (2 + e) = 2^-k W.
    scale, out_scale, w = _exp_over(t, 2.0, shift)
    wr = scale * (w[0] + w[1])
    v = wr * wr
    tail = 2.0 * (w[0] + w[1]) * v * _poly(v, _T)
    return _scaled(out_scale, fast_two_sum(2.0 * w[0], 2.0 * w[1] + tail))


def _sigmoid_neg_abs_f32(t: jax.Array, shift: jax.Array | None = None) -> Pair:
    # sigma(-t) = e / (1 + e) = 2^-k S.
    _, out_scale, s = _exp_over(t, 1.0, shift)
    return _scaled(out_scale, s)


@jax.custom_jvp
def softplus_neg_abs(t: jax.Array) -> Pair:
    """:math:`\\operatorname{log1p}(e^{-t})` for :math:`t \\ge 0` as ``(hi, lo)``.

    Within :math:`2^{-26}` relative in float32 (see the module docstring); 0 at
    :math:`t = \\infty`; NaN propagates. Derivative: :math:`-\\sigma(-t)`.
    """
    if is_float32(t):
        return _softplus_neg_abs_f32(t)
    return jnp.log1p(jnp.exp(-t)), jnp.zeros_like(t)


@softplus_neg_abs.defjvp
def _softplus_neg_abs_jvp(primals: Unary, tangents: Unary) -> tuple[Pair, Pair]:
    (t,), (dt,) = primals, tangents
    out = softplus_neg_abs(t)
    s_hi, s_lo = sigmoid_neg_abs(t)
    return out, (-(s_hi + s_lo) * dt, jnp.zeros_like(dt))


def softplus_neg_abs_summed(t: jax.Array) -> jax.Array:
    """:math:`\\operatorname{log1p}(e^{-t})` for :math:`t \\ge 0` as one float, rounded a few
    times: for a value that is only summed, whose sum's own rounding is larger. Not
    differentiated (the losses' derivatives are their own rules).

    In float32, XLA's ``exp`` and the series of :func:`softplus_neg_abs`:
    :math:`L = u + u\\,v\\,T(v)` with :math:`u = 2w = e \\cdot 2/(2 + e)` and :math:`v = w^2`
    (:math:`u`, not :math:`w`, so that nothing falls below the smallest normal number before
    :math:`e` does). The quotient is read once, so XLA:CPU computes it inside the sum's loop
    rather than writing it to memory: the value pass of a mean at :math:`2^{24}` took 8.2 ms
    where XLA's ``log1p(exp(-t))`` took 13.0 (``benchmarks/results/cpu-passes-2026-11-27-*``).
    Within 3.3 ulp of :math:`L` at every 61st float32 ``t`` below 87.33 and every one in
    [1.25, 1.3], where it is 3.26 ulp off at ``t = 1.2774217``
    (``tests/test_kernels.py::test_float32_summed_softplus_within_a_few_ulps``). Other
    dtypes: XLA's ``log1p(exp(-t))``.
    """
    if not is_float32(t):
        return jnp.log1p(jnp.exp(-t))
    e = jnp.exp(-t)
    u = e * (2.0 / (2.0 + e))
    v = 0.25 * (u * u)
    return u + u * (v * _poly(v, _T))


@jax.custom_jvp
def sigmoid_neg_abs(t: jax.Array) -> Pair:
    """:math:`\\sigma(-t) = 1/(1 + e^{t})` for :math:`t \\ge 0` as ``(hi, lo)``.

    Within :math:`2^{-26}` relative in float32; 0 at :math:`t = \\infty`. Derivative:
    :math:`-\\sigma(-t)\\,\\sigma(t)`.
    """
    if is_float32(t):
        return _sigmoid_neg_abs_f32(t)
    e = jnp.exp(-t)
    return e / (1.0 + e), jnp.zeros_like(t)


@sigmoid_neg_abs.defjvp
def _sigmoid_neg_abs_jvp(primals: Unary, tangents: Unary) -> tuple[Pair, Pair]:
    (t,), (dt,) = primals, tangents
    hi, lo = sigmoid_neg_abs(t)
    s = hi + lo
    return (hi, lo), (-(s * ((1.0 - hi) - lo)) * dt, jnp.zeros_like(dt))


@jax.custom_jvp
def tanh_half(t: jax.Array) -> jax.Array:
    """:math:`\\tanh(t/2) = \\sigma(t) - \\sigma(-t)` for :math:`t \\ge 0`. Derivative:
    :math:`2\\sigma(-t)\\sigma(t)`.

    In float32, below :math:`t = 1` the odd polynomial :data:`_H` in :math:`h = t/2`, and
    from there :math:`1 - 2\\sigma(-t)` from :func:`sigmoid_neg_abs`'s pair, with its
    leading difference error-free; rather than XLA's ``tanh``, which is up to 4.2 ulp off
    on [0, 1/2] and a call in XLA:CPU's loops, which keeps a loop that holds one from
    being vectorized at odd sizes.
    """
    if is_float32(t):
        h = 0.5 * jnp.minimum(t, 1.0)
        w = h * h
        near = h + h * (w * _poly(w, _H))
        s_hi, s_lo = sigmoid_neg_abs(t)
        one, err = fast_two_sum(opaque(1.0, t), -2.0 * s_hi)  # 2 s_hi <= 1
        return jnp.where(t < 1.0, near, one + (err - 2.0 * s_lo))
    return jnp.tanh(0.5 * t)


@tanh_half.defjvp
def _tanh_half_jvp(primals: Unary, tangents: Unary) -> tuple[jax.Array, jax.Array]:
    (t,), (dt,) = primals, tangents
    s_hi, s_lo = sigmoid_neg_abs(t)
    s = s_hi + s_lo
    return tanh_half(t), (2.0 * (s * ((1.0 - s_hi) - s_lo))) * dt


def _exp_neg_scaled_f64(t: jax.Array, shift: jax.Array) -> jax.Array:
    """:math:`2^s e^{-t}` in float64, integer :math:`s \\in [0, 180]`, :math:`t < 1024`, and
    :math:`s \\ln 2 \\le t` where it matters: with :math:`\\ln 2 = h + l`, :math:`h` of 38
    bits, :math:`s h - t` is exact and :math:`1 + s l = e^{s l}` to :math:`2^{-60}`.
    (``exp(s log 2 - t)`` rounded its argument: 51 ulps off at t = 700.)"""
    hi, lo = 0.6931471805582987, 1.6465949582897082e-12
    return jnp.exp(shift * hi - t) * (1.0 + shift * lo)


@jax.custom_jvp
def softplus_neg_abs_scaled(t: jax.Array, shift: jax.Array) -> Pair:
    """:math:`2^s\\operatorname{log1p}(e^{-t})`, ``shift`` :math:`s` an integer in [0, 64]
    per element: a value below the smallest normal number, scaled up, keeps its digits on a
    device that flushes subnormals (a caller that multiplies it by a weight above 1 scales
    the product back). Derivative: :math:`-2^s\\sigma(-t)`; ``shift`` has none."""
    if is_float32(t):
        return _softplus_neg_abs_f32(t, shift)
    # Scaled inside the exponential; where shift > 0 (t > 690) log1p(e) = e below an ulp.
    scaled = _exp_neg_scaled_f64(t, shift)
    return jnp.where(shift > 0, scaled, jnp.log1p(jnp.exp(-t))), jnp.zeros_like(t)


@softplus_neg_abs_scaled.defjvp
def _softplus_neg_abs_scaled_jvp(
    primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]
) -> tuple[Pair, Pair]:
    (t, shift), (dt, _) = primals, tangents
    out = softplus_neg_abs_scaled(t, shift)
    s_hi, s_lo = sigmoid_neg_abs_scaled(t, shift)
    return out, (-(s_hi + s_lo) * dt, jnp.zeros_like(dt))


@jax.custom_jvp
def sigmoid_neg_abs_scaled(t: jax.Array, shift: jax.Array) -> Pair:
    """:math:`2^s\\sigma(-t)` as :func:`softplus_neg_abs_scaled` scales. Derivative:
    :math:`-2^s\\sigma(-t)\\,\\sigma(t)`."""
    if is_float32(t):
        return _sigmoid_neg_abs_f32(t, shift)
    e = jnp.exp(-t)
    return _exp_neg_scaled_f64(t, shift) / (1.0 + e), jnp.zeros_like(t)


@sigmoid_neg_abs_scaled.defjvp
def _sigmoid_neg_abs_scaled_jvp(
    primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]
) -> tuple[Pair, Pair]:
    (t, shift), (dt, _) = primals, tangents
    hi, lo = sigmoid_neg_abs_scaled(t, shift)
    s_hi, s_lo = sigmoid_neg_abs(t)
    big = (1.0 - s_hi) - s_lo
    return (hi, lo), (-((hi + lo) * big) * dt, jnp.zeros_like(dt))


# ------------------------------------------------------------------ logarithms


def _neg_log_f32(p: jax.Array) -> Pair:
    """``-log p`` for ``p > 0`` normal: ``-(m ln 2 + 2 artanh((f - 1) / (f + 1)))``."""
    bits = lax.bitcast_convert_type(p, jnp.int32)
    # p = 2^m f with f in [sqrt(1/2), sqrt(2)): shift the mantissa boundary to sqrt(1/2).
    shifted = bits - jnp.int32(0x3F3504F3)  # bits of sqrt(1/2)
    m = shifted >> 23
    f = lax.bitcast_convert_type(bits - (m << 23), jnp.float32)
    mf = m.astype(jnp.float32)
    num = f - 1.0  # exact (Sterbenz)
    den = two_sum(f, opaque(1.0, p))
    w0 = num * reciprocal(den[0])
    w = refine_quotient((num, jnp.zeros_like(num)), den, w0, 0.5 * (1.0 - w0))  # 2/(f+1) = 1 - w
    a_hi, a_lo = _artanh2(w)
    # m ln 2 + a, m * _LN2_HI exact (|m| < 2^8).
    s, err = two_sum(mf * _LN2_HI, a_hi)
    return -s, -(err + (a_lo + mf * _LN2_LO))


def _neg_log1m_f32(p: jax.Array) -> Pair:
    """``-log(1 - p)`` for ``0 <= p < 1``."""
    # p >= 1/2: 1 - p is exact, and -log(1 - p) = neg_log(1 - p).
    upper_hi, upper_lo = _neg_log_f32(jnp.where(p >= 0.5, 1.0 - p, 0.5))
    # p < 1/2: -log1p(-p) = -2 artanh(-p / (2 - p)), 1 / (2 - p) ~ (1 + w) / 2.
    pc = jnp.where(p < 0.5, p, 0.0)
    two = opaque(2.0, p)
    m_hi = two - pc
    m_lo = (two - m_hi) - pc
    w0 = -pc * reciprocal(m_hi)
    w = refine_quotient((-pc, jnp.zeros_like(pc)), (m_hi, m_lo), w0, 0.5 * (1.0 - w0))
    a_hi, a_lo = _artanh2(w)
    lower = p < 0.5
    # Below 2^-30, -log(1 - p) = p + p^2/2 to 2^-60, and w0 = -p/2 could be subnormal.
    tiny = p < 2.0**-30
    hi = jnp.where(tiny, p, jnp.where(lower, -a_hi, upper_hi))
    return hi, jnp.where(tiny, 0.5 * p * p, jnp.where(lower, -a_lo, upper_lo))


@jax.custom_jvp
def neg_log(p: jax.Array) -> Pair:
    """:math:`-\\log p` as ``(hi, lo)`` for :math:`p \\in [0, 1]`: ``inf`` at 0.

    Within :math:`2^{-26}` relative in float32 (p below the smallest normal reads as 0).
    Derivative: :math:`-1/p`.
    """
    if not is_float32(p):
        return -jnp.log(p), jnp.zeros_like(p)
    bits = lax.bitcast_convert_type(p, jnp.int32)
    # A subnormal p = m 2^-149 (m < 2^23, read from the bits: p itself may be flushed to 0
    # by any arithmetic) is scaled to the normal m, and 149 ln 2 added back.
    subnormal = (bits > 0) & (bits < 0x00800000)
    hi, lo = _neg_log_f32(jnp.where(subnormal, bits.astype(jnp.float32), p))
    shift_hi, shift_err = two_sum(hi, jnp.where(subnormal, 149.0 * _LN2_HI, 0.0))
    lo = lo + shift_err + jnp.where(subnormal, 149.0 * _LN2_LO, 0.0)
    valid = (bits >= 0x00800000) & (p <= 1.0) | subnormal
    hi = jnp.where(valid, shift_hi, jnp.where(bits == 0, jnp.inf, jnp.nan))
    return hi, jnp.where(valid, lo, 0.0)


@neg_log.defjvp
def _neg_log_jvp(primals: Unary, tangents: Unary) -> tuple[Pair, Pair]:
    (p,), (dp,) = primals, tangents
    return neg_log(p), (-linear_quotient(dp, p), jnp.zeros_like(dp))


@jax.custom_jvp
def neg_log1m(p: jax.Array) -> Pair:
    """:math:`-\\log(1 - p)` as ``(hi, lo)`` for :math:`p \\in [0, 1]`: ``inf`` at 1.

    Within :math:`2^{-26}` relative in float32. Derivative: :math:`1/(1 - p)`.
    """
    if not is_float32(p):
        # log1p is inaccurate in float64 on [-0.5, -0.29] on XLA:CPU; log of the exact
        # 1 - p is accurate there.
        return jnp.where(p >= 0.5, -jnp.log(1.0 - p), -jnp.log1p(-p)), jnp.zeros_like(p)
    one = p == 1.0
    inside = (p >= 0) & (p < 1)
    hi, lo = _neg_log1m_f32(jnp.where(inside, p, 0.0))
    hi = jnp.where(inside, hi, jnp.where(one, jnp.inf, jnp.nan))
    return hi, jnp.where(inside, lo, 0.0)


@neg_log1m.defjvp
def _neg_log1m_jvp(primals: Unary, tangents: Unary) -> tuple[Pair, Pair]:
    (p,), (dp,) = primals, tangents
    return neg_log1m(p), (dp / (1.0 - p), jnp.zeros_like(dp))


@jax.custom_jvp
def recip_one_minus(p: jax.Array) -> Pair:
    """:math:`1/(1 - p)` as ``(hi, lo)`` for :math:`p < 1`, within :math:`2^{-35}` in float32.

    ``1 - p`` is not exact below :math:`p = 1/2`; it is kept as an exact pair and the
    division corrected. Derivative: :math:`1/(1 - p)^2`.
    """
    if not is_float32(p):
        return 1.0 / (1.0 - p), jnp.zeros_like(p)
    one = opaque(1.0, p)
    m_hi, m_lo = fast_two_sum(one, -p)
    r0 = reciprocal(m_hi)
    return refine_quotient((one, jnp.zeros_like(p)), (m_hi, m_lo), r0, r0)


@recip_one_minus.defjvp
def _recip_one_minus_jvp(primals: Unary, tangents: Unary) -> tuple[Pair, Pair]:
    (p,), (dp,) = primals, tangents
    hi, lo = recip_one_minus(p)
    r = hi + lo
    return (hi, lo), ((r * r) * dp, jnp.zeros_like(dp))


def _pow_neg_log_f32(
    nl_hi: jax.Array, nl_lo: jax.Array, gamma: jax.Array, shift: jax.Array
) -> Pair:
    inf = jnp.isinf(nl_hi)
    # gamma * nl as a pair: the 12-bit halves' partial products are exact.
    gh, gl = split(jnp.broadcast_to(gamma, nl_hi.shape))
    lh, ll = split(jnp.where(inf, 0.0, nl_hi))
    y_hi, y_lo = fast_two_sum(gh * lh, (gh * ll + gl * lh) + gl * ll + gamma * nl_lo)
    big = inf | (y_hi > _T_MAX + shift * _LN2_HI)
    e_hi, e_lo, scale = _exp_neg(
        jnp.where(big, 0.0, y_hi), jnp.where(big, 0.0, y_lo), shift.astype(jnp.int32)
    )
    # scale is a power of two: the pair stays exact unless it is subnormal.
    return jnp.where(big, 0.0, scale * e_hi), jnp.where(big, 0.0, scale * e_lo)


@jax.custom_jvp
def pow_neg_log(nl_hi: jax.Array, nl_lo: jax.Array, gamma: jax.Array, shift: jax.Array) -> Pair:
    """:math:`2^s u^\\gamma = 2^s e^{-\\gamma \\ell}` from :math:`\\ell = -\\log u \\ge 0`
    given as a pair, for :math:`\\gamma \\ge 0` and an integer :math:`s = ` ``shift``
    in [0, 180] (a scale that keeps a tiny power normal; 0 where :math:`\\gamma = 0`).

    The product :math:`\\gamma\\ell` is kept as a pair and its exponential evaluated as
    in :func:`softplus_neg_abs`, so the result, a pair ``(hi, lo)``, is within about
    :math:`2^{-26}` of :math:`u^\\gamma` for the :math:`u` given, whatever
    :math:`\\gamma\\ell` is (a rounded :math:`\\gamma \\log u` would cost
    :math:`\\gamma|\\log u|` ulps). :math:`2^s` at
    :math:`\\gamma = 0`, also for :math:`u = 0`. Derivative:
    :math:`-2^s u^\\gamma(\\gamma\\,d\\ell + \\ell\\,d\\gamma)`; ``shift`` has none.
    """
    if is_float32(nl_hi):
        hi, lo = _pow_neg_log_f32(nl_hi, nl_lo, gamma, shift)
    else:
        inf = jnp.isinf(nl_hi)
        hi = jnp.where(inf, 0.0, _exp_neg_scaled_f64(gamma * (nl_hi + nl_lo), shift))
        lo = jnp.zeros_like(hi)
    zero_power = gamma == 0
    hi = jnp.where(zero_power, jnp.where(shift > 0, jnp.inf, 1.0), hi)
    return hi, jnp.where(zero_power, 0.0, lo)


@pow_neg_log.defjvp
def _pow_neg_log_jvp(
    primals: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    tangents: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
) -> tuple[Pair, Pair]:
    nl_hi, nl_lo, gamma, shift = primals
    d_hi, d_lo, d_gamma, _ = tangents
    hi, lo = pow_neg_log(nl_hi, nl_lo, gamma, shift)
    out, nl = hi + lo, nl_hi + nl_lo
    # u^gamma * log u is 0 where u^gamma is (gamma > 0, u -> 0).
    d_log = jnp.where(out == 0, 0.0, out * nl)
    d_out = -(out * gamma) * (d_hi + d_lo) - d_log * d_gamma
    return (hi, lo), (d_out, jnp.zeros_like(d_out))


@jax.custom_jvp
def softplus_over_sigmoid(t: jax.Array, softplus: Pair, sigmoid: Pair) -> jax.Array:
    """:math:`f(t) = L(t)/\\sigma(-t) = (1 + e^{-t})\\operatorname{log1p}(e^{-t})/e^{-t}`,
    :math:`t \\ge 0`: between :math:`2\\log 2` and 1, 1 at :math:`t = \\infty`.

    ``softplus`` and ``sigmoid`` are the caller's :math:`L(t)` and :math:`\\sigma(-t)`
    (:func:`softplus_neg_abs`, :func:`sigmoid_neg_abs` of this ``t``), not evaluated twice;
    their tangents are not read, the derivative is taken in ``t``: :math:`f' = \\sigma(t) f
    - 1`, in terms of :math:`f` itself, so that no derivative divides by the underflowing
    :math:`\\sigma(-t)^2`. Above :math:`t = 20`,
    :math:`f - 1 < e^{-t} < 2^{-28}` and :math:`f` rounds to 1 (float32; float64 to within
    :math:`2^{-28}`, for a label derivative only).
    """
    near = t <= 20.0
    s_safe = (jnp.where(near, sigmoid[0], 1.0), jnp.where(near, sigmoid[1], 0.0))
    f = divide(softplus, s_safe)
    return jnp.where(near, f[0] + f[1], 1.0)


@softplus_over_sigmoid.defjvp
def _softplus_over_sigmoid_jvp(
    primals: tuple[jax.Array, Pair, Pair], tangents: tuple[jax.Array, Pair, Pair]
) -> tuple[jax.Array, jax.Array]:
    t, softplus, sigmoid = primals
    dt = tangents[0]
    f = softplus_over_sigmoid(t, softplus, sigmoid)
    big = 1.0 - (sigmoid[0] + sigmoid[1])
    return f, (big * f - 1.0) * dt
