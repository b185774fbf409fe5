"""The focal loss' label slopes of d/dy and d/dgamma beyond :math:`|x| = 2^{64}`, in closed
form.

There the kernel runs at :math:`x' = \\pm 2^{64}` and scales its results by
``stretch`` :math:`= |x|/2^{64}` (``jaxbce._focal._near``): the label coefficient is
:math:`\\partial_y\\ell = 2^{-shift}\\,\\mathrm{stretch}\\cdot d`, where :math:`d` is the
kernel's d/dy at :math:`x'` times :math:`2^{shift}`. Autodiff of :math:`d` in ``y`` failed
twice there:

* reverse over reverse pushed the cotangent of :math:`d`, :math:`2^{-shift}\\,\\mathrm{stretch}`
  (up to :math:`2^{960}`), back through the kernel, whose intermediate slopes are of size
  :math:`|x'| = 2^{64}`: their products overflowed, and ``inf`` met zero slopes (NaN at
  ``x = finfo.max`` at every label with :math:`\\gamma = 0`, :math:`\\alpha = 1/4`, and at
  wrong hard and soft labels otherwise, where the exact d2/dy2 is finite);
* its terms, of size :math:`|x|`, cancel where :math:`B = 2 a' n + \\gamma\\alpha_t` does
  (:func:`~jaxbce._focal_near.cancelling_b`; :math:`\\alpha = 1/4`, :math:`\\gamma = 1/2`
  at :math:`y = 0.3`), and float32 kept an ulp of them: 5.96e22 for -4.08e22 at
  :math:`x = -10^{30}` (hessian), 0 by reverse over reverse.

:func:`beyond_2_to_64` gives :math:`d` the slope :math:`k\\,dy` there, :math:`k` a value
(:func:`label_curvature`), so that every mode multiplies the cotangent by :math:`k` once and
never enters the kernel with it. Beyond :math:`2^{64}`, :math:`\\sigma(-|x|)` and
:math:`\\operatorname{softplus}(-|x|)` are 0 in both dtypes, :math:`u = n` (the weight of
the big logistic) and :math:`\\ell = \\alpha_t n^{\\gamma + 1} |x|`, whence

.. math::

    \\partial_y^2\\ell = (\\gamma + 1)\\,n^{\\gamma - 1} B\\,|x|,\\qquad k = (\\gamma + 1) B
    \\,(m / n)\\,|x'|\\quad (n > 0),

with :math:`m = n^\\gamma 2^{shift}` the kernel's scaled power (:math:`m/n` is normal where
:math:`n^{\\gamma-1}` alone may not be) and :math:`B` exact where it cancels. At a right hard
label (:math:`n = 0`, :math:`u = \\sigma(-|x|)` not 0) the kernel's d/dy is
:math:`\\alpha_t m_y (-x') + \\gamma\\alpha_t m_y (ce/u)\\,u_y + \\alpha_t' m_y\\,ce` with
:math:`m_y`, :math:`ce/u` and :math:`u_y` constant in ``y`` (:math:`m`'s label slope comes
unscaled, from logs, ``_sure_label_slopes``) and :math:`ce` of slope :math:`-x'`:
:math:`k = \\alpha_t' m_y (\\gamma (ce/u)\\,u_y - 2 x')`, what autodiff formed, without the
cotangent's trip through the kernel. The derivatives of :math:`d` in :math:`\\gamma` and
:math:`\\alpha` (second derivatives in them, where they are differentiated) come from a JVP
of the kernel's d/dy, as values times the tangents.

The coefficient d/dgamma, :math:`\\alpha_t n^{\\gamma+1}\\log(n)\\,|x|` there, has its
label slope in closed form the same way (:func:`gamma_label_curvature`): autodiff multiplied
its terms, of size :math:`|x|` times logs, by ``stretch`` before adding them, and they
overflowed to :math:`\\pm\\infty` near ``finfo.max`` where their sum is finite.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from jaxbce._focal_near import cancelling_b


class HugeParts(NamedTuple):
    """The kernel's values at :math:`x'` that :func:`label_curvature` reads."""

    sure: jax.Array  # a right hard label: n = 0
    m: jax.Array  # u^gamma 2^shift
    m_y: jax.Array  # m without its label slope at a right hard label
    ce_over_u: jax.Array
    du_dy: jax.Array  # sigma(-x') - sigma(x')
    d_at: jax.Array  # d alpha_t / dy


def label_curvature(
    x: jax.Array,
    y: jax.Array,
    gamma: jax.Array,
    alpha: jax.Array,
    stretch: jax.Array,
    p: HugeParts,
) -> jax.Array:
    """:math:`k`, the slope in ``y`` of the kernel's d/dy (times :math:`2^{shift}`) at
    :math:`x = \\pm 2^{64}` (see the module docstring), kept finite so that a zero tangent
    never meets ``inf``. Where it is capped the exact second derivative, :math:`k` times
    ``stretch`` :math:`\\ge 1` and :math:`2^{-shift}`, overflows too if :math:`shift = 0`;
    with :math:`shift > 0` (:math:`n^\\gamma < 2^{-64}`, so :math:`m < 2^{-63}`),
    :math:`|k| < 2 (\\gamma + 1) |B| / n` is capped only for :math:`n < 2 (\\gamma + 1)
    |B| / \\mathrm{finfo.max}` (below :math:`10^{-37}` in float32), where the result is then
    too small."""
    del stretch  # d/dy at x' is scaled by it afterwards
    b, n, _, _ = cancelling_b(x < 0, y, gamma, alpha)
    n_safe = jnp.where(p.sure, 1.0, n)
    soft = ((gamma + 1.0) * b) * (p.m / n_safe) * jnp.abs(x)
    sure = p.d_at * (p.m_y * (gamma * p.ce_over_u * p.du_dy - 2.0 * x))
    fi = jnp.finfo(x.dtype)
    return jnp.clip(jnp.where(p.sure, sure, soft), -fi.max, fi.max)


def gamma_label_curvature(
    x: jax.Array,
    y: jax.Array,
    gamma: jax.Array,
    alpha: jax.Array,
    stretch: jax.Array,
    p: HugeParts,
) -> jax.Array:
    """The slope in ``y`` of d/dgamma, :math:`\\alpha_t n^{\\gamma + 1}\\log(n)\\,|x|`,
    beyond :math:`2^{64}` (:math:`n > 0`; ``x`` :math:`= x'`, :math:`|x| = 2^{64}`
    ``stretch``):

    .. math::

        \\partial_y\\partial_\\gamma\\ell = \\pm |x|\\, n^\\gamma\\,\\bigl(a'_n\\, n \\log n
        + \\alpha_t ((\\gamma + 1)\\log n + 1)\\bigr),

    :math:`+` for :math:`x < 0` (:math:`n = y`), :math:`a'_n = d\\alpha_t/dn`. Its terms,
    of size :math:`|x|` times logs, overflowed near ``finfo.max`` where their sum does not
    (autodiff multiplied by ``stretch`` first): the bracket is formed first, then times
    :math:`n^\\gamma 2^{64}` and ``stretch`` (from logs, :math:`n^\\gamma |x|` at once, where
    :math:`n^\\gamma 2^{64}` would underflow), so the result overflows only where the exact
    one does; there it is capped at ``finfo.max``, as :func:`label_curvature` is."""
    del p
    _, n, at, a_n = cancelling_b(x < 0, y, gamma, alpha)
    log_n = jnp.log(jnp.where(n > 0.0, n, 1.0))
    bracket = a_n * n * log_n + at * ((gamma + 1.0) * log_n + 1.0)
    # n^gamma |x|: exp(0) = 1 exactly at n = 1, where the result is |x| (finfo.max at
    # most); from logs, with stretch, where n^gamma 2^64 alone would fall below the smallest
    # normal number (it gave 0 for -2.1e-28 at x = -1e30, y = 1e-30, gamma 2 in float32).
    g_log = gamma * log_n
    log_x = jnp.log(stretch) + 64.0 * np.log(2.0)
    product = jnp.where(
        g_log > -80.0,
        (bracket * (jnp.exp(jnp.maximum(g_log, -80.0)) * 2.0**64)) * stretch,
        bracket * jnp.exp(g_log + log_x),
    )
    # Capped, as in label_curvature: where the exact value overflows, an inf met a zero
    # tangent in the hessian (NaN for a finite d2/dgamma2 at x = finfo.max, gamma 0).
    fi = jnp.finfo(x.dtype)
    return jnp.clip(jnp.where(x < 0.0, 1.0, -1.0) * product, -fi.max, fi.max)


def _given(t: Any) -> bool:
    return not isinstance(t, SymbolicZero)


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def beyond_2_to_64(
    slope_fn: Callable[..., jax.Array],
    curvature_fn: Callable[..., jax.Array],
    d: jax.Array,
    far: jax.Array,
    parts: HugeParts,
    x: jax.Array,
    y: jax.Array,
    gamma: jax.Array,
    alpha: jax.Array,
    stretch: jax.Array,
) -> jax.Array:
    """``d`` itself, a derivative of the kernel at ``x`` :math:`= x'` (d/dy times
    :math:`2^{shift}`, or d/dgamma), which ``slope_fn(x, y, gamma, alpha, stretch)``
    computes; where ``far`` (:math:`|x| > 2^{64}` beyond the kernel) its derivative is
    ``curvature_fn(x, y, gamma, alpha, stretch, parts)`` times ``dy`` (:func:`label_curvature`,
    :func:`gamma_label_curvature`) plus its slopes in :math:`\\gamma`, :math:`\\alpha` and
    ``stretch`` times their tangents (:math:`x'` is a constant there), elsewhere its own.
    Those slopes are values too, JVPs of ``slope_fn`` with unit tangents, computed only where
    their input is differentiated: a JVP with the tangents themselves would send a reverse
    pass' cotangent through the kernel again. A rule, so that the value and first-derivative
    programs compute no slope.
    """
    del slope_fn, curvature_fn, far, parts, x, y, gamma, alpha, stretch
    return d


@partial(beyond_2_to_64.defjvp, symbolic_zeros=True)
def _beyond_2_to_64_jvp(
    slope_fn: Callable[..., jax.Array],
    curvature_fn: Callable[..., jax.Array],
    primals: tuple[Any, ...],
    tangents: tuple[Any, ...],
) -> tuple[jax.Array, jax.Array]:
    d, far, parts, x, y, gamma, alpha, stretch = primals
    t_d, _, _, _, t_y, t_gamma, t_alpha, t_stretch = tangents
    far_t = jnp.zeros_like(d)
    if _given(t_y):
        k = curvature_fn(x, y, gamma, alpha, stretch, parts)
        far_t = far_t + jnp.where(far, k, 0.0) * t_y
    # The other slopes as values too (unit tangents), each times its tangent.
    x_safe = jnp.where(far, x, 2.0**64)  # finite where not read
    for i, t in ((2, t_gamma), (3, t_alpha), (4, t_stretch)):
        if _given(t):
            args = (x_safe, y, gamma, alpha, stretch)
            unit = tuple(
                jnp.ones_like(a) if j == i else jnp.zeros_like(a) for j, a in enumerate(args)
            )
            slope = jax.jvp(slope_fn, args, unit)[1]
            far_t = far_t + jnp.where(far, slope, 0.0) * t
    out = jnp.where(far, far_t, t_d if _given(t_d) else 0.0)
    primal = beyond_2_to_64(slope_fn, curvature_fn, d, far, parts, x, y, gamma, alpha, stretch)
    return primal, out
