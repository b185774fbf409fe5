"""The sigmoid focal loss' elementwise kernel and its derivatives.

.. math::

    \\ell = \\alpha_t\\, u^\\gamma\\, \\operatorname{BCE}(x, y),\\qquad
    u = 1 - p_t = y\\,\\sigma(-x) + (1 - y)\\,\\sigma(x),\\qquad
    \\alpha_t = \\alpha y + (1 - \\alpha)(1 - y).

Accuracy. Every factor is an unevaluated float32 pair: the cross-entropy and its slope
from the kernel with the exact label weights :math:`(y, 1 - y)`
(:func:`~jaxbce._kernels.logit_value_pair`), :math:`u^\\gamma` from
:func:`~jaxbce._elementary.pow_neg_log` (within about :math:`2^{-27}` of the power of the
computed :math:`u`, itself within :math:`2^{-34}`), :math:`\\alpha_t` to :math:`2^{-44}`,
and the products of pairs keep :math:`2^{-44}`. The loss is their product rounded once,
and the slope :math:`\\alpha_t u^\\gamma\\,[\\partial_x\\operatorname{BCE} +
\\gamma\\,(1 - 2y)\\,(s(1-s)/u)\\operatorname{BCE}]` the same, its two terms added as pairs,
so that the errors are those of the pairs (a fraction of an ulp in all) and one rounding,
whatever :math:`\\gamma` and :math:`\\alpha` are (``python -m jaxbce.check --exhaustive``
measures them).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxbce._arithmetic import (
    Pair,
    divide,
    exact_mul,
    fast_two_sum,
    opaque,
    reciprocal,
    times_pow2,
    two_sum,
)
from jaxbce._coefficients import Coefficient, Overflowing, contract
from jaxbce._elementary import (
    exp_neg,
    neg_log,
    pow_neg_log,
    sigmoid_neg_abs,
    softplus_neg_abs,
    softplus_over_sigmoid,
    tanh_half,
)
from jaxbce._focal_far import far_band, far_slopes, sure_ratio
from jaxbce._focal_huge import HugeParts, beyond_2_to_64, gamma_label_curvature, label_curvature
from jaxbce._focal_near import weighting_on, with_exact_mixed
from jaxbce._kernels import (
    logit_slope_pair,
    logit_value_pair,
    neg_abs,
    safe_mul,
    vanishing_mul,
)
from jaxbce._label_weights import LabelWeights, plus, times, total


def _mul(a: Pair, b: Pair) -> Pair:
    """The product of two normalized pairs as a normalized pair (``lo * lo`` dropped); a
    float times a pair is :func:`~jaxbce._label_weights.times`."""
    hi, lo = exact_mul(a[0], b[0])
    return fast_two_sum(hi, lo + (a[0] * b[1] + a[1] * b[0]))


def _alpha_weight(y: jax.Array, alpha: jax.Array) -> tuple[Pair, jax.Array]:
    """:math:`\\alpha_t = (1 - \\alpha) + (2\\alpha - 1) y` as a pair and its derivative in
    ``y``; ``(1, 0)`` and 0 where ``alpha < 0`` (the weighting off)."""
    on = weighting_on(alpha)
    a = jnp.where(on, alpha, 0.0)
    one = opaque(1.0, y)
    slope = two_sum(2.0 * a, -one)
    at = plus(two_sum(one, -a), times(y, *slope))
    return (jnp.where(on, at[0], 1.0), jnp.where(on, at[1], 0.0)), jnp.where(on, 2.0 * a - 1.0, 0.0)


#: Below this :math:`|x|` the labels' derivatives are taken from exact slopes (see
#: :func:`_with_label_slope`): there the slopes of ``u``, ``D`` and ``v`` in the labels are
#: :math:`O(x)` differences of :math:`O(1)` terms.
_SLOPE_BELOW = 1.0


@jax.custom_jvp
def _with_label_slope(q: jax.Array, slope: jax.Array, lin: jax.Array) -> jax.Array:
    """``q`` itself, whose derivative gains ``slope`` times that of ``lin`` (0 in value).

    Near :math:`x = 0` the label weights reach the kernel through a stop-gradient (their
    derivatives, as :math:`n_s s + n_b (1 - s)` forms them, are differences of
    :math:`O(1)` terms, an :math:`O(x)` slope with an absolute error of an ulp of 1), and
    ``lin`` :math:`= n_b - \\operatorname{stop\\_gradient}(n_b)` brings the label back:
    ``q`` then has the exact ``slope`` in :math:`n_b` (affine in it, so that its own second
    derivative there is 0), and ``lin`` times the slope's derivative is the mixed one. A
    rule rather than ``q + slope * lin`` so that the value, and the first derivatives that
    read it, compute no slope: ``slope`` is read by derivatives of derivatives only.
    """
    del slope, lin
    return q


@_with_label_slope.defjvp
def _with_label_slope_jvp(
    primals: tuple[jax.Array, ...], tangents: tuple[jax.Array, ...]
) -> tuple[jax.Array, jax.Array]:
    (q, slope, lin), (dq, d_slope, d_lin) = primals, tangents
    return _with_label_slope(q, slope, lin), dq + slope * d_lin + lin * d_slope


def _log1p_at_zero(v: jax.Array) -> jax.Array:
    """``log1p(v)`` for a ``v`` whose value is 0 (it carries derivatives only): the cubic
    Taylor polynomial, with log1p's value and first three derivatives there. XLA's
    ``log1p`` is a call in XLA:CPU's loops, which keeps a loop that holds one from being
    vectorized at odd sizes (``benchmarks/vectorized_loops.py``)."""
    return v * (1.0 - v * (0.5 - v / 3.0))


@jax.custom_jvp
def _times_sure_d(
    v: jax.Array,
    k: Any,
    sure: jax.Array,
    n_s: jax.Array,
    n_b: jax.Array,
    t: jax.Array,
    lin: jax.Array,
) -> jax.Array:
    """:math:`v D^k`, :math:`D = n_s + n_b e^t`, where ``sure`` (a right hard label): there
    :math:`D = 1` and this is ``v`` itself; elsewhere ``v``, with the derivatives of ``v``.

    Near :math:`x = 0` (:func:`_with_label_slope`) the labels' weights come without their
    derivatives and ``lin`` (0) carries :math:`n_b`'s: :math:`D` gains
    :math:`\\operatorname{expm1}(t)\\,lin`, its exact slope :math:`dn_s + e^t dn_b =
    (e^t - 1)\\,dn_b`, which the two terms formed as a difference of about 1 and 1 (d2/dy2
    0.2 off at x = 1e-15).

    Its derivative in the labels' weights, :math:`k v D^{k-1} e^t\\,dn_b`, is a product of
    a tiny :math:`v` (about :math:`e^{-t}`, or its power) and the huge :math:`e^t`: formed
    here as :math:`k (v e^t)\\,dn_b`, so that reverse mode, which multiplies the cotangent
    by the other factors first, meets no underflow. Through separate factors (a ``1 / D``
    and a ``D^gamma`` of value 1), reverse-over-reverse mixed derivatives in float64 lost
    terms of :math:`\\gamma/|x|` relative wherever the cotangent times :math:`v` underflowed
    (:math:`|x| > 745 / (\\gamma + 1)`); they are now exact out to :math:`|x| \\approx 580`,
    where the cotangent of ``u^gamma 2^shift``, :math:`2^{-180}` times a cross-entropy
    slope near :math:`e^{-|x|}`, underflows in its turn (``tests/test_curvature.py``).
    """
    del k, sure, n_s, n_b, t, lin
    return v


@_times_sure_d.defjvp
def _times_sure_d_jvp(
    primals: tuple[jax.Array, ...], tangents: tuple[jax.Array, ...]
) -> tuple[jax.Array, jax.Array]:
    (v, k, sure, n_s, n_b, t, lin), (dv, _, _, d_ns, d_nb, dt, d_lin) = primals, tangents
    v, t = jnp.where(sure, v, 0.0), jnp.where(sure, t, 0.0)  # finite where not read
    capped = jnp.minimum(t, np.log(jnp.finfo(t.dtype).max) - 1.0)  # D <= max
    ex, em = jnp.exp(capped), jnp.expm1(capped)
    inv = 1.0 / (n_s + n_b * ex + em * lin)  # lin = 0: the derivative of D in lin
    kv, kv_ex = k * v, k * (v * ex)  # v e^t: about 1 where v is e^-t
    d_d = (kv * d_ns + kv_ex * d_nb + ((n_b + lin) * kv_ex) * dt + (kv * em) * d_lin) * inv
    return _times_sure_d(*primals), dv + jnp.where(sure, d_d, 0.0)


def _m_ratio(
    m: jax.Array, ratio: jax.Array, log_me: jax.Array, t: jax.Array, sure: jax.Array, lin: jax.Array
) -> jax.Array:
    """:math:`m\\,ce/u` (``ratio``), whose derivative near :math:`x = 0` gains at a right
    hard label (``sure``) :math:`m` times the label slope of :math:`ce/u`, which ``ratio``,
    there the :math:`L/s` that stands for it, lacks; ``m`` is :math:`u^\\gamma 2^{shift}`
    and ``log_me`` the log of :math:`m e^t`.

    At a right hard label :math:`ce/u = (L + n_b t)/(s D)`, :math:`D = n_s + n_b e^t = 1`, is
    taken at :math:`n_b = 0` from :math:`t` alone: its label slope, :math:`(t + e^t (t -
    L/s))\\,dn_b - (L/s)\\,dn_s`, comes with d/dy's unscaled (:func:`_sure_label_slopes`)
    but near :math:`x = 0` (:func:`_with_label_slope`), where the weights come without
    derivatives and ``lin`` carries the whole slope, the two coefficients' sum per
    :math:`dn_b` (:math:`dn_s = -dn_b`): :math:`m t (1 + e^t) - (L/s)\\,m
    \\operatorname{expm1}(t)`, where the sum (about :math:`\\mp 2 m \\log 2`) cancelled to
    :math:`O(t)`.
    """
    near = sure & (t < _SLOPE_BELOW)  # finite where read
    t, m_n, los = (jnp.where(near, a, 0.0) for a in (t, m, ratio))
    me = jnp.exp(jnp.where(near, log_me, -jnp.inf))
    c_lin = jnp.where(near, m_n * t + me * t - los * (m_n * jnp.expm1(t)), 0.0)
    return _with_label_slope(m * ratio, lax.stop_gradient(c_lin), lin)


def _sure_label_slopes(d_y: jax.Array, v: _Value, g: Any, parts: Sequence[jax.Array]) -> jax.Array:
    """``d_y`` (d/dy, unscaled), whose label derivative gains at a right hard label the
    terms of :math:`m`'s and of :math:`R = ce/u`'s (``parts``: :math:`x`, :math:`u_y =
    du/dy` and ``stretch``; ``g`` is :math:`\\gamma`).

    There :math:`dm = \\gamma m\\,dD = \\gamma (m\\,dn_s + m e^t dn_b)` and :math:`d(ce/u) =
    (t + e^t(t - R))\\,dn_b - R\\,dn_s` (:func:`_m_ratio`), whose sum through d/dy
    :math:`= \\alpha_t (-x m + \\gamma m R\\,u_y) + \\alpha_t' m\\,ce` is, with :math:`P =
    u^\\gamma e^t = m e^t 2^{-shift}` (about :math:`u^{\\gamma - 1}`),

    .. math::

        \\gamma P\\,[\\alpha_t(-x + u_y(t + (\\gamma - 1) R + e^{-t} t)) + \\alpha_t' ce]\\,dn_b
        + \\gamma P e^{-t}\\,[\\alpha_t(-x + (\\gamma - 1) R u_y) + \\alpha_t' ce]\\,dn_s.

    Taken through the scaled :math:`m` it was lost where :math:`m` underflows
    (:math:`\\gamma |x| \\log_2 e > 1254`), where :math:`e^t` was capped (:math:`|x| >
    708.8`) and where :math:`m e^t` overflows (:math:`\\gamma < 1`, from :math:`|x| \\approx
    1170` at 0.5): half of float64 d2/dy2, or all of it. Here :math:`P` is
    :math:`e^{\\log P}`, within a few ulps, and where it underflows, its product with the
    rest, :math:`O(|x|)`, comes from the sum of their logs. :math:`P` and the coefficients
    are kept finite (where they are capped, the exact second derivative, about
    :math:`2\\gamma P |x|`, overflows too), so that a zero tangent never makes :math:`0 \\cdot
    \\infty`. Near :math:`x = 0` the weights carry no derivative, and :func:`_m_ratio` and
    :func:`_times_sure_d` take the slopes there, in ``lin``.
    """
    x, du_dy, stretch = parts
    t, s, ce, at = v.t, v.sums[0], v.ce, total(v.at)
    read = v.sure & jnp.isfinite(t)  # finite where read
    fi = jnp.finfo(t.dtype)
    ratio = sure_ratio(v.softplus, v.s)  # L/s, from the pairs
    cap = np.log(fi.max) - 1.0
    log_p = jnp.minimum(jnp.where(read, v.log_ue, -jnp.inf), cap)
    p = jnp.exp(log_p)
    e_t = s / v.sums[1]  # e^-|x| = s / (1 - s)
    a_b = at * (-x + du_dy * (t + (g - 1.0) * ratio + e_t * t)) + v.d_at * ce
    a_s = e_t * (at * (-x + (g - 1.0) * ratio * du_dy) + v.d_at * ce)
    log_stretch = jnp.log(stretch)
    for a, n in ((a_b, v.n_b), (a_s, v.n_s)):
        log_pa = log_p + (jnp.log(jnp.abs(a)) + log_stretch)
        from_logs = g * jnp.sign(a) * jnp.exp(jnp.minimum(log_pa, cap))
        c = jnp.where(p < fi.tiny, from_logs, ((g * p) * a) * stretch)
        c = jnp.where(read, jnp.clip(c, -fi.max, fi.max), 0.0)
        d_y = _with_label_slope(d_y, lax.stop_gradient(c), n - lax.stop_gradient(n))
    return d_y


#: Beyond :math:`|x| = 2^{64}` the focal loss is :math:`c(y)\,|x|` to the last bit:
#: :math:`\sigma(-|x|)` and :math:`\operatorname{softplus}(-|x|)` are 0 in float32 and
#: float64 there, so :math:`u = n_b` and :math:`\operatorname{BCE} = n_b |x|`.
_LINEAR_FROM = 2.0**64


def _near(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x', stretch)``: beyond :data:`_LINEAR_FROM`, where the loss is linear in
    :math:`|x|`, :math:`x' = \\pm 2^{64}` and ``stretch`` :math:`= |x|/2^{64}` (exact);
    elsewhere ``x`` and 1."""
    far = (jnp.abs(x) > _LINEAR_FROM) & jnp.isfinite(x)
    near_x = jnp.where(far, jnp.copysign(_LINEAR_FROM, x), x)
    stretch = jnp.where(far, jnp.abs(x) * 2.0**-64, 1.0)  # |x| / 2^64, exact
    return near_x, stretch


def _focal_value(x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array) -> jax.Array:
    """The value alone (:func:`_focal_parts`' first result): what the primal of
    :func:`focal_term` traces, half the operations of the value and its derivatives."""
    near_x, stretch = _near(x)
    return _value_near(near_x, y, gamma, alpha, stretch)[0]


def _focal_parts(
    x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array, exact: bool = True
) -> tuple[jax.Array, jax.Array, Coefficient, jax.Array, jax.Array]:
    """Value and partial derivatives of the focal loss (:func:`_focal_parts_near`) at every
    ``x``: beyond :data:`_LINEAR_FROM`, where the loss is linear in :math:`|x|`, those at
    :math:`\\pm 2^{64}` times :math:`|x|/2^{64}` (:math:`\\partial_x` unchanged), the
    factor applied before the kernel scales its results back (they may be subnormal at
    :math:`2^{64}` and normal at ``x``). The product is one rounding more: the exhaustive
    check's worst focal loss error rises from 0.63 to 1.49 ulps (soft labels, gamma 0) at
    such logits.

    Near ``finfo.max`` the intermediate terms of the kernel overflow while the loss and its
    slope do not (``jacfwd`` and every second derivative were NaN there); :math:`\\partial_y`
    overflows with the exact one, as an :class:`~jaxbce._coefficients.Overflowing` coefficient,
    so that ``jacfwd`` does not multiply it by the zero tangent of ``y``. Infinite ``x`` keeps
    the kernel's own limits. float64 mixed second derivatives at hard labels come from
    :func:`~jaxbce._focal_near.with_exact_mixed` (``exact``), where autodiff's cancel.
    """
    near_x, stretch = _near(x)
    parts = _focal_parts_near(near_x, y, gamma, alpha, stretch)
    if x.dtype == jnp.float32 or not exact:
        return parts
    return with_exact_mixed(partial(_focal_parts, exact=False), parts, x, y, gamma, alpha)


class _Value(NamedTuple):
    """What :func:`_value_near` computed on the way to the value that the derivatives read
    again (see :func:`_focal_parts_near` for the notation)."""

    nonneg: jax.Array
    t: jax.Array
    s: Pair  # sigma(-|x|)
    big: Pair  # 1 - s
    sums: tuple[jax.Array, jax.Array, jax.Array]  # s, big and m = u^gamma 2^shift, rounded
    m_y: jax.Array  # m, without its label slope at a right hard label but near x = 0
    log_ue: jax.Array  # log(u^gamma e^|x|) at a right hard label
    lw: LabelWeights  # (y, 1 - y)
    n_s: jax.Array
    n_b: jax.Array
    lin: jax.Array  # 0, with the derivative of n_b near x = 0 (_with_label_slope)
    sure: jax.Array  # a right hard label
    softplus: Pair  # L(|x|)
    u: Pair  # u, its correction 0 where sure
    nl: Pair  # -log u
    shift: jax.Array
    at: Pair  # alpha_t
    d_at: jax.Array
    scale: Pair  # alpha_t u^gamma 2^shift
    ce: jax.Array
    ce_fin: Pair  # the cross-entropy, 0 where infinite
    inf_ce: jax.Array
    scaled: jax.Array  # the value times 2^shift


def _value_near(
    x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array, stretch: jax.Array
) -> tuple[jax.Array, _Value]:
    """:func:`_focal_parts_near`'s value and the intermediates its derivatives read."""
    nonneg = x >= 0
    t = -neg_abs(x)
    s_hi, s_lo = sigmoid_neg_abs(t)
    b_hi, b_err = fast_two_sum(opaque(1.0, x), -s_hi)  # 1 - s as a pair
    b_lo = b_err - s_lo
    s, big = s_hi + s_lo, b_hi + b_lo
    qc, qc_lo = fast_two_sum(opaque(1.0, y), -y)  # 1 - y exactly
    zero = jnp.zeros_like(y)
    lw = LabelWeights(y, qc, jnp.ones_like(y), (zero, qc_lo, zero))
    ce_pair = logit_value_pair(x, lw, band64=False)
    ce = total(ce_pair)
    n_s = jnp.where(nonneg, y, qc)
    n_b = jnp.where(nonneg, qc, y)
    # Near x = 0 the label slopes of u, D and v below are O(x) differences of O(1) terms,
    # each an ulp of 1 off: there the weights lose their derivatives, and lin (0) carries
    # n_b's to exact slopes (_with_label_slope). The cross-entropy keeps its own: a t + L,
    # slope t exactly.
    near = t < _SLOPE_BELOW
    lin = jnp.where(near, n_b - lax.stop_gradient(n_b), 0.0)
    n_s, n_b = (jnp.where(near, lax.stop_gradient(n), n) for n in (n_s, n_b))
    # -log u as a pair.
    sure = n_b == 0
    l_hi, l_lo = softplus_neg_abs(t)
    tail_hi, tail_err = two_sum(t, l_hi)  # softplus(|x|) = -log s
    # u = n_s s + n_b big to about 2^-34: 1 - y's rounding error added back, the leading
    # products exact (12-bit halves), so that u^gamma does not multiply roundings by gamma.
    ns_l, nb_l = jnp.where(nonneg, 0.0, qc_lo), jnp.where(nonneg, qc_lo, 0.0)
    # qc_lo's derivative is 0, but in reverse mode as cotangents of y and 1 - y that cancel.
    ns_l, nb_l = (jnp.where(near, lax.stop_gradient(n), n) for n in (ns_l, nb_l))
    p_hi, p_lo = exact_mul(n_s, s_hi)
    q_hi, q_lo = exact_mul(n_b, b_hi)
    u_hi, u_err = two_sum(p_hi, q_hi)
    u_err = u_err + ((p_lo + q_lo) + (n_s * s_lo + n_b * b_lo) + (ns_l * s + nb_l * big))
    u_hi, u_err = fast_two_sum(u_hi, u_err)
    # du = s dn_s + (1 - s) dn_b = tanh(|x|/2) dn_b.
    u_hi = _with_label_slope(u_hi, jnp.where(near, tanh_half(t), 0.0), lin)
    u_safe = jnp.where(sure, 1.0, u_hi)
    nlu_hi, nlu_lo = neg_log(u_safe)
    # For a right hard label, u = s D and -log u = softplus(|x|) - log D, D = n_s + n_b e^|x|:
    # D is 1 there, but it carries the label derivatives of u (log D: D - 1, of derivative
    # dD / D there).
    log_d = _times_sure_d(jnp.ones_like(t), 1.0, sure, n_s, n_b, t, lin) - 1.0
    tail_base = jnp.where(jnp.isinf(t), 0.0, tail_err + l_lo)
    # For a wrong hard label (n_s = 0, u = 1 - s near 1), -log u = L(|x|) exactly: the pair
    # from u was good to 2^-34 absolute only, which d/dgamma = -value log u read relatively
    # (2e-4 off at x = 17, y = 0 in float32). Its label derivative rides on -log1p(v),
    # v = n_s e^-|x| + n_b - 1 (u = (1 - s)(1 + v)), 0 there.
    wrong = (n_s == 0) & ~sure
    t_w = jnp.where(wrong, t, 0.0)
    v_w = jnp.where(wrong, n_s * exp_neg(t_w) + (n_b - 1.0), 0.0)
    # dv = e^-|x| dn_s + dn_b = -expm1(-|x|) dn_b.
    v_w = _with_label_slope(v_w, jnp.where(wrong & near, -jnp.expm1(-t_w), 0.0), lin)
    wrong_lo = jnp.where(jnp.isinf(t), 0.0, l_lo) - _log1p_at_zero(v_w)
    nl_hi = jnp.where(sure, tail_hi, jnp.where(wrong, l_hi, nlu_hi))
    inv_u = reciprocal(u_safe)  # to 2^-17, for corrections
    nl_rest = jnp.where(wrong, wrong_lo, nlu_lo - u_err * inv_u)
    nl_lo = jnp.where(sure, tail_base - log_d, nl_rest)
    # u^gamma below 2^-64 is computed times 2^shift, near 2^-64 (and the products scaled
    # back), so that u^gamma * ce stays exact where u^gamma alone would underflow.
    log2_m = lax.stop_gradient(gamma * nl_hi * np.log2(np.e))  # -log2(u^gamma), about
    shift = jnp.clip(jnp.floor(jnp.where(jnp.isfinite(log2_m), log2_m, 0.0)) - 64.0, 0.0, 180.0)
    m_hi, m_lo = pow_neg_log(nl_hi, nl_lo, gamma, shift)
    # d/dy reads m_y, m without its label derivative at a right hard label (gamma m dD / D,
    # through -log u) but near x = 0 (in lin): elsewhere d/dy's label derivative comes
    # unscaled, from logs (_sure_label_slopes), as the scaled gamma m e^|x| underflows with
    # m, meets a capped e^|x| or overflows (gamma < 1).
    m_y_hi = pow_neg_log(
        nl_hi, jnp.where(sure, tail_base - lax.stop_gradient(log_d), nl_rest), gamma, shift
    )[0]
    if x.dtype != jnp.float32:
        # XLA's float64 power is correctly rounded where exp(gamma * log u) is not.
        u_val = jnp.where(sure, s, u_safe)
        # Also where u^gamma alone underflows (its scaled pair below does not): d2/dy2 at
        # x = 160, gamma = 5 lost half its value to a power flushed to 0.
        small = (u_val < jnp.finfo(x.dtype).tiny) | (log2_m > 1000.0)
        power = jnp.power(jnp.where(small, 1.0, u_val), gamma)  # no 0^(gamma - 1) behind
        power = power * jnp.where(sure, 1.0, 1.0 + gamma * u_err * inv_u)
        m_y_hi = jnp.where(small, m_y_hi, times_pow2(power, shift))
        # s^gamma D^gamma for a right hard label (D^gamma: :func:`_times_sure_d`), but where
        # the power is not read (small): its stand-in 1 times e^|x| made the second
        # derivatives of reverse mode NaN.
        power = _times_sure_d(power, gamma, sure & ~small, n_s, n_b, t, lin)
        m_hi = jnp.where(small, m_hi, times_pow2(power, shift))
        m_lo = jnp.where(small, m_lo, 0.0)
    no_n = (lax.stop_gradient(n_s), lax.stop_gradient(n_b))
    m_y_hi = _times_sure_d(m_y_hi, gamma, sure, *no_n, t, lin)  # D's slope in lin alone
    # log(u^gamma e^|x|) at a right hard label, -log u = nl = |x| + L(|x|): with nl's low
    # part, and |x| (1 - gamma) exact for gamma = 0.5, 2, 5 (nl_hi - |x| is), its
    # exponential is within a few ulps (_sure_label_slopes).
    log_ue = (1.0 - gamma) * t - gamma * ((nl_hi - t) + nl_lo)
    m = m_hi + m_lo
    at, d_at = _alpha_weight(y, alpha)
    scale = _mul(at, (m_hi, m_lo))  # alpha_t u^gamma 2^shift
    # The value: inf for a wrong answer at x = +-inf (where ce is), 0 * inf = 0 for u = 0.
    inf_ce = jnp.isinf(ce_pair[0])
    ce_fin = (jnp.where(inf_ce, 0.0, ce_pair[0]), jnp.where(inf_ce, 0.0, ce_pair[1]))
    scaled = jnp.where(inf_ce, safe_mul(total(scale), ce), total(_mul(scale, ce_fin)) * stretch)
    value = times_pow2(scaled, -shift)
    u_pair = (u_safe, jnp.where(sure, 0.0, u_err))
    parts = _Value(
        nonneg=nonneg,
        t=t,
        s=(s_hi, s_lo),
        big=(b_hi, b_lo),
        sums=(s, big, m),
        m_y=m_y_hi + m_lo,
        log_ue=log_ue,
        lw=lw,
        n_s=n_s,
        n_b=n_b,
        lin=lin,
        sure=sure,
        softplus=(l_hi, l_lo),
        u=u_pair,
        nl=(nl_hi, nl_lo),
        shift=shift,
        at=at,
        d_at=d_at,
        scale=scale,
        ce=ce,
        ce_fin=ce_fin,
        inf_ce=inf_ce,
        scaled=scaled,
    )
    return value, parts


def _label_slope(
    x: jax.Array, gamma: jax.Array, v: _Value
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(d_y, ce/u, du/dy)``: d/dy times 2^shift, for :math:`|x| \\le 2^{64}`, and two of
    its factors; see :func:`_focal_parts_near`."""
    t, sure, ce = v.t, v.sure, v.ce
    # d/dy = alpha_t m (d ce/dy + gamma (ce / u) du/dy) + (2 alpha - 1) m ce, d ce/dy =
    # A - B = -x, du/dy = sigma(-x) - sigma(x); ce / u = L(|x|) / s for a right hard label.
    ce_over_u = jnp.where(
        sure,
        softplus_over_sigmoid(t, v.softplus, v.s),
        jnp.where(v.inf_ce, ce, total(divide(v.ce_fin, v.u))),
    )
    # sigma(-x) - sigma(x) = -tanh(x/2): as s - (1 - s) it cancelled near x = 0 (d/dy
    # 26 % off at |x| < 1e-8 in float32, where it is O(x) like its other term).
    half_tanh = tanh_half(t)
    du_dy = jnp.where(v.nonneg, -half_tanh, half_tanh)
    # d/dy reads m_y, without m's label slope at a right hard label (_sure_label_slopes).
    m_y = v.m_y
    log_me = (t - gamma * v.nl[0] + v.shift * np.log(2.0)).astype(t.dtype)  # log(m e^t), sure
    m_ratio = _m_ratio(m_y, ce_over_u, log_me, t, sure, v.lin)
    d_y = total(v.at) * (safe_mul(m_y, -x) + gamma * m_ratio * du_dy) + v.d_at * safe_mul(m_y, ce)
    return d_y, ce_over_u, du_dy


def _kernel_label_slope(
    x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array, stretch: jax.Array
) -> jax.Array:
    """:func:`_label_slope`'s ``d_y`` from the inputs, for :math:`|x| \\le 2^{64}` (before
    ``stretch``)."""
    del stretch
    return _label_slope(x, gamma, _value_near(x, y, gamma, alpha, jnp.ones_like(x))[1])[0]


def _gamma_slope(v: _Value) -> jax.Array:
    # From the value times 2^shift: where the value itself underflows, value * d(-log u)/dy
    # is still normal, and d/dy of d/dgamma lost it (1e-3 off at x = 30, y = 1, gamma 2).
    return times_pow2(-vanishing_mul(v.scaled, v.nl[0] + v.nl[1]), -v.shift)


def _kernel_gamma_slope(*args: jax.Array) -> jax.Array:
    """d/dgamma from ``(x, y, gamma, alpha, stretch)``, for :math:`|x| \\le 2^{64}`."""
    return _gamma_slope(_value_near(*args)[1])


def _focal_parts_near(
    x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array, stretch: jax.Array
) -> tuple[jax.Array, jax.Array, Coefficient, jax.Array, jax.Array]:
    """Value and partial derivatives of :math:`\\alpha_t u^\\gamma\\operatorname{BCE}(x, y)`
    for :math:`|x| \\le 2^{64}` (or infinite).

    :math:`u = 1 - p_t = y\\sigma(-x) + (1-y)\\sigma(x) = n_s s + n_b (1 - s)` with
    :math:`s = \\sigma(-|x|)` and :math:`(n_s, n_b)` the label weights of the small and
    the big sigmoid. The cross-entropy and its slope are the kernel's own, as pairs.
    :math:`-\\log u` is kept as a pair, :math:`|x| + L(|x|)` exactly when :math:`n_b = 0`
    (a right hard label, where :math:`u = s` may underflow), and :math:`u^\\gamma` comes
    from :func:`~jaxbce._elementary.pow_neg_log`, so that neither is rounded before the
    power.

    The derivative of :math:`\\log u` is :math:`(\\bar y - y)\\,s(1-s)/u =
    (\\bar y - y)(1-s)/(n_s + n_b e^{|x|})`, written without dividing by :math:`u` where it
    may underflow: every derivative of it stays finite.

    ``stretch`` (1 but beyond :data:`_LINEAR_FROM`) multiplies the value and every
    derivative but :math:`\\partial_x`.

    Returns:
      ``(value, d/dx, d/dy, d/dgamma, d/dalpha)``.
    """
    # Far out in float64 the logit derivatives of the coefficients are closed forms
    # (_focal_far): the kernel runs on x with its derivative stopped there.
    band, x_in = far_band(x, stretch), x
    if band is not None:
        x = jnp.where(band, lax.stop_gradient(x), x)
    value, v = _value_near(x, y, gamma, alpha, stretch)
    t, sure, n_s, n_b, shift, ce = v.t, v.sure, v.n_s, v.n_b, v.shift, v.ce
    b_hi, b_lo = v.big
    m = v.sums[2]
    d_ce = logit_slope_pair(x, v.lw, band64=False)
    # d log u / dx = (1 - 2y) ratio: big / n_s for a right hard label, where the capped
    # e^|x| only carries the derivative in the labels; s big / u elsewhere (u >= n_b / 2).
    # At x = +-inf the factor's own slope is 0 (ce_fin = 0 there).
    ratio = divide(_mul(v.s, v.big), v.u)
    ratio = (jnp.where(sure, b_hi, ratio[0]), jnp.where(sure, b_lo, ratio[1]))
    d_log_u = _mul(two_sum(opaque(1.0, y), -2.0 * y), ratio)
    # For a right hard label, ratio is big / D (D = 1): the 1 / D, which carries the label
    # derivative, goes with the cross-entropy (:func:`_times_sure_d`).
    ce_d = (
        _times_sure_d(v.ce_fin[0], -1.0, sure, n_s, n_b, t, v.lin),
        _times_sure_d(v.ce_fin[1], -1.0, sure, n_s, n_b, t, v.lin),
    )
    modulation = times(jnp.broadcast_to(gamma, x.shape), *_mul(d_log_u, ce_d))
    core = plus(d_ce, modulation)
    weighted = total(_mul(v.scale, core))
    d_x = times_pow2(weighted, -shift)
    d_y, ce_over_u, du_dy = _label_slope(x, gamma, v)
    # Beyond 2^64 the label slope of d_y in closed form (_focal_huge): a cotangent times
    # stretch overflowed in the kernel, and float32 kept an ulp of cancelling terms.
    huge = HugeParts(sure, m, v.m_y, ce_over_u, du_dy, v.d_at)
    args = (huge, x, y, gamma, alpha)
    d_y = beyond_2_to_64(
        _kernel_label_slope, label_curvature, d_y, stretch > 1.0, *args, jnp.ones_like(x)
    )
    m_ce = safe_mul(m, ce)  # times 2^shift, as m
    # Times stretch, d/dy may overflow (with the exact one) where jacfwd gives it a zero tangent.
    d_y_back = times_pow2(d_y * stretch, -shift)
    d_y_back = _sure_label_slopes(d_y_back, v, gamma, (x, du_dy, stretch))
    # Beyond 2^64 (but at a right hard label, n = 0) its label slope in closed form too.
    far_soft = (stretch > 1.0) & ~sure
    d_gamma = _gamma_slope(v)
    d_gamma = beyond_2_to_64(
        _kernel_gamma_slope, gamma_label_curvature, d_gamma, far_soft, *args, stretch
    )
    d_alpha = jnp.where(
        weighting_on(alpha), (2.0 * y - 1.0) * times_pow2(m_ce * stretch, -shift), 0.0
    )
    if band is not None:
        ratios = (ce_over_u, m * total(core), weighted)  # ce/u, 2^shift (F_x/alpha_t, F_x)
        coefficients = (value, d_x, d_y_back, d_gamma, d_alpha)
        back = partial(times_pow2, n=-shift)
        value, d_x, d_y_back, d_gamma, d_alpha = far_slopes(
            band, (x_in, y, gamma, alpha), v, ratios, back, coefficients
        )
    d_y_far = Overflowing(d_y_back, lambda t: times_pow2((d_y * t) * stretch, -shift))
    return value, d_x, d_y_far, d_gamma, d_alpha


@jax.custom_jvp
def focal_term(x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array) -> jax.Array:
    """Elementwise :math:`\\alpha_t (1 - p_t)^\\gamma\\,\\operatorname{BCE}(x, y)`, every mode.

    Args:
      x: logits in the compute dtype.
      y: labels in [0, 1], same shape and dtype.
      gamma: scalar focusing exponent, ``gamma >= 0`` (may be traced).
      alpha: scalar weight of the positive class in [0, 1], or negative for no weighting
        (may be traced).

    Returns:
      The elementwise alpha-weighted, modulated cross-entropy (no element weights).
    """
    return _focal_value(x, y, gamma, alpha)


@partial(focal_term.defjvp, symbolic_zeros=True)
def _focal_term_jvp(
    primals: tuple[jax.Array, jax.Array, jax.Array, jax.Array], tangents: Sequence[Any]
) -> tuple[jax.Array, jax.Array]:
    value, *coefficients = _focal_parts(*primals)
    return value, contract(value, coefficients, tangents)
