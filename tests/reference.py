"""Independent reference values: mpmath at 200 bits, never the code under test.

The loss is evaluated from its definition, ``-w[pw*q*log(sigmoid(z)) + qc*log(1 - sigmoid(z))]``,
with the smoothed label taken exactly from the floating-point inputs, and compared in units in
the last place (ulps) of the exact value.
"""

from __future__ import annotations

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


def focal(z, y, *, alpha=0.25, gamma=2.0):
    """Exact torchvision sigmoid focal loss and d/dz (derivative by mpmath.diff)."""

    def value(zz):
        p = sigmoid(zz)
        yy = mpmath.mpf(float(y))
        ce = yy * softplus(-zz) + (1 - yy) * softplus(zz)
        one_minus_pt = yy * (1 - p) + (1 - yy) * p
        loss = ce * one_minus_pt ** mpmath.mpf(float(gamma))
        if alpha is not None and alpha >= 0:
            a = mpmath.mpf(float(alpha))
            loss *= a * yy + (1 - a) * (1 - yy)
        return loss

    z = mpmath.mpf(float(z))
    return value(z), mpmath.diff(value, z)


def ulp(x, dtype) -> mpmath.mpf:
    """The spacing of floats of ``dtype`` at ``x``, floored at the smallest normal number.

    XLA flushes subnormal results to zero (on CPU and GPU alike), so an intermediate near
    ``exp(-88)`` in float32 becomes 0 even when weights would scale the final value back into
    the normal range; the floor makes such a flush cost at most a unit or so, while every
    value above ~1e-31 (float32) is still measured in its own ulps.
    """
    tiny = mpmath.mpf(float(ml_dtypes.finfo(dtype).tiny))
    ax = abs(mpmath.mpf(x))
    if ax == 0:
        return tiny
    exact_ulp = mpmath.ldexp(1, int(mpmath.floor(mpmath.log(ax, 2))) - (mantissa_bits(dtype) - 1))
    return max(exact_ulp, tiny)


def ulp_error(got, exact, dtype, *, floor=0) -> float:
    """``|got - exact|`` in ulps of ``max(|exact|, floor)``."""
    got = mpmath.mpf(float(got))
    unit = max(ulp(exact, dtype), ulp(floor, dtype) if floor else 0)
    return float(abs(got - exact) / unit)
