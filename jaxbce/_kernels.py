"""Elementwise kernels of binary cross-entropy and their custom derivatives.

Every loss in jaxbce is one formula, a weighted sum of two negative log-likelihoods:

.. math::

    \\ell = w \\,\\bigl[\\, \\pi\\, q\\, A(x) + \\bar q\\, B(x) \\,\\bigr],
    \\qquad A = -\\log p(x),\\quad B = -\\log\\bigl(1 - p(x)\\bigr),

where :math:`q = y(1-\\epsilon) + \\epsilon/2` is the smoothed label,
:math:`\\bar q = (1 - y)(1 - \\epsilon) + \\epsilon/2` its complement (computed directly, not
as :math:`1 - q`), :math:`\\pi` the positive-class weight and :math:`w` the element weight.
Only the pair :math:`(A, B)` and its derivative depend on what the prediction :math:`x` is:

* ``"logits"``: :math:`p = \\sigma(x)`, :math:`A = \\operatorname{softplus}(-x)`,
  :math:`B = \\operatorname{softplus}(x)`, :math:`A' = -\\sigma(-x)`, :math:`B' = \\sigma(x)`;
* ``"probs"``: :math:`p = x`, each log clamped at -100 as in PyTorch's ``BCELoss``.

Accuracy. The value is :math:`a|x| + c\\,L(|x|)` with :math:`L(t) =
\\operatorname{log1p}(e^{-t})`, :math:`c = \\pi q + \\bar q` and :math:`a` the weight of the
term whose softplus grows (:math:`\\bar q` for :math:`x \\ge 0`); the slope is
:math:`\\bar q - c\\,\\sigma(-|x|)` or :math:`c\\,\\sigma(-|x|) - \\pi q`. :math:`L` and
:math:`\\sigma(-t)` come from :mod:`jaxbce._elementary` as unevaluated float32 pairs good
to about :math:`2^{-26}`; the first term is added to the pair's high part exactly
(:func:`~jaxbce._arithmetic.two_sum`) and the sum rounded once, so for hard labels the
loss and its derivative are within one ulp of the exact value at every float32 input
(``python -m jaxbce.check --exhaustive``), and one side of the slope is exactly 0: the
tiny gradients of confident right answers (:math:`-\\sigma(-30)`) keep every bit.

Derivatives. The forward rule :func:`nll_fwd` and backward rule :func:`nll_bwd` are plain
functions and the single source of truth. They are registered with :func:`jax.custom_vjp`
(:data:`nll_vjp`, the reverse-only kernel), and the public kernel :func:`nll` is a
:func:`jax.custom_jvp` whose rule evaluates the same two functions: its tangent is
``sum(nll_bwd(res, 1)[i] * t[i])``, the diagonal Jacobian contracted with the tangents. A
custom-JVP rule is linear in the tangents, so JAX transposes it for reverse mode and can
also push tangents forward (``jvp``, ``jacfwd``, ``hessian``), which a ``custom_vjp``
function refuses. The coefficients are ordinary JAX code over the elementary functions,
whose own rules are exact formulas, so every higher derivative is available and finite.
The rule takes symbolic zeros: derivatives of inputs that are not being differentiated
(labels, weights) are never computed. The label derivative is
:math:`w(1-\\epsilon)(\\pi A - B)` with :math:`A - B = -x` exactly for logits, so it keeps
its relative accuracy at :math:`x \\to 0`, where :math:`A` and :math:`B` are both near
:math:`\\log 2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxbce._arithmetic import (
    Pair,
    opaque,
    two_sum,
)
from jaxbce._coefficients import (
    Coefficient,
    Overflowing,
    apply,
    contract,
    contract_scaled,
    with_label_coefficients,
    with_x_coefficients,
)
from jaxbce._elementary import (
    neg_log,
    neg_log1m,
    recip_one_minus,
    sigmoid_neg_abs,
    sigmoid_neg_abs_scaled,
    softplus_neg_abs,
    softplus_neg_abs_scaled,
    softplus_neg_abs_summed,
)
from jaxbce._label_weights import (
    LabelWeights,
    add_scaled,
    label_weight_slopes,
    label_weights,
    pair_value,
    smoothed,
    times,
    total,
)
from jaxbce._quotient import linear_quotient, quotient

Kind = Literal["logits", "probs"]

#: PyTorch's ``BCELoss`` clamps each log-probability at this value.
LOG_CLAMP = 100.0
#: The smallest float64 whose log is above -100: fl(exp(-100)), which exceeds exp(-100).
_CLAMP_P64 = 3.720075976020836e-44


def neg_abs(z: jax.Array) -> jax.Array:
    # -|z| written so that its derivative at z = 0 is -1 (jnp.abs has 0 there), which keeps
    # every derivative of what is built on it exact at 0.
    return jnp.where(z >= 0, -z, z)


def safe_mul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a * b`` with ``0 * inf = 0``: a term whose label weight is 0 is absent, not NaN.

    A NaN in ``b`` still propagates.
    """
    return jnp.where((a == 0) & jnp.isinf(b), 0.0, a * b)


@jax.custom_jvp
def vanishing_mul(a: jax.Array, b: jax.Array) -> jax.Array:
    """:func:`safe_mul`, whose tangent has no ``da`` term where ``b`` is 0 (nor ``db`` where
    ``a`` is): a factor that is 0 because its exact value is below every float, met by the
    slope of an overflowing other factor, gives 0 rather than ``0 * inf = NaN``. (The
    selection reads the primals only: a JVP is linear in its tangents.)"""
    return safe_mul(a, b)


@vanishing_mul.defjvp
def _vanishing_mul_jvp(
    primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (a, b), (da, db) = primals, tangents
    tangent = jnp.where(b == 0, 0.0, b * da) + jnp.where(a == 0, 0.0, a * db)
    return vanishing_mul(a, b), tangent


# ----------------------------------------------------------------- logits


def _logit_value(x: jax.Array, lw: LabelWeights, exact: bool = True) -> jax.Array:
    """:math:`\\pi q\\operatorname{softplus}(-x) + \\bar q\\operatorname{softplus}(x)
    = a|x| + c L(|x|)`, two non-negative terms, the second added to the first exactly.

    ``exact=False`` takes :math:`L` rounded a few times
    (:func:`~jaxbce._elementary.softplus_neg_abs_summed`) and the weights rounded: for a
    value that is only summed, whose sum's own rounding is larger, at less than half the cost."""
    if exact and lw.lo is not None:
        return total(logit_value_pair(x, lw))
    nonneg = x >= 0
    t = -neg_abs(x)
    a = jnp.where(nonneg, lw.qc, lw.pq)
    c = lw.c if lw.lo is None else lw.c + lw.lo[2]
    if not exact:
        return safe_mul(a, t) + c * softplus_neg_abs_summed(t)
    return add_scaled(safe_mul(a, t), c, softplus_neg_abs(t))


def logit_value_pair(x: jax.Array, lw: LabelWeights, *, band64: bool = True) -> Pair:
    """:func:`_logit_value` for label-weight pairs (``lw.lo`` given), as a pair whose sum
    is the value rounded once: ``(inf, 0)`` at an infinite logit with a nonzero weight."""
    assert lw.lo is not None
    nonneg = x >= 0
    t = -neg_abs(x)
    a = jnp.where(nonneg, lw.qc, lw.pq)
    pq_lo, qc_lo, c_lo = lw.lo
    finite_t = jnp.where(jnp.isinf(t), 0.0, t)  # a * inf would be split into inf - inf
    a_pair = (a, jnp.where(nonneg, qc_lo, pq_lo))
    up, down, shift = _flush_guard(t, a, lw.c, band64)
    g = softplus_neg_abs_scaled(t, shift)
    hi, lo = pair_value(a_pair, (finite_t * up, jnp.zeros_like(t)), (lw.c, c_lo), g)
    inf = jnp.isinf(t)
    return jnp.where(inf, safe_mul(a, t), hi * down), jnp.where(inf, 0.0, lo * down)


def _flush_guard(
    t: jax.Array, a: jax.Array, c: jax.Array, band64: bool = True
) -> tuple[jax.Array, ...]:
    """``(2^s, 2^-s, s)``, ``s = 64`` where ``t > 80`` (float32; ``t > 690`` in float64)
    and ``t``, the weights are moderate: there ``softplus(-t)`` and ``sigma(-t)`` are below
    ``2^-115`` (``2^-995``) and their low parts (for ``t > 87.3``, ``708.4``, the values
    themselves) would be flushed by a device that flushes subnormals, while a weight above
    1 may scale them back into the normal range. The caller evaluates its pairs times
    ``2^s`` and scales the result back. ``band64=False`` (the focal kernel) keeps float64
    unscaled: through the focal loss' own scalings, reverse-over-reverse second derivatives
    at 690 < t < 708 lost 1e-3 relative with the band (measured), none without."""
    low = 80.0 if t.dtype == jnp.float32 else 690.0
    band = (t > low) & (t < 2.0**20) & (jnp.abs(a) < 2.0**40) & (jnp.abs(c) < 2.0**40)
    if t.dtype != jnp.float32 and not band64:
        band = jnp.zeros_like(band)
    return (
        jnp.where(band, 2.0**64, 1.0),
        jnp.where(band, 2.0**-64, 1.0),
        jnp.where(band, 64.0, 0.0).astype(t.dtype),
    )


def _logit_slope(x: jax.Array, lw: LabelWeights) -> jax.Array:
    """:math:`\\bar q\\sigma(x) - \\pi q\\sigma(-x)`: :math:`\\bar q - c s` for
    :math:`x \\ge 0`, :math:`c s - \\pi q` otherwise, :math:`s = \\sigma(-|x|)`."""
    if lw.lo is not None:
        return total(logit_slope_pair(x, lw))
    nonneg = x >= 0
    t = -neg_abs(x)
    base = jnp.where(nonneg, lw.qc, -lw.pq)
    sign = jnp.where(nonneg, -1.0, 1.0)
    return add_scaled(base, sign * lw.c, sigmoid_neg_abs(t))


def logit_slope_pair(x: jax.Array, lw: LabelWeights, *, band64: bool = True) -> Pair:
    """:func:`_logit_slope` for label-weight pairs (``lw.lo`` given), as a pair whose sum
    is the slope rounded once."""
    assert lw.lo is not None
    nonneg = x >= 0
    t = -neg_abs(x)
    base = jnp.where(nonneg, lw.qc, -lw.pq)
    sign = jnp.where(nonneg, -1.0, 1.0)
    pq_lo, qc_lo, c_lo = lw.lo
    _, down, shift = _flush_guard(t, base, lw.c, band64)
    s_hi, s_lo = sigmoid_neg_abs_scaled(t, shift)
    m_hi, m_lo = times(s_hi, sign * lw.c, sign * c_lo)  # times 2^shift, scaled back here
    r, err = two_sum(base, m_hi * down)
    rest = err + ((jnp.where(nonneg, qc_lo, -pq_lo) + m_lo * down) + sign * lw.c * s_lo * down)
    return r, jnp.where(jnp.isfinite(r), rest, 0.0)


# ------------------------------------------------------------------ probs


def _unclamped(p: jax.Array) -> jax.Array:
    """Where :math:`-\\log p < 100`, read from the bits for float32 (subnormal p count)."""
    if p.dtype == jnp.float32:
        # exp(-100) = 26.53 * 2^-149: the float32 values above it are the bit patterns > 26.
        return lax.bitcast_convert_type(p, jnp.int32) > 26
    # Float64: the smallest float64 above exp(-100) is fl(exp(-100)) itself (checked with
    # mpmath in the tests). Not by the log: XLA's float64 log rounds -log of it to 100.
    return p >= _CLAMP_P64


def _unclamped_p(p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(in_a, p_a)``: where ``-log p`` is not clamped, and ``p`` there (1 elsewhere), the
    stand-in that keeps every derivative of ``-log p`` and ``1/p`` away from ``log 0``."""
    in_a = _unclamped(p)
    return in_a, jnp.where(in_a, p, 1.0)


def _probs_pairs(p: jax.Array) -> tuple[Pair, Pair]:
    """``(A, B)``: the clamped negative logs.

    A clamped log is the constant 100, and its unclamped branch is evaluated at a harmless
    stand-in, so that no derivative of any order meets ``log(0)``.
    """
    in_a, p_a = _unclamped_p(p)
    in_b = p < 1.0  # 1 - p >= 2^-53 > exp(-100) for every p < 1
    a_hi, a_lo = neg_log(p_a)
    b_hi, b_lo = neg_log1m(jnp.where(in_b, p, 0.0))
    a = (jnp.where(in_a, a_hi, LOG_CLAMP), jnp.where(in_a, a_lo, 0.0))
    b = (jnp.where(in_b, b_hi, LOG_CLAMP), jnp.where(in_b, b_lo, 0.0))
    return a, b


def _probs_value(p: jax.Array, lw: LabelWeights) -> jax.Array:
    a, b = _probs_pairs(p)
    if lw.lo is None:
        s, err = two_sum(lw.pq * a[0], lw.qc * b[0])
        value = s + (err + (lw.pq * a[1] + lw.qc * b[1]))
    else:
        pq_lo, qc_lo, _ = lw.lo
        value = total(pair_value((lw.pq, pq_lo), a, (lw.qc, qc_lo), b))
    return jnp.where(jnp.isnan(p), p, value)


def _probs_slope(p: jax.Array, lw: LabelWeights) -> jax.Array:
    """:math:`-\\pi q/p + \\bar q/(1-p)`, 0 through a clamped log.

    :math:`\\pi q/p` is :func:`~jaxbce._quotient.quotient`, whose derivative is
    :math:`(d(\\pi q) - (\\pi q/p)\\,dp)/p`: it never forms :math:`1/p^2`, which
    overflows for tiny p and would turn a zero label weight into ``0 * inf``.
    """
    in_a, p_a = _unclamped_p(p)
    in_b = p < 1.0
    d_a = jnp.where(in_a, -quotient(lw.pq, p_a), 0.0)
    r_hi, r_lo = recip_one_minus(jnp.where(in_b, p, 0.0))
    d_b = (jnp.where(in_b, r_hi, 0.0), jnp.where(in_b, r_lo, 0.0))
    if lw.lo is None:
        return jnp.where(jnp.isnan(p), p, add_scaled(d_a, lw.qc, d_b))
    pq_lo, qc_lo, _ = lw.lo
    d_a_lo = jnp.where(in_a, -quotient(pq_lo, p_a), 0.0)
    m_hi, m_lo = times(d_b[0], lw.qc, qc_lo)
    r, err = two_sum(d_a, m_hi)
    slope = r + (err + ((d_a_lo + m_lo) + lw.qc * d_b[1]))
    return jnp.where(jnp.isnan(p), p, jnp.where(jnp.isfinite(r), slope, r))


def _probs_slope_of(p: jax.Array, labels: tuple[Any, ...]) -> jax.Array:
    return _probs_slope(p, label_weights(*labels))


def _probs_label_slopes(p: jax.Array, labels: tuple[Any, ...]) -> tuple[Coefficient, ...]:
    """The derivatives of :func:`_probs_slope`, :math:`-\\pi q[A]/p + \\bar q[B]/(1-p)`,
    in ``(y, eps, pw, w)``, each one coefficient
    (:func:`~jaxbce._coefficients.with_label_coefficients`; :math:`[A]`, :math:`[B]` where a
    log is not clamped): :math:`-\\pi q'[A]/p + \\bar q'[B]/(1-p)` for the label weights'
    derivatives :math:`(\\pi q)'`, :math:`\\bar q'`; for ``w``, the unweighted slope. Each
    quotient by :math:`p` is formed with its whole numerator (finite wherever the exact one
    is: a weight below 1 is applied before the division, in reverse mode too), and is an
    :class:`Overflowing` where it is not."""
    (in_a, p_a), in_b = _unclamped_p(p), p < 1.0
    r_hi, r_lo = recip_one_minus(jnp.where(in_b, p, 0.0))
    r = jnp.where(in_b, r_hi + r_lo, 0.0)

    def over_p(a: jax.Array, b: jax.Array, value: jax.Array | None = None) -> Overflowing:
        if value is None:  # a [A] / p + b [B] / (1 - p)
            value = jnp.where(in_a, quotient(a, p_a), 0.0) + b * r
        return Overflowing(
            value, lambda t: jnp.where(in_a, linear_quotient(a * t, p_a), 0.0) + b * r * t
        )

    slopes = label_weight_slopes(labels)
    coefficients: list[Coefficient] = [None if d is None else over_p(-d[0], d[1]) for d in slopes]
    if slopes[3] is not None:  # the unweighted slope itself, whose terms may cancel (p = q)
        y, eps, pw, _ = labels
        unweighted = _probs_slope_of(p, (y, eps, pw, None))
        coefficients[3] = over_p(-slopes[3][0], slopes[3][1], unweighted)
    return tuple(coefficients)


def _probs_ratio(p: jax.Array, labels: tuple[Any, ...]) -> jax.Array:
    """:math:`\\pi q [A] 2^{-64}/p` (:func:`_probs_slope_overflowing`)."""
    lw = label_weights(*labels)
    pq = lw.pq if lw.lo is None else lw.pq + lw.lo[0]
    in_a, p_a = _unclamped_p(p)
    return quotient(jnp.where(in_a, pq, 0.0) * 2.0**-64, p_a)


def _probs_ratio_slopes(p: jax.Array, labels: tuple[Any, ...]) -> tuple[Coefficient, ...]:
    """The derivatives of :func:`_probs_ratio` in the labels, each one quotient."""
    in_a, p_a = _unclamped_p(p)
    return tuple(
        None if d is None else jnp.where(in_a, quotient(d[0] * 2.0**-64, p_a), 0.0)
        for d in label_weight_slopes(labels)
    )


# ------------------------------------------------------------------ kernel


def _value(kind: Kind, x: jax.Array, lw: LabelWeights, exact: bool = True) -> jax.Array:
    """``pq * A(x) + qc * B(x)``; ``exact`` as in :func:`_logit_value`."""
    if kind == "logits":
        return _logit_value(x, lw, exact)
    return _probs_value(x, lw)


def _neg_log_odds_gap(kind: Kind, x: jax.Array, pw: jax.Array | None) -> tuple[jax.Array, ...]:
    """``(A, pw * A - B)``: the positive term and the label derivative's factor.

    For logits :math:`A - B = -x` exactly, so :math:`\\pi A - B = (\\pi - 1)A - x`.
    """
    if kind == "logits":
        one, zero = jnp.ones_like(x), jnp.zeros_like(x)
        a = _logit_value(x, LabelWeights(one, zero, one))  # softplus(-x): the kernel, y = 1
        return a, (-x if pw is None else (pw - 1.0) * a - x)
    pair_a, pair_b = _probs_pairs(x)
    a, b = total(pair_a), total(pair_b)
    return a, (a if pw is None else pw * a) - b


Residuals = tuple[jax.Array, jax.Array, jax.Array | None, jax.Array | None, jax.Array | None]


def nll_fwd(
    kind: Kind,
    x: jax.Array,
    y: jax.Array,
    eps: jax.Array | None,
    pw: jax.Array | None,
    w: jax.Array | None,
) -> tuple[jax.Array, Residuals]:
    """Forward rule: the elementwise loss and the residuals for :func:`nll_bwd`.

    Args:
      kind: ``"logits"`` or ``"probs"``: what ``x`` is.
      x: predictions, already in the compute dtype.
      y: labels in [0, 1], same shape and dtype.
      eps: scalar label smoothing, or ``None`` for none.
      pw: positive-class weight per element, or ``None`` for 1.
      w: element weight, or ``None`` for 1.

    All arrays but ``eps`` have one shape. The residuals are the inputs themselves: the
    backward pass recomputes what it needs, so no N-sized intermediate is kept alive.

    Returns:
      ``(loss, residuals)``.
    """
    loss = _value(kind, x, label_weights(y, eps, pw, w))
    return loss, (x, y, eps, pw, w)


def _jacobian(kind: Kind, res: Residuals, several: bool = False) -> tuple[Coefficient, ...]:
    """The diagonal Jacobian of the kernel: one coefficient per input and element.

    .. math::

        \\partial_x \\ell = w(\\pi q A' + \\bar q B'),\\quad
        \\partial_y \\ell = w(1-\\epsilon)(\\pi A - B),\\quad
        \\partial_\\epsilon \\ell = w(\\tfrac12 - y)(\\pi A - B),\\quad
        \\partial_\\pi \\ell = w q A,\\quad \\partial_w \\ell = \\pi q A + \\bar q B.

    ``None`` for an absent input (``eps``, ``pw``, ``w``). ``d/dy`` of logits with
    ``pos_weight`` is :class:`Overflowing`: ``(pi - 1) A`` overflows at ``x = -finfo.max``
    where the loss' other derivatives do not. ``d/dp`` of probabilities, ``pi q / p``,
    overflows below ``p = pi q / finfo.max``: it is one where ``several`` inputs carry
    tangents (:func:`_probs_slope_overflowing`).
    """
    x, y, eps, pw, w = res
    lw = label_weights(y, eps, pw, w)
    labels = (y, eps, pw, w)
    if kind == "logits":
        slope = _logit_slope(x, lw)
        d_y, d_eps, d_pw, d_w = _label_derivatives(kind, x, labels)
    else:
        # The mixed derivatives (in p of the label coefficients, in the labels of the slope)
        # are single coefficients: through the chains, a weight below 1 met 1/p after it
        # had overflowed (NaN or -inf where the exact value is finite, p below 2.9e-39).
        slope = with_label_coefficients(_probs_slope_of, _probs_label_slopes, x, labels)
        d_y, d_eps, d_pw, d_w = with_x_coefficients(
            _probs_label_derivatives, _probs_label_slopes, x, labels
        )
    d_x = _probs_slope_overflowing(x, lw, slope, labels) if kind == "probs" and several else slope
    if kind == "logits" and pw is not None:
        a = _neg_log_odds_gap(kind, x, pw)[0]
        scale = w if eps is None else (1.0 - eps) if w is None else w * (1.0 - eps)

        def gap_times(t: jax.Array) -> jax.Array:
            ts = t if scale is None else t * scale
            return (ts * (pw - 1.0)) * a - ts * x

        return d_x, Overflowing(d_y, gap_times), d_eps, d_pw, d_w
    return d_x, d_y, d_eps, d_pw, d_w


def _label_derivatives(kind: Kind, x: jax.Array, labels: tuple[Any, ...]) -> tuple[Any, ...]:
    """``(d/dy, d/deps, d/dpw, d/dw)`` of the kernel (``None`` for an absent input)."""
    y, eps, pw, w = labels
    q, _ = smoothed(y, eps)
    a, gap = _neg_log_odds_gap(kind, x, pw)
    d_y = gap if eps is None else (1.0 - eps) * gap
    d_eps = None if eps is None else (0.5 - y) * gap
    d_pw = None if pw is None else q * a
    # d/dw is the unweighted loss, through the kernel itself: differentiated (d2/dw dx), its
    # derivative is then the slope, formed without 1/p (a zero label weight times the
    # derivative of -log p, -inf at a subnormal p, was NaN in _value's own derivative).
    d_w = None if w is None else nll(kind, x, y, eps, pw, None)
    if w is not None:
        d_y, d_eps, d_pw = w * d_y, _times_or_none(w, d_eps), _times_or_none(w, d_pw)
    return d_y, d_eps, d_pw, d_w


def _probs_label_derivatives(p: jax.Array, labels: tuple[Any, ...]) -> tuple[Any, ...]:
    return _label_derivatives("probs", p, labels)


def _times_or_none(a: jax.Array, c: jax.Array | None) -> jax.Array | None:
    return None if c is None else a * c


def nll_bwd(kind: Kind, res: Residuals, g: jax.Array) -> Residuals:
    """Backward rule: cotangents of ``(x, y, eps, pw, w)`` for the output cotangent ``g``.

    ``g`` times :func:`_jacobian`; the cotangent of the scalar ``eps`` is summed.
    """
    c_x, c_y, c_eps, c_pw, c_w = _jacobian(kind, res)
    assert c_x is not None and c_y is not None
    d_x, d_y = apply(c_x, g), apply(c_y, g)
    d_eps, d_pw, d_w = (None if c is None else apply(c, g) for c in (c_eps, c_pw, c_w))
    eps = res[2]
    d_eps_sum = None if eps is None or d_eps is None else jnp.sum(d_eps).astype(eps.dtype)
    return d_x, d_y, d_eps_sum, d_pw, d_w


def _nll_primal(
    kind: Kind,
    x: jax.Array,
    y: jax.Array,
    eps: jax.Array | None,
    pw: jax.Array | None,
    w: jax.Array | None,
) -> jax.Array:
    return nll_fwd(kind, x, y, eps, pw, w)[0]


#: Reverse-mode-only kernel: ``nll_fwd``/``nll_bwd`` registered with ``jax.custom_vjp``.
nll_vjp = jax.custom_vjp(_nll_primal, nondiff_argnums=(0,))
nll_vjp.defvjp(nll_fwd, nll_bwd)


@partial(jax.custom_jvp, nondiff_argnums=(0, 6))
def nll(
    kind: Kind,
    x: jax.Array,
    y: jax.Array,
    eps: jax.Array | None,
    pw: jax.Array | None,
    w: jax.Array | None,
    summed: bool = False,
) -> jax.Array:
    """Elementwise ``w * (pw * q * A(x) + qc * B(x))``, differentiable in every mode.

    Args:
      kind: ``"logits"`` or ``"probs"``.
      x, y, pw, w: arrays of one shape in one floating dtype (``pw``, ``w`` may be None).
      eps: scalar label smoothing in that dtype, or ``None``.
      summed: the caller only sums the value (a "sum" or "mean" reduction): it may be
        evaluated from XLA's ``exp(-|x|)``, rounded a few times
        (:func:`~jaxbce._elementary.softplus_neg_abs_summed`), at less than half the cost,
        since the sum's own rounding is larger (XLA:CPU flushes a subnormal ``exp(-|x|)``
        to 0 there, before a weight above 1 could scale it back). Derivatives are always
        the exact ones.

    Returns:
      The elementwise loss, shaped like ``x``.
    """
    loss = _value(kind, x, label_weights(y, eps, pw, w), exact=not summed)
    return loss


@partial(nll.defjvp, symbolic_zeros=True)
def _nll_jvp(
    kind: Kind, summed: bool, primals: Residuals, tangents: Sequence[Any]
) -> tuple[jax.Array, jax.Array]:
    out = nll(kind, *primals, summed)
    # The barrier keeps XLA from merging the value's and the derivative's identical range
    # reductions and exponentials: shared, they would be written to memory between the
    # reduction and the gradient pass; apart, each pass recomputes them in registers. Only
    # x and y pass it: differentiated again, a barrier gives every operand a tangent, and
    # an instantiated zero tangent of a constant weight meets an overflowed coefficient
    # (0 * inf) where a symbolic zero would not.
    x, y, *options = primals
    x, y = lax.optimization_barrier((x, y))
    carried = [t for t in tangents if t is not None and not isinstance(t, SymbolicZero)]
    several = len(carried) > 1
    if kind == "probs" and carried:
        # d/dp and d/dy have derivatives in 1/p and 1/p^2 that overflow where the product
        # with a zero tangent is finite: contract_scaled scales the direction first.
        live = tuple(None if isinstance(t, SymbolicZero) else t for t in tangents)
        return out, contract_scaled(partial(_jacobian, kind), several, (x, y, *options), live)
    coefficients = _jacobian(kind, (x, y, *options), several=several)
    return out, contract(out, coefficients, tangents)


def _probs_slope_overflowing(
    p: jax.Array, lw: LabelWeights, slope: jax.Array, labels: tuple[Any, ...]
) -> Overflowing:
    """``d/dp`` of probabilities, :math:`-\\pi q/p + \\bar q/(1-p)`, as an
    :class:`Overflowing` coefficient: it overflows where :math:`\\pi q/p` exceeds
    ``finfo.max`` (the exact one too), and ``jacfwd`` and ``hessian`` in ``(p, y)`` give
    ``p`` a zero tangent in ``y``'s column. There the map is
    :math:`t\\bar q - (t\\,\\pi q)/p`.

    Used only where two or more inputs carry tangents: where only ``p`` does (``grad`` and
    ``value_and_grad`` in ``p``), a zero tangent is a zero direction, and the plain product
    keeps the gradient pass as fast as before (the safe map cost it 8-13%, measured).
    """
    # pi q / p times 2^-64, finite: the map is read where pi q / p overflows (so pi q >
    # 2^-21 and pi q 2^-64 is normal). The tangent meets only multiplications: a division
    # of it, differentiated again, is t dp / p^2 = 0 * inf where p^2 underflows (quotient
    # has no 1/p^2). Below the log's clamp the term is constant: no map. Its derivatives in
    # the labels are single quotients: the chain, transposed, multiplied the cotangent by
    # 2^64 before it divided by p (NaN for a finite d2/dw dp where a weight of 2 makes the
    # slope overflow, found by an adversarial pass).
    ratio = with_label_coefficients(_probs_ratio, _probs_ratio_slopes, p, labels)

    def times(t: jax.Array) -> jax.Array:
        # An opaque 2^64: XLA's simplifier reassociated (t * ratio) * 2^64 into
        # t * (ratio * 2^64) = 0 * inf (jacrev over the weights' gradient, found 2026-11-27).
        return t * lw.qc - (t * ratio) * opaque(2.0**64, t)

    return Overflowing(slope, times)
