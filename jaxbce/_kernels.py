"""Elementwise kernels of binary cross-entropy and their custom derivatives.

Every loss in jaxbce is one formula, a weighted sum of two negative log-likelihoods:

.. math::

    \\ell = w \\,\\bigl[\\, \\pi\\, q\\, A(x) + \\bar q\\, B(x) \\,\\bigr],
    \\qquad A = -\\log p(x),\\quad B = -\\log\\bigl(1 - p(x)\\bigr),

where :math:`q` is the (possibly smoothed) label, :math:`\\bar q = 1 - q` is computed
directly rather than by subtraction, :math:`\\pi` the positive-class weight and :math:`w`
the element weight. Only the pair :math:`(A, B)` and its derivative depend on what the
prediction :math:`x` is:

* ``"logits"``: :math:`p = \\sigma(x)`, :math:`A = \\operatorname{softplus}(-x)`,
  :math:`B = \\operatorname{softplus}(x)`, :math:`A' = -\\sigma(-x)`, :math:`B' = \\sigma(x)`;
* ``"probs"``: :math:`p = x`, each log clamped at -100 as in PyTorch's ``BCELoss``.

Both terms of the sum are non-negative, so nothing cancels in the value; in the derivative
:math:`\\ell' = w(\\bar q\\,\\sigma(x) - \\pi q\\,\\sigma(-x))` one term vanishes for hard
labels, so the tiny gradients of confident right answers (:math:`-\\sigma(-30)`) keep full
relative precision instead of rounding ``sigmoid(z) - 1`` to zero.

Derivatives. The forward rule :func:`nll_fwd` and backward rule :func:`nll_bwd` are plain
functions and the single source of truth. They are registered with :func:`jax.custom_vjp`
(:data:`nll_vjp`, the reverse-only kernel), and the public kernel :func:`nll` is a
:func:`jax.custom_jvp` whose rule evaluates the same two functions: its tangent is
``sum(nll_bwd(res, 1)[i] * t[i])``, the diagonal Jacobian contracted with the tangents. A
custom-JVP rule is linear in the tangents, so JAX transposes it for reverse mode (``grad``
multiplies the cotangent by exactly the coefficients ``nll_bwd`` computes) and can also
push tangents forward (``jvp``, ``jacfwd``, ``hessian``), which a ``custom_vjp`` function
refuses. The coefficients are ordinary differentiable JAX code, so every higher derivative
is available too. The rule takes symbolic zeros, so derivatives of inputs that are not
being differentiated (labels, weights) are never computed.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

Kind = Literal["logits", "probs"]

#: PyTorch's ``BCELoss`` clamps each log-probability at this value.
LOG_CLAMP = 100.0


def _neg_abs(z: jax.Array) -> jax.Array:
    # -|z| written so that its derivative at z = 0 is -1 (jnp.abs has 0 there), which keeps
    # every derivative of what is built on it exact at 0.
    return jnp.where(z >= 0, -z, z)


class LogitTerms:
    """The stable pieces of :math:`\\sigma` and :math:`\\log\\sigma` at a logit, computed once.

    With :math:`e = \\exp(-|z|)` and :math:`L = \\operatorname{log1p}(e)`:
    :math:`\\operatorname{softplus}(-z) = L + \\max(-z, 0)`,
    :math:`\\operatorname{softplus}(z) = L + \\max(z, 0)`,
    :math:`\\sigma(|z|) = 1/(1+e)` and :math:`\\sigma(-|z|) = e/(1+e)`. Every quantity is a
    sum or product of non-negative numbers, so none loses relative precision; at
    :math:`z = \\pm\\infty` they take their IEEE limits (0, :math:`\\infty`, 0, 1).
    """

    def __init__(self, z: jax.Array):
        nonneg = z >= 0
        e = jnp.exp(_neg_abs(z))
        log1p_e = jnp.log1p(e)
        s_big = 1.0 / (1.0 + e)  # sigmoid(|z|)
        s_small = e * s_big  # sigmoid(-|z|)
        self.softplus_neg = jnp.where(nonneg, log1p_e, log1p_e - z)  # -log sigmoid(z)
        self.softplus_pos = jnp.where(nonneg, log1p_e + z, log1p_e)  # -log sigmoid(-z)
        self.sigmoid_pos = jnp.where(nonneg, s_big, s_small)  # sigmoid(z)
        self.sigmoid_neg = jnp.where(nonneg, s_small, s_big)  # sigmoid(-z)
        self.exp_neg_abs, self.sigmoid_big, self.sigmoid_small = e, s_big, s_small


def _nll_pair(kind: Kind, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns ``(A, B)``: ``A = -log p`` and ``B = -log(1 - p)``."""
    if kind == "logits":
        t = LogitTerms(x)
        return t.softplus_neg, t.softplus_pos
    neg_log_p = -jnp.log(x)
    neg_log_1mp = -jnp.log1p(-x)
    nan = jnp.isnan(x)  # minimum() would turn a NaN probability into 100
    a = jnp.where(nan, x, jnp.minimum(neg_log_p, LOG_CLAMP))
    b = jnp.where(nan, x, jnp.minimum(neg_log_1mp, LOG_CLAMP))
    return a, b


def _value(kind: Kind, x: jax.Array, pq: jax.Array, qc: jax.Array) -> jax.Array:
    """``pq * A(x) + qc * B(x)``, written for XLA: each transcendental has a single use.

    For logits, :math:`\\pi q \\operatorname{softplus}(-z) + \\bar q \\operatorname{softplus}(z)
    = a|z| + (\\pi q + \\bar q)\\operatorname{log1p}(e^{-|z|})` with :math:`a = \\bar q` for
    :math:`z \\ge 0` and :math:`\\pi q` otherwise: two non-negative terms, and one exp and one
    log1p feeding a single chain, which XLA fuses straight into a reduction (a log1p with two
    users is written to memory first on CPU).
    """
    if kind == "logits":
        nonneg = x >= 0
        slope = jnp.where(nonneg, qc, pq)
        return safe_mul(slope, jnp.where(nonneg, x, -x)) + (pq + qc) * jnp.log1p(
            jnp.exp(_neg_abs(x))
        )
    a, b = _nll_pair(kind, x)
    return safe_mul(pq, a) + safe_mul(qc, b)


def _slope(kind: Kind, x: jax.Array, pq: jax.Array, qc: jax.Array) -> jax.Array:
    """:math:`\\partial_x (pq A + qc B)`.

    For logits, :math:`\\bar q \\sigma(z) - \\pi q \\sigma(-z)`, computed as
    :math:`\\bar q - ct` for :math:`z \\ge 0` and :math:`ct - \\pi q` otherwise, with
    :math:`t = \\sigma(-|z|)` and :math:`c = \\pi q + \\bar q`: for hard labels one side is
    exactly 0, so ``-sigmoid(-30)`` keeps every bit rather than rounding to 0.
    """
    if kind == "logits":
        e = jnp.exp(_neg_abs(x))
        ct = (pq + qc) * (e / (1.0 + e))
        return jnp.where(x >= 0, qc - ct, ct - pq)
    in_a = x > jnp.exp(-LOG_CLAMP)  # where -log p < 100
    in_b = 1.0 - x > jnp.exp(-LOG_CLAMP)
    # The clamped log is flat, so its derivative is 0 there; the inner where keeps the
    # unselected branch finite so that no 0 * inf reaches higher derivatives.
    d_a = jnp.where(in_a, -1.0 / jnp.where(in_a, x, 1.0), 0.0)
    d_b = jnp.where(in_b, 1.0 / jnp.where(in_b, 1.0 - x, 1.0), 0.0)
    return pq * d_a + qc * d_b


def safe_mul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a * b`` with ``0 * inf = 0``: a term whose label weight is 0 is absent, not NaN.

    A NaN in ``b`` still propagates.
    """
    return jnp.where((a == 0) & jnp.isinf(b), 0.0, a * b)


def _pos_label(q: jax.Array, pw: jax.Array | None) -> jax.Array:
    return q if pw is None else pw * q


Residuals = tuple[jax.Array, jax.Array, jax.Array, jax.Array | None, jax.Array | None]


def nll_fwd(
    kind: Kind,
    x: jax.Array,
    q: jax.Array,
    qc: jax.Array,
    pw: jax.Array | None,
    w: jax.Array | None,
) -> tuple[jax.Array, Residuals]:
    """Forward rule: the elementwise loss and the residuals for :func:`nll_bwd`.

    Args:
      kind: ``"logits"`` or ``"probs"``: what ``x`` is.
      x: predictions, already in the compute dtype.
      q: positive-label weight per element (the smoothed label).
      qc: negative-label weight per element, ``1 - q`` computed without cancellation.
      pw: positive-class weight per element, or ``None`` for 1.
      w: element weight, or ``None`` for 1.

    All arrays have one shape. The residuals are the inputs themselves: the backward pass
    recomputes what it needs, so no N-sized intermediate is kept alive between the passes.

    Returns:
      ``(loss, residuals)``.
    """
    loss = _value(kind, x, _pos_label(q, pw), qc)
    if w is not None:
        loss = w * loss
    return loss, (x, q, qc, pw, w)


def nll_bwd(kind: Kind, res: Residuals, g: jax.Array) -> Residuals:
    """Backward rule: cotangents of ``(x, q, qc, pw, w)`` for the output cotangent ``g``.

    .. math::

        \\partial_x \\ell = w(\\pi q A' + \\bar q B'),\\quad
        \\partial_q \\ell = w \\pi A,\\quad \\partial_{\\bar q} \\ell = w B,\\quad
        \\partial_\\pi \\ell = w q A,\\quad \\partial_w \\ell = \\pi q A + \\bar q B.
    """
    x, q, qc, pw, w = res
    a, b = _nll_pair(kind, x)
    pq = _pos_label(q, pw)
    gw = g if w is None else g * w
    d_x = gw * _slope(kind, x, pq, qc)
    d_q = gw * a if pw is None else gw * pw * a
    d_qc = gw * b
    d_pw = None if pw is None else gw * q * a
    d_w = None if w is None else g * _value(kind, x, pq, qc)
    return d_x, d_q, d_qc, d_pw, d_w


def _nll_primal(kind: Kind, x, q, qc, pw, w) -> jax.Array:
    return nll_fwd(kind, x, q, qc, pw, w)[0]


#: Reverse-mode-only kernel: ``nll_fwd``/``nll_bwd`` registered with ``jax.custom_vjp``.
nll_vjp = jax.custom_vjp(_nll_primal, nondiff_argnums=(0,))
nll_vjp.defvjp(nll_fwd, nll_bwd)


@partial(jax.custom_jvp, nondiff_argnums=(0, 6))
def nll(kind: Kind, x, q, qc, pw, w, recompute: bool = False) -> jax.Array:
    """Elementwise ``w * (pw * q * A(x) + qc * B(x))``, differentiable in every mode.

    Args:
      kind: ``"logits"`` or ``"probs"``.
      x, q, qc, pw, w: arrays of one shape in one floating dtype (``pw``, ``w`` may be None).
      recompute: keep XLA from sharing ``exp(-|x|)`` between the value and the derivative.
        Shared (the default), it is computed once into the derivative's own output buffer:
        fastest where compute dominates (CPU) and free of temporaries when the derivative has
        the compute dtype. When the caller casts the derivative to a narrower dtype
        (bfloat16 logits) the shared buffer cannot be reused and would be an N-sized float32
        temporary, so there each pass recomputes it instead.

    Returns:
      The elementwise loss, shaped like ``x``.
    """
    return _nll_primal(kind, x, q, qc, pw, w)


@partial(nll.defjvp, symbolic_zeros=True)
def _nll_jvp(kind: Kind, recompute: bool, primals, tangents):
    out, res = nll_fwd(kind, *primals)
    if recompute:
        res = lax.optimization_barrier(res)
    return out, _contract(out, nll_bwd(kind, res, jnp.ones((), out.dtype)), tangents)


def _contract(out: jax.Array, coefficients, tangents) -> jax.Array:
    """The tangent of an elementwise function: ``sum(c * t)`` over the inputs.

    ``coefficients`` holds the diagonal of each input's Jacobian (``None`` for an absent
    input); tangents that are symbolic zeros are skipped, so their coefficients are never
    needed and XLA drops them.
    """
    terms = [
        c * t
        for c, t in zip(coefficients, tangents, strict=True)
        if c is not None and not isinstance(t, jax.custom_derivatives.SymbolicZero)
    ]
    return sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)


def _focal_parts(x, y, gamma, int_gamma: int | None):
    """Value and partial derivatives of :math:`(1-p_t)^\\gamma \\operatorname{BCE}(x, y)`.

    The cross-entropy and its slope are the kernel's own (:func:`_value`, :func:`_slope`).
    :math:`u = 1 - p_t = y\\sigma(-x) + (1-y)\\sigma(x)` is built from the two sigmoids,
    never as ``1 - p_t``, so it does not round to 0 at :math:`|x| \\approx 17`; where even
    they underflow (hard labels, :math:`|x| \\gtrsim 87`), :math:`\\log u` is taken from
    softplus instead. At :math:`x = \\pm\\infty` the factor takes its limit and the derivative
    is the limit :math:`u^\\gamma\\,\\partial_x \\operatorname{BCE}`.

    Returns:
      ``(value, d/dx, d/dy, d/dgamma)``.
    """
    qc = 1.0 - y
    ce = _value("logits", x, y, qc)
    d_ce = _slope("logits", x, y, qc)
    is_inf = jnp.isinf(x)
    t = LogitTerms(jnp.where(is_inf, 0.0, x))  # a finite stand-in: no 0 * inf below
    # u = sigmoid(|x|) * den, and d(log u)/dx = (qc - y) sigmoid(-|x|) / den: few roundings.
    den = jnp.where(x >= 0, y * t.exp_neg_abs + qc, y + qc * t.exp_neg_abs)
    u = jnp.where(is_inf, jnp.where(x > 0, qc, y), t.sigmoid_big * den)
    normal = u >= jnp.finfo(x.dtype).tiny
    base = jnp.where(normal, u, 1.0)
    power = lax.integer_pow(base, int_gamma) if int_gamma is not None else base**gamma
    log_tail = -(y * t.softplus_pos + qc * t.softplus_neg)  # log u for hard labels
    limit = jnp.where(is_inf, jnp.where(gamma == 0, 1.0, 0.0), jnp.exp(gamma * log_tail))
    m = jnp.where(normal, power, limit)
    value = safe_mul(m, ce)
    safe_den = jnp.where(normal, den, 1.0)
    dlogu_dx = jnp.where(
        normal, (qc - y) * t.sigmoid_small / safe_den, qc * t.sigmoid_neg - y * t.sigmoid_pos
    )
    dlogu_dy = jnp.where(normal, (t.sigmoid_neg - t.sigmoid_pos) / base, -jnp.where(is_inf, 0.0, x))
    ce_fin = jnp.where(is_inf, 0.0, ce)
    d_x = m * (d_ce + gamma * dlogu_dx * ce_fin)
    d_y = safe_mul(m, -x) + m * gamma * dlogu_dy * ce_fin  # d ce / dy = A - B = -x
    log_u = jnp.where(normal, jnp.log(base), jnp.where(is_inf, -jnp.inf, log_tail))
    d_gamma = safe_mul(value, log_u)
    return value, d_x, d_y, d_gamma


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def focal_term(x, y, gamma, int_gamma: int | None = None) -> jax.Array:
    """Elementwise :math:`(1 - p_t)^\\gamma\\,\\operatorname{BCE}(x, y)`, every mode.

    Args:
      x: logits in the compute dtype.
      y: labels in [0, 1], same shape and dtype.
      gamma: scalar focusing exponent, ``gamma >= 0`` (may be traced).
      int_gamma: ``gamma`` as a Python int when it is a small concrete integer, so the
        power is a few exact multiplications; else ``None``.

    Returns:
      The elementwise modulated cross-entropy (no alpha, no weights).
    """
    return _focal_parts(x, y, gamma, int_gamma)[0]


@partial(focal_term.defjvp, symbolic_zeros=True)
def _focal_term_jvp(int_gamma, primals, tangents):
    value, *coefficients = _focal_parts(*primals, int_gamma)
    return value, _contract(value, coefficients, tangents)
