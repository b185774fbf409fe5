"""The focal loss' float64 mixed second derivative at hard labels, where it is a
cancellation of :math:`O(1)` terms, from a closed form that does the cancellation exactly.

At a hard label, in the frame of :math:`y = 1` (:math:`x' = x`; at :math:`y = 0`,
:math:`x' = -x`, as :math:`\\ell(x, y; \\alpha) = \\ell(-x, 1 - y; 1 - \\alpha)`), with
:math:`s_\\mp = \\sigma(\\mp x')`, :math:`d = s_- - s_+ = -\\tanh(x'/2)`,
:math:`L = \\operatorname{softplus}(-x')` and the label weight :math:`A = \\alpha_t` and its
slope :math:`B = \\pm\\alpha_t'` (1 and 0 without weighting), the product rule gives

.. math::

    \\partial_x\\partial_y\\ell = -s_-^\\gamma\\,(B P_1 + A P_2),\\qquad
    P_1 = \\gamma s_+ L + s_-,\\qquad
    P_2 = \\gamma e^{x'}((\\gamma - 1) d + 2 s_-) L + \\gamma d - \\gamma s_+ x' + 1.

Both terms are :math:`O(1)`, and their sum is not: at :math:`x' = 0` it is
:math:`(B/2 + A)(\\gamma\\log 2 + 1)`, 0 for :math:`\\alpha = 1/4` at :math:`y = 1` (and
:math:`3/4` at :math:`y = 0`) whatever :math:`\\gamma`, and as :math:`x' \\to -\\infty` (a wrong
label) it tends to :math:`B + A(\\gamma + 1)`, 0 for :math:`\\alpha = 1/4` and
:math:`\\gamma = 1`. There the derivative is :math:`O(x)`, or :math:`|x| e^{-|x|}`, and
autodiff, which forms the two terms separately (the first from :math:`\\alpha_t'`, the
second through the label weights of :math:`u`, the cross-entropy and its slope), left an
ulp of 1: 1e-17 for a value of 1e-29 at :math:`x = 7\\cdot 10^{-28}`, 8e-10 relative at
:math:`x = -17`, and values of the wrong sign from :math:`x = -28`, different in every mode.

:func:`hard_label_dxy` rewrites the sum so that what cancels is a constant, computed from
the inputs without rounding: below :math:`|x| = 1`,

.. math::

    B P_1 + A P_2 = (B/2 + A)\\,P_2 + \\tfrac{B}{2}\\,[(1 - \\gamma)\\,d\\,(1 + \\gamma e^{x'} L)
    + \\gamma s_+ x'],

(:math:`P_1 - P_2/2`, in which :math:`\\gamma s_+ L = \\gamma e^{x'} s_- L` cancels
exactly: the bracket is :math:`O(x)` and formed from :math:`O(x)` factors); for a wrong
label (:math:`x' < 0`) beyond,

.. math::

    B P_1 + A P_2 = (B + A(\\gamma + 1)) + B s_+ (\\gamma L - 1)
    + A\\gamma s_+\\,(((\\gamma - 1) d / s_- + 2) L - 2 - x'),

(:math:`P_1 - 1 = s_+(\\gamma L - 1)` and :math:`P_2 - \\gamma - 1`, with :math:`d - 1 =
-2 s_+`), in which the correction is :math:`s_+` times terms of one size. The constants
:math:`B/2 + A` and :math:`B + A + A\\gamma` are compensated sums of the exact pairs of
:math:`A` and :math:`B` and of :math:`A\\gamma`, so that they are 0 exactly where the exact
ones are. Right labels beyond :math:`|x| = 1`, where the factor :math:`s_-^\\gamma`
underflows long before the terms cancel, keep autodiff's. Soft labels below
:math:`|x| = 1` have a closed form of their own, :func:`soft_label_dxy` (the same
cancellation at :math:`x = 0`, on a line of :math:`(\\alpha, y)` through :math:`(1/4, 1)`);
beyond, autodiff's.

:func:`exact_mixed` (through :func:`with_exact_mixed`) puts the result where every mode
reads it: it returns the first derivatives ``d_x`` and ``d_y`` unchanged, and its JVP takes
their tangents from the kernel's, with the tangent of ``y`` into ``d_x`` and of ``x`` into
``d_y`` replaced by this slope at these points. Values and first derivatives are not
changed; float64 only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from jaxbce._arithmetic import compensated_sum, exact_product, product_terms, two_sum
from jaxbce._coefficients import Coefficient, Overflowing

#: The focal kernel's value and partial derivatives (``jaxbce._focal._focal_parts``).
Parts = tuple[jax.Array, jax.Array, Coefficient, jax.Array, jax.Array]

#: Below this :math:`|x|` the near-zero form of :func:`hard_label_dxy`; beyond it, at
#: wrong hard labels, the far form.
_NEAR_BELOW = 1.0


def mixed_region(x: jax.Array, y: jax.Array) -> jax.Array:
    """Where a closed form stands for autodiff's mixed derivative: every label in [0, 1] at
    finite :math:`|x| < 1` (:func:`hard_label_dxy` for hard labels, :func:`soft_label_dxy`
    for soft ones), and wrong hard labels (:math:`y = 1` at :math:`x < 0`, :math:`y = 0` at
    :math:`x > 0`) beyond."""
    hard = (y == 0.0) | (y == 1.0)
    wrong = jnp.where(y == 1.0, x < 0.0, x > 0.0)
    near = jnp.isfinite(x) & (jnp.abs(x) < _NEAR_BELOW) & (y >= 0.0) & (y <= 1.0)
    return near | (hard & jnp.isfinite(x) & wrong)


def weighting_on(alpha: jax.Array) -> jax.Array:
    """Where the alpha weighting is on: every ``alpha`` but a negative one (the kernel's
    stand-in for ``None``). A NaN ``alpha`` is on, so that it propagates: read as
    ``alpha >= 0`` it turned the weighting off, and a traced NaN gave the unweighted loss."""
    return ~(alpha < 0)


def hard_label_dxy(x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array) -> jax.Array:
    """:math:`\\partial_x\\partial_y` of the focal loss at a hard label ``y`` (0 or 1) where
    :func:`mixed_region` holds (elsewhere finite and not read), float64: see the module
    docstring for the two forms. ``alpha < 0`` is no weighting."""
    on = weighting_on(alpha)
    a = jnp.where(on, alpha, 0.0)
    one = y == 1.0
    xp = jnp.where(one, x, -x)
    # A = alpha_t (a at y = 1, 1 - a at y = 0) and B = +-(2a - 1), as exact pairs.
    at0 = two_sum(jnp.ones_like(a), -a)
    a_hi = jnp.where(on, jnp.where(one, a, at0[0]), 1.0)
    a_lo = jnp.where(on & ~one, at0[1], 0.0)
    slope = two_sum(2.0 * a, -jnp.ones_like(a))
    sign = jnp.where(on, jnp.where(one, 1.0, -1.0), 0.0)
    b_hi, b_lo = sign * slope[0], sign * slope[1]
    big_a, big_b = a_hi + a_lo, b_hi + b_lo
    g = jnp.broadcast_to(gamma, x.shape)
    # The logistic factors at x' (finite x; x' < 0 beyond |x| = 1).
    xr = jnp.where(jnp.isfinite(x), xp, 0.0)
    s_m, s_p = jax.nn.sigmoid(-xr), jax.nn.sigmoid(xr)
    d = -jnp.tanh(0.5 * xr)
    soft = jax.nn.softplus(-xr)
    near = jnp.abs(xr) < _NEAR_BELOW
    # Near x = 0: (B/2 + A) P2 + (B/2) [(1 - g) d (1 + g e^x' L) + g s+ x'].
    xn = jnp.where(near, xr, 0.0)
    e_l = jnp.exp(xn) * soft
    p2 = g * e_l * ((g - 1.0) * d + 2.0 * s_m) + g * d - g * s_p * xn + 1.0
    c_near = compensated_sum(0.5 * b_hi, 0.5 * b_lo, a_hi, a_lo)
    q_near = c_near * p2 + (0.5 * big_b) * ((1.0 - g) * d * (1.0 + g * e_l) + g * s_p * xn)
    # A wrong label beyond: (B + A (g + 1)) + s+ K, K = B (g L - 1) + A g (((g - 1) d / s-
    # + 2) L - 2 - x'). s+ K as e^(x' + log|K|) / (1 + e^x'): where c = 0 it is the value,
    # normal down to x' = -709 (|x| e^-|x| / 4 at gamma 1), while s+ itself is flushed to 0
    # from -708.4 (XLA's logistic) and subnormal from -708.4 on; 0 beyond x' = -1000.
    ag = exact_product(a_hi, g)
    c_far = compensated_sum(b_hi, b_lo, a_hi, a_lo, ag[0], ag[1] + a_lo * g)
    in_range = xr > -1000.0
    xf, lf = jnp.where(in_range, xr, 0.0), jnp.where(in_range, soft, 0.0)
    k = big_b * (g * lf - 1.0) + (big_a * g) * (((g - 1.0) * d / s_m + 2.0) * lf - 2.0 - xf)
    log_k = jnp.where(in_range & (k != 0.0), xf + jnp.log(jnp.abs(k)), -jnp.inf)
    sp_k = jnp.sign(k) * jnp.exp(log_k) / (1.0 + jnp.exp(jnp.minimum(xf, 0.0)))
    q_far = c_far + sp_k
    q = jnp.where(near, q_near, q_far)
    return -jnp.power(s_m, g) * q


def soft_label_dxy(x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array) -> jax.Array:
    """:math:`\\partial_x\\partial_y` of the focal loss at a label :math:`y \\in [0, 1]` and
    :math:`|x| < 1` (elsewhere finite and not read), float64. ``alpha < 0`` is no
    weighting.

    With :math:`u = 1 - 2y`, :math:`D = -\\tanh(x/2)`, :math:`m = 1 - p_t = (1 - uD)/2`,
    the cross-entropy :math:`c = \\operatorname{softplus}(x) - xy`, :math:`\\alpha_t =
    (1 - \\alpha) + (2\\alpha - 1) y` and its slope :math:`a' = 2\\alpha - 1` (1 and 0
    without weighting), the product rule's seven terms, grouped in pairs that cancel
    exactly, give

    .. math::

        \\partial_x\\partial_y\\ell = \\tfrac{m^{\\gamma - 2}}{8}\\bigl(C\\,(\\gamma (1 - uD)
        (1 - D^2)\\,c + (1 - uD)^2) + R\\bigr),\\qquad C = a' u - 2\\alpha_t
        = (4\\alpha - 3) - 4y(2\\alpha - 1),

    .. math::

        R = -a' D (1 - uD)^2 + 2\\alpha_t\\gamma D\\,((\\gamma - 1)(1 - D^2)\\,u\\,c
        + (1 - uD)(u - D)) - \\alpha_t\\gamma (1 - uD)(1 - D^2)\\,u\\,x,

    where :math:`R` is :math:`O(x)` and formed from :math:`O(x)` factors. At :math:`x = 0`
    the derivative is :math:`2^{2 - \\gamma}(\\gamma\\log 2 + 1)\\,C/8`, and
    :math:`C` vanishes on a line of :math:`(\\alpha, y)`: at :math:`y = 1` for
    :math:`\\alpha = 1/4` (the default), at :math:`y = 11/12` for :math:`\\alpha = 1/5`.
    Near it the derivative is ill-conditioned in :math:`y` (an ulp of :math:`y = 1 -
    10^{-6}` moves it by :math:`10^{-8}` relative at :math:`x = 1.3\\cdot 10^{-5}`), and
    autodiff, which adds the terms, was :math:`3\\cdot 10^{-9}` off there, a different
    number in every mode. Here :math:`C` is a compensated sum of exact products of the
    inputs, exact where the inputs are; the rest is well conditioned
    (``tests/test_curvature.py``: within :math:`10^{-10}` of mpmath).
    """
    on = weighting_on(alpha)
    a = jnp.where(on, alpha, 0.0)
    ones = jnp.ones_like(a)
    y = jnp.where((y >= 0.0) & (y <= 1.0), y, 0.0)
    x = jnp.where(jnp.abs(x) < _NEAR_BELOW, x, 0.0)
    four_a = two_sum(4.0 * a, -3.0 * ones)  # 4a - 3
    slope = two_sum(2.0 * a, -ones)  # a' = 2a - 1
    y4 = 4.0 * y
    # The product's four partial products as terms: their sum rounded (exact_product) left
    # 2^-77 of it, 1e-8 relative of C at x = 0 on the line (alpha 1/5, y = 11/12). They can
    # cancel with 4a - 3 (a multiple of 2^-51, or 0) only where the product is above 2^-60;
    # below 2^-100, where tiny factors' partial products might flush, it is rounded once.
    terms = [-p for p in product_terms(slope[0], y4)]
    exact = compensated_sum(four_a[0], four_a[1], *terms, -slope[1] * y4)
    rounded = (four_a[0] + four_a[1]) - y4 * (slope[0] + slope[1])
    c = jnp.where(jnp.abs(y4 * slope[0]) < 2.0**-100, rounded, exact)
    c = jnp.where(on, c, -2.0)
    a_slope = jnp.where(on, slope[0] + slope[1], 0.0)
    a_t = jnp.where(on, (1.0 - a) + y * (2.0 * a - 1.0), 1.0)
    g = jnp.broadcast_to(gamma, x.shape)
    u = 1.0 - 2.0 * y
    d = -jnp.tanh(0.5 * x)
    one_ud, one_dd = 1.0 - u * d, 1.0 - d * d
    ce = jax.nn.softplus(x) - x * y
    rest = (
        -a_slope * d * one_ud * one_ud
        + 2.0 * a_t * g * d * ((g - 1.0) * one_dd * u * ce + one_ud * (u - d))
        - a_t * g * one_ud * one_dd * u * x
    )
    q = c * (g * one_ud * one_dd * ce + one_ud * one_ud) + rest
    return jnp.power(0.5 * one_ud, g - 2.0) * q / 8.0


def with_exact_mixed(parts_fn: Callable[..., Parts], parts: Parts, *args: jax.Array) -> Parts:
    """``parts``, the focal kernel's ``(value, d/dx, d/dy, d/dgamma, d/dalpha)`` that
    ``parts_fn(*args)`` computes (``args``: ``x, y, gamma, alpha``), with ``d/dx`` and
    ``d/dy`` through :func:`exact_mixed`."""
    value, d_x, d_y, d_gamma, d_alpha = parts
    assert isinstance(d_y, Overflowing)

    def slopes(*a: jax.Array) -> tuple[jax.Array, jax.Array]:
        _, d_x, d_y, _, _ = parts_fn(*a)
        assert isinstance(d_y, Overflowing)
        return d_x, d_y.value

    d_x, d_y_value = exact_mixed(slopes, d_x, d_y.value, *args)
    return value, d_x, Overflowing(d_y_value, d_y.times), d_gamma, d_alpha


def soft_region(x: jax.Array, y: jax.Array) -> jax.Array:
    """Where :func:`soft_label_dyy` stands for autodiff's d2/dy2: soft labels at finite
    :math:`|x| \\ge 1`."""
    return (y > 0.0) & (y < 1.0) & jnp.isfinite(x) & (jnp.abs(x) >= _NEAR_BELOW)


def cancelling_b(
    neg: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(B, n, alpha_t, a')``: :math:`B = 2 a' n + \\gamma\\alpha_t` (see
    :func:`soft_label_dyy`), :math:`n` the weight of the big logistic (``y`` where ``neg``,
    :math:`x < 0`; :math:`1 - y` elsewhere), :math:`\\alpha_t` and :math:`a' =
    d\\alpha_t/dn`, float32 or float64.

    :math:`B` vanishes where :math:`\\gamma\\alpha_t = -2 a' n` (:math:`\\alpha = 1/4`,
    :math:`\\gamma = 1/2` at :math:`y = 3/10`): it is a compensated sum of exact products
    of the inputs (:math:`n`, :math:`\\alpha_t` and :math:`a'` as exact pairs), 0 only
    where the exact one is, and within a few ulps of it relatively elsewhere.
    """
    on = weighting_on(alpha)
    a = jnp.where(on, alpha, 0.0)
    qc = two_sum(jnp.ones_like(y), -y)  # 1 - y exactly
    n_hi, n_lo = jnp.where(neg, y, qc[0]), jnp.where(neg, 0.0, qc[1])
    # alpha_t = (1 - a) + (2a - 1) y as exact terms, and a' = +-(2a - 1) as a pair.
    c = two_sum(2.0 * a, -jnp.ones_like(a))
    one_a = two_sum(jnp.ones_like(a), -a)
    cy = exact_product(c[0], y)
    at_terms = [
        jnp.where(on, v, off)
        for v, off in zip(
            (one_a[0], one_a[1], cy[0], cy[1] + c[1] * y), (1.0, 0.0, 0.0, 0.0), strict=True
        )
    ]
    at = at_terms[0] + at_terms[1] + at_terms[2] + at_terms[3]
    sign = jnp.where(neg, 1.0, -1.0)  # dn/dy
    ay_hi, ay_lo = jnp.where(on, sign * c[0], 0.0), jnp.where(on, sign * c[1], 0.0)
    g = jnp.broadcast_to(gamma, y.shape)
    lead = exact_product(2.0 * ay_hi, n_hi)
    terms = [lead[0], lead[1] + 2.0 * (ay_hi * n_lo + ay_lo * n_hi)]
    for v in at_terms:
        terms += list(exact_product(g, v))
    b = compensated_sum(*terms)
    return b, n_hi + n_lo, at, ay_hi + ay_lo


def soft_label_dyy(x: jax.Array, y: jax.Array, gamma: jax.Array, alpha: jax.Array) -> jax.Array:
    """:math:`\\partial_y^2` of the focal loss at a soft label where :func:`soft_region`
    holds (elsewhere finite or not, and not read), float64.

    With :math:`t = |x|`, :math:`s = \\sigma(-t)`, :math:`L = \\operatorname{log1p}(e^{-t})`,
    :math:`n` the weight of the big logistic (:math:`y` for :math:`x < 0`, :math:`1 - y`
    for :math:`x > 0`), :math:`U = 1 - 2n`, :math:`u = n + U s`, :math:`w = 1 - 2s` and
    :math:`a' = d\\alpha_t/dn`: the cross-entropy is :math:`n t + L`, whose label slope is
    :math:`t` exactly, and

    .. math::

        \\partial_y^2\\ell = u^{\\gamma - 2}\\,(t\\,T + L\\,\\gamma w (2 a' u + \\alpha_t
        (\\gamma - 1) w)),\\quad T = 2 a' (\\gamma n u w + u^2) + \\alpha_t\\gamma w
        ((\\gamma - 1) n w + 2 u),

    :math:`T` a quadratic in :math:`s`: :math:`T = n (\\gamma + 1) B + T_1 s + T_2 s^2`,
    :math:`B = 2 a' n + \\gamma\\alpha_t`. The terms of the product rule are of size
    :math:`t`, and their sum is :math:`t\\,n (\\gamma + 1) B u^{\\gamma - 2}` as
    :math:`t \\to \\infty`: :math:`B` vanishes where :math:`\\alpha_t\\gamma = -2 a' n`
    (:math:`\\alpha = 1/4`, :math:`\\gamma = 1/2` at :math:`y = 0.3`, where it is the
    1.4e-17 by which float64's 0.3 misses 3/10), and autodiff, which adds the terms, left an
    ulp of them: 1.4e-14 for 1.6e-15 at :math:`x = -43`, the sign wrong or 0 from there,
    hessian and reverse over reverse two numbers. Here :math:`B` is a compensated sum of
    exact products of the inputs (:math:`n`, :math:`\\alpha_t` and :math:`a'` as exact
    pairs), 0 only where the exact one is, and the rest has no cancellation of this kind.
    """
    t = jnp.where(jnp.isfinite(x), jnp.abs(x), 0.0)
    b, n, at, ay = cancelling_b(x < 0, y, gamma, alpha)
    g = jnp.broadcast_to(gamma, x.shape)
    e = jnp.exp(-t)
    s, soft = e / (1.0 + e), jnp.log1p(e)
    big_u, w = 1.0 - 2.0 * n, 1.0 - 2.0 * s
    u = n + big_u * s
    t1 = 2.0 * ay * (g * n * (big_u - 2.0 * n) + 2.0 * n * big_u)
    t1 = t1 + at * g * (2.0 * (big_u - 2.0 * n) - 4.0 * (g - 1.0) * n)
    t2 = 2.0 * ay * (big_u * big_u - 2.0 * g * n * big_u) + at * g * (
        4.0 * (g - 1.0) * n - 4.0 * big_u
    )
    big_t = n * (g + 1.0) * b + s * (t1 + s * t2)
    l_coef = g * w * (2.0 * ay * u + at * (g - 1.0) * w)
    return jnp.power(u, g - 2.0) * (t * big_t + soft * l_coef)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def exact_mixed(
    parts: Callable[..., tuple[jax.Array, jax.Array]],
    d_x: jax.Array,
    d_y: jax.Array,
    x: jax.Array,
    y: jax.Array,
    gamma: jax.Array,
    alpha: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """``(d_x, d_y)`` unchanged: the focal loss' first derivatives, which ``parts(x, y,
    gamma, alpha)`` computes, whose derivatives come from the JVP of ``parts`` but the
    mixed one, :func:`hard_label_dxy`, in :func:`mixed_region`.

    There the tangent of ``y`` is kept from ``d_x``'s JVP and that of ``x`` from ``d_y``'s
    (two JVPs of ``parts``, read by derivatives of derivatives only), and the exact slope
    times it added. A rule on the outputs, rather than a second evaluation of the kernel,
    so that the value and first-derivative programs compute ``d_x`` and ``d_y`` once, as
    before. Both orders of the mixed derivative then read the same number, in every mode.
    """
    del parts, x, y, gamma, alpha
    return d_x, d_y


@exact_mixed.defjvp
def _exact_mixed_jvp(
    parts: Callable[..., tuple[jax.Array, jax.Array]],
    primals: tuple[jax.Array, ...],
    tangents: tuple[jax.Array, ...],
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    d_x, d_y, x, y, gamma, alpha = primals
    _, _, tx, ty, t_gamma, t_alpha = tangents
    # Where a closed form is not finite (d2/dy2 overflows near finfo.max) the kernel's
    # own, so that no inf meets a zero tangent.
    hard = (y == 0.0) | (y == 1.0)
    slope = jnp.where(hard, hard_label_dxy(x, y, gamma, alpha), soft_label_dxy(x, y, gamma, alpha))
    region = mixed_region(x, y) & jnp.isfinite(slope)
    slope = jnp.where(region, slope, 0.0)
    curve = soft_label_dyy(x, y, gamma, alpha)
    soft = soft_region(x, y) & jnp.isfinite(curve)
    curve = jnp.where(soft, curve, 0.0)
    args = (x, y, gamma, alpha)
    t_dx = jax.jvp(parts, args, (tx, jnp.where(region, 0.0, ty), t_gamma, t_alpha))[1][0]
    cut = (jnp.where(region, 0.0, tx), jnp.where(soft, 0.0, ty), t_gamma, t_alpha)
    t_dy = jax.jvp(parts, args, cut)[1][1]
    return (d_x, d_y), (t_dx + slope * ty, t_dy + slope * tx + curve * ty)
