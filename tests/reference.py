"""Independent reference values: mpmath at 200 bits, never the code under test.

The loss is evaluated from its definition, ``-w[pw*q*log(sigmoid(z)) + qc*log(1 - sigmoid(z))]``,
with the smoothed label taken exactly from the floating-point inputs, and compared in units in
the last place (ulps) of the exact value.
"""

from __future__ import annotations

import functools

import ml_dtypes
import mpmath
import numpy as np

mpmath.mp.prec = 200

_BITS = {np.dtype(np.float64): 53, np.dtype(np.float32): 24}
_BITS_NAMED = {"bfloat16": 8, "float16": 11}


def mantissa_bits(dtype) -> int:
    dt = np.dtype(dtype)
    return _BITS.get(dt) or _BITS_NAMED[dt.name]


def smoothed(y, eps):
    y, eps = mpmath.mpf(float(y)), mpmath.mpf(float(eps))
    return y * (1 - eps) + eps / 2, (1 - y) * (1 - eps) + eps / 2


def sigmoid(z):
    return 1 / (1 + mpmath.exp(-z))


def softplus(z):
    return mpmath.log1p(mpmath.exp(z)) if z < 0 else z + mpmath.log1p(mpmath.exp(-z))


def bce(z, y, *, pw=1.0, w=1.0, eps=0.0):
    """Exact loss and d/dz for one element with finite logit ``z``."""
    z = mpmath.mpf(float(z))
    q, qc = smoothed(y, eps)
    pw, w = mpmath.mpf(float(pw)), mpmath.mpf(float(w))
    loss = w * (pw * q * softplus(-z) + qc * softplus(z))
    grad = w * (qc * sigmoid(z) - pw * q * sigmoid(-z))
    return loss, grad


def bce_probs(p, y, *, w=1.0, eps=0.0):
    """Exact PyTorch-BCELoss value and derivative (each log clamped at -100)."""
    p = mpmath.mpf(float(p))
    q, qc = smoothed(y, eps)
    w = mpmath.mpf(float(w))
    lp = mpmath.log(p) if p > 0 else mpmath.mpf("-inf")
    l1p = mpmath.log(1 - p) if p < 1 else mpmath.mpf("-inf")
    a, b = max(lp, -100), max(l1p, -100)
    da = 1 / p if lp > -100 else 0
    db = -1 / (1 - p) if l1p > -100 else 0
    return -w * (q * a + qc * b), -w * (q * da + qc * db)


def focal_value(z, y, *, alpha=0.25, gamma=2.0):
    """Exact torchvision sigmoid focal loss at the mpf ``z`` (``y`` an mpf too, as
    ``mpmath.diff`` in ``y`` passes it, or a float)."""
    p = sigmoid(z)
    yy = y if isinstance(y, mpmath.mpf) else mpmath.mpf(float(y))
    ce = yy * softplus(-z) + (1 - yy) * softplus(z)
    one_minus_pt = yy * (1 - p) + (1 - yy) * p
    loss = ce * one_minus_pt ** mpmath.mpf(float(gamma))
    if alpha is not None and alpha >= 0:
        a = mpmath.mpf(float(alpha))
        loss *= a * yy + (1 - a) * (1 - yy)
    return loss


def focal_gamma_slope(z, y, *, alpha=0.25, gamma=2.0):
    """Exact d/dgamma of the focal loss, its value times ``log(1 - p_t)``, at the mpf ``z``."""
    yy = y if isinstance(y, mpmath.mpf) else mpmath.mpf(float(y))
    p = sigmoid(z)
    u = yy * (1 - p) + (1 - yy) * p
    return focal_value(z, yy, alpha=alpha, gamma=gamma) * mpmath.log(u)


def focal(z, y, *, alpha=0.25, gamma=2.0):
    """Exact torchvision sigmoid focal loss and d/dz (derivative by mpmath.diff)."""
    z = mpmath.mpf(float(z))
    value = functools.partial(focal_value, y=y, alpha=alpha, gamma=gamma)
    return value(z), mpmath.diff(value, z)


def ulp(x, dtype) -> mpmath.mpf:
    """The spacing of floats of ``dtype`` at ``x``: its own ulp for ``|x|`` at or above the
    smallest normal number; the smallest normal number below it, where XLA:CPU, which
    flushes subnormals to zero, has no other number than 0."""
    tiny = mpmath.mpf(float(ml_dtypes.finfo(dtype).tiny))
    ax = abs(mpmath.mpf(x))
    if ax < tiny:
        return tiny
    return mpmath.ldexp(1, int(mpmath.floor(mpmath.log(ax, 2))) - (mantissa_bits(dtype) - 1))


def ulp_error(got, exact, dtype, *, floor=0) -> float:
    """``|got - exact|`` in ulps of ``max(|exact|, floor)``."""
    got = mpmath.mpf(float(got))
    unit = max(ulp(exact, dtype), ulp(floor, dtype) if floor else 0)
    return float(abs(got - exact) / unit)


# ------------------------------------------------------------------ curvature
#
# Closed forms of the first and second derivatives, evaluated at 200 bits. Every factor is
# taken without cancellation: sigma(z) and sigma(-z) each as 1/(1 + e^-+z) (never 1 - p),
# A - B = -z exactly, and d(log-likelihood)/dz = (1 - y) sigma(z) - y sigma(-z), so a
# derivative as small as e^-10000 keeps all its digits. ``tests/test_curvature.py`` checks
# these forms against mpmath.diff of the values.


def _sigmoids(z):
    return 1 / (1 + mpmath.exp(-z)), 1 / (1 + mpmath.exp(z))


def bce_curvature(z, y, *, pw=1.0, w=1.0, eps=0.0) -> dict:
    """Exact ``d/dz, d/dy, d2/dz2, d2/dzdy, d2/dy2`` of the sigmoid cross-entropy (finite
    ``z``; linear in ``y``, so ``d2/dy2 = 0``)."""
    z = mpmath.mpf(float(z))
    q, qc = smoothed(y, eps)
    pw, w, keep = mpmath.mpf(float(pw)), mpmath.mpf(float(w)), 1 - mpmath.mpf(float(eps))
    sp, sm = _sigmoids(z)
    return {
        "dz": w * (qc * sp - pw * q * sm),
        "dy": w * keep * (pw * softplus(-z) - softplus(z)),
        "dzz": w * (qc + pw * q) * sp * sm,
        "dzy": -w * keep * (pw * sm + sp),
        "dyy": mpmath.mpf(0),
    }


def bce_probs_curvature(p, y, *, w=1.0, eps=0.0) -> dict:
    """Exact ``d/dp, d/dy, d2/dp2, d2/dpdy, d2/dy2`` of PyTorch's BCELoss, 0 through a
    clamped log (linear in ``y``: ``d2/dy2 = 0``)."""
    p = mpmath.mpf(float(p))
    q, qc = smoothed(y, eps)
    w, keep = mpmath.mpf(float(w)), 1 - mpmath.mpf(float(eps))
    lp = mpmath.log(p) if p > 0 else mpmath.mpf("-inf")
    l1p = mpmath.log(1 - p) if p < 1 else mpmath.mpf("-inf")
    in_a, in_b = lp > -100, l1p > -100
    inv_p = 1 / p if in_a else 0  # d max(log p, -100) / dp
    inv_1mp = 1 / (1 - p) if in_b else 0  # -d max(log(1 - p), -100) / dp
    return {
        "dz": -w * (q * inv_p - qc * inv_1mp),
        "dy": -w * keep * (max(lp, -100) - max(l1p, -100)),
        "dzz": w * (q * inv_p**2 + qc * inv_1mp**2),
        "dzy": -w * keep * (inv_p + inv_1mp),
        "dyy": mpmath.mpf(0),
    }


def focal_curvature(z, y, *, alpha=0.25, gamma=2.0) -> dict:
    """Exact ``d/dz, d/dy, d2/dz2, d2/dzdy, d2/dy2`` of the torchvision focal loss (finite
    ``z``).

    At 200 bits plus ``|z| log2(e)`` (to ``|z| = 1100``): at a wrong hard label the
    :math:`O(1)` terms of ``d2/dzdy`` may cancel exactly (``y = 1``, ``alpha = 0.25``,
    ``gamma = 1``), leaving :math:`-|z| e^{-|z|}/4`, which 200 bits gave as 0 from
    ``|z| = 140`` on (and 6e-10 off at 122).
    """
    extra = int(min(abs(float(z)), 1100.0) * 1.4427) + 1
    with mpmath.workprec(mpmath.mp.prec + extra):
        return _focal_curvature(z, y, alpha=alpha, gamma=gamma)


def _focal_curvature(z, y, *, alpha, gamma) -> dict:
    """:func:`focal_curvature` at the working precision.

    ``F = a_t P ce`` with ``P = u^gamma``, ``u = 1 - p_t = y s_- + (1 - y) s_+``,
    ``s_+- = sigma(+-z)``, ``ce = y A + (1 - y) B``, ``A = softplus(-z)``,
    ``B = softplus(z)``, and the product rule for each derivative.
    """
    z, y, g = mpmath.mpf(float(z)), mpmath.mpf(float(y)), mpmath.mpf(float(gamma))
    sp, sm = _sigmoids(z)
    if alpha is None or alpha < 0:
        at, at_y = mpmath.mpf(1), mpmath.mpf(0)
    else:
        a = mpmath.mpf(float(alpha))
        at, at_y = a * y + (1 - a) * (1 - y), 2 * a - 1
    u = y * sm + (1 - y) * sp
    u_z = (1 - 2 * y) * sp * sm
    u_zz = -(1 - 2 * y) * sp * sm * mpmath.tanh(z / 2)  # (sm - sp) = -tanh(z/2)
    u_y = -mpmath.tanh(z / 2)
    u_zy = -2 * sp * sm
    ce = y * softplus(-z) + (1 - y) * softplus(z)
    ce_z = (1 - y) * sp - y * sm
    ce_zz = sp * sm
    ce_y, ce_zy = -z, -1
    p = u**g
    p_z = g * u ** (g - 1) * u_z
    p_zz = g * (g - 1) * u ** (g - 2) * u_z**2 + g * u ** (g - 1) * u_zz
    p_y = g * u ** (g - 1) * u_y
    p_zy = g * (g - 1) * u ** (g - 2) * u_z * u_y + g * u ** (g - 1) * u_zy
    p_yy = g * (g - 1) * u ** (g - 2) * u_y**2  # u, ce and a_t are linear in y
    return {
        "dz": at * (p_z * ce + p * ce_z),
        "dy": at_y * p * ce + at * (p_y * ce + p * ce_y),
        "dzz": at * (p_zz * ce + 2 * p_z * ce_z + p * ce_zz),
        "dzy": at_y * (p_z * ce + p * ce_z)
        + at * (p_zy * ce + p_y * ce_z + p_z * ce_y + p * ce_zy),
        "dyy": 2 * at_y * (p_y * ce + p * ce_y) + at * (p_yy * ce + 2 * p_y * ce_y),
        # The size of d2/dy2's terms: where they cancel (its zeros), error is relative to it.
        "dyy_terms": max(
            abs(2 * at_y * p_y * ce),
            abs(2 * at_y * p * ce_y),
            abs(at * p_yy * ce),
            abs(2 * at * p_y * ce_y),
        ),
    }
