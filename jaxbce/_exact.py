"""Float64 references and ulp errors for the self-check, computed on the device under x64.

Nothing here calls jaxbce: the references are the textbook stable formulas

* ``softplus(z) = max(z, 0) + log1p(exp(-|z|))``,
* ``sigmoid(z) = exp(-|z|) / (1 + exp(-|z|))`` for ``z < 0``, ``1 / (1 + exp(-|z|))`` else,
* ``-log(p)`` and ``-log1p(-p)``, each clamped at 100 (PyTorch ``BCELoss``),

evaluated in float64. Each is a handful of correctly rounded or nearly correctly rounded
float64 operations on a float32 (or narrower) input, so its relative error is a few times
2^-53, i.e. about 2^-29 of a float32 ulp: exact enough to score float32. (XLA's float64
``log1p`` is the least accurate piece; ``tests/test_check.py`` bounds every reference's
error against 200-bit mpmath at 2^-40 relative, 2^-17 of a float32 ulp.) Inputs and
labels enter as the values of their dtype; the sweeps pass options (``pos_weight``,
``label_smoothing``, ``gamma``, ...) as the float32 values that the kernel computes with.

All functions here must be traced with ``jax.enable_x64(True)``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
from jax import lax

#: each reference returns ``(loss, d/dx, gradient scale floor)`` in float64
Reference = tuple[jax.Array, jax.Array, jax.Array]


def _format(dtype: Any) -> tuple[int, float, float]:
    """``(precision p, smallest normal, overflow threshold)`` of a floating dtype.

    A value at or above the threshold, ``(2 - 2^-p) 2^emax``, rounds to infinity.
    """
    fi = ml_dtypes.finfo(dtype)
    p = int(fi.nmant) + 1
    emax = math.frexp(float(fi.max))[1] - 1
    return p, float(fi.tiny), (2.0 - 2.0**-p) * 2.0**emax


def ulp(scale: jax.Array, dtype: Any, *, flush: bool = False) -> jax.Array:
    """The spacing of ``dtype``'s numbers at ``|scale|``: ``2^(floor(log2|scale|) - (p - 1))``
    for precision p, ``2^(emin - (p - 1))`` (the subnormal spacing) below the smallest normal
    number ``2^emin``. With ``flush`` (a device that flushes subnormals to zero, where the
    numbers below ``2^emin`` are 0 alone) a scale below the smallest normal number has the
    unit ``2^emin``. ``scale = 0`` gives the unit of the smallest scale."""
    p, tiny, _ = _format(dtype)
    emin = math.frexp(tiny)[1] - 1
    bits = lax.bitcast_convert_type(jnp.abs(scale).astype(jnp.float64), jnp.uint64)
    exponent = ((bits >> 52) & 0x7FF).astype(jnp.int64) - 1023  # floor(log2|scale|)
    # float64 results (not scored on a device) keep the smallest normal float64 as floor.
    exponent = jnp.clip(jnp.maximum(exponent, emin) - (p - 1), -1022, 1023)
    unit = lax.bitcast_convert_type((exponent + 1023).astype(jnp.uint64) << 52, jnp.float64)
    if flush:
        unit = jnp.where(jnp.abs(scale) < tiny, tiny, unit)
    return unit


def ulp_error(
    got: jax.Array,
    exact: jax.Array,
    dtype: Any,
    floor: jax.Array | None = None,
    *,
    flush: bool = False,
) -> jax.Array:
    """``|got - exact| / ulp(max(|exact|, floor))`` in ulps of ``dtype``, as float64.

    ``floor`` is the magnitude of the terms a result is the difference of (soft-label
    gradients): where they cancel, the error is measured against them. Special values: 0 when
    ``got == exact`` (infinities included), when both are NaN, and when ``got`` is the
    infinity that ``exact`` correctly rounds to in ``dtype``; ``inf`` when only one is NaN.
    With ``flush`` (a device that flushes subnormals to zero) a 0 for an exact value below
    the smallest normal number is also 0: it is the flush-to-zero rounding of that value.
    """
    _, tiny, overflow = _format(dtype)
    got = got.astype(jnp.float64)
    scale = jnp.abs(exact) if floor is None else jnp.maximum(jnp.abs(exact), floor)
    err = jnp.abs(got - exact) / ulp(scale, dtype, flush=flush)
    rounds_to_inf = (jnp.abs(exact) >= overflow) & (got == jnp.sign(exact) * jnp.inf)
    zero = (got == exact) | (jnp.isnan(got) & jnp.isnan(exact)) | rounds_to_inf
    if flush:
        zero = zero | ((got == 0) & (jnp.abs(exact) < tiny))
    err = jnp.where(zero, 0.0, err)
    return jnp.where(jnp.isnan(err), jnp.inf, err)


def _logistic(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``softplus(z), softplus(-z), sigmoid(z), sigmoid(-z)`` from one exp and one log1p."""
    e = jnp.exp(-jnp.abs(z))
    log_term = jnp.log1p(e)
    big, small = 1.0 / (1.0 + e), e / (1.0 + e)
    positive = z >= 0
    return (
        jnp.maximum(z, 0.0) + log_term,
        jnp.maximum(-z, 0.0) + log_term,
        jnp.where(positive, big, small),
        jnp.where(positive, small, big),
    )


def _smoothed(y: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    return y * (1.0 - eps) + eps / 2, (1.0 - y) * (1.0 - eps) + eps / 2


def sigmoid_bce(
    z: jax.Array,
    y: jax.Array,
    *,
    pos_weight: float = 1.0,
    weights: float = 1.0,
    label_smoothing: float = 0.0,
) -> Reference:
    """``w[pw q softplus(-z) + qc softplus(z)]`` and ``w[qc sigmoid(z) - pw q sigmoid(-z)]``.

    The floor is ``max(|w qc sigmoid(z)|, |w pw q sigmoid(-z)|)``; it equals ``|d/dz|`` for
    hard labels, where one term is 0. A zero coefficient contributes 0 even at ``z = ±inf``.
    """
    sp_pos, sp_neg, s_pos, s_neg = _logistic(z)
    q, qc = _smoothed(y, label_smoothing)
    a = pos_weight * q
    loss = weights * (jnp.where(a == 0, 0.0, a * sp_neg) + jnp.where(qc == 0, 0.0, qc * sp_pos))
    up, down = weights * qc * s_pos, weights * a * s_neg
    return loss, up - down, jnp.maximum(jnp.abs(up), jnp.abs(down))


def binary_cross_entropy(
    p: jax.Array, y: jax.Array, *, weights: float = 1.0, label_smoothing: float = 0.0
) -> Reference:
    """PyTorch ``BCELoss``: ``-w[q max(log p, -100) + qc max(log1p(-p), -100)]``.

    The derivative is ``w[-q/p + qc/(1-p)]`` with 0 for a term whose log is clamped; the
    floor is ``max(|w q/p|, |w qc/(1-p)|)`` over the unclamped terms.
    """
    q, qc = _smoothed(y, label_smoothing)
    log_p, log_1mp = jnp.log(p), jnp.log1p(-p)
    loss = -weights * (q * jnp.maximum(log_p, -100.0) + qc * jnp.maximum(log_1mp, -100.0))
    d_a = jnp.where(log_p > -100, -weights * q / p, 0.0)
    d_b = jnp.where(log_1mp > -100, weights * qc / (1.0 - p), 0.0)
    return loss, d_a + d_b, jnp.maximum(jnp.abs(d_a), jnp.abs(d_b))


def focal(
    z: jax.Array,
    y: jax.Array,
    *,
    gamma: float | jax.Array = 2.0,
    alpha: float | jax.Array | None = 0.25,
) -> Reference:
    """Sigmoid focal loss ``alpha_t u^gamma ce`` with ``u = y sigmoid(-z) + (1-y) sigmoid(z)``.

    ``u^gamma = exp(gamma log u)``, with ``log u = -softplus(±z)`` for hard labels so that it
    never underflows. ``d/dz = alpha_t u^gamma [gamma (du/dz / u) ce + (1-y) sigmoid(z)
    - y sigmoid(-z)]``; the floor is the largest magnitude of those three terms. Finite ``z``
    only (at ``±inf`` the loss is ``0 * inf``).
    """
    sp_pos, sp_neg, s_pos, s_neg = _logistic(z)
    ce = y * sp_neg + (1.0 - y) * sp_pos
    u = y * s_neg + (1.0 - y) * s_pos
    hard_pos, hard_neg = y == 1, y == 0
    log_u = jnp.where(hard_pos, -sp_pos, jnp.where(hard_neg, -sp_neg, jnp.log(u)))
    dlog_u = jnp.where(
        hard_pos, -s_pos, jnp.where(hard_neg, s_neg, (1.0 - 2.0 * y) * s_pos * s_neg / u)
    )
    if alpha is None:
        at: Any = 1.0
    else:  # a negative alpha turns the weighting off, as in sigmoid_focal_loss
        alpha = jnp.asarray(alpha, jnp.float64)
        at = jnp.where(alpha < 0, 1.0, alpha * y + (1.0 - alpha) * (1.0 - y))
    scale = at * jnp.exp(gamma * log_u)
    t_mod, t_up, t_down = scale * gamma * dlog_u * ce, scale * (1.0 - y) * s_pos, scale * y * s_neg
    floor = jnp.maximum(jnp.abs(t_mod), jnp.maximum(jnp.abs(t_up), jnp.abs(t_down)))
    return scale * ce, t_mod + t_up - t_down, floor
