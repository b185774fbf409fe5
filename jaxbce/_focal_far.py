"""Float64 focal second derivatives in the logit far out: the logit's derivatives of the
first-derivative coefficients in closed form.

Far out the focal loss' curvature in :math:`x` is a product of a tiny factor
(:math:`\\sigma(-|x|)`, :math:`u^\\gamma`) and moderate ones (:math:`|x|`, :math:`\\gamma`),
and autodiff of the first-derivative code forms it factor by factor: forward mode flushed
the tiny factor (:math:`\\sigma(-708.4) \\approx 2^{-1022}`) before the product with
:math:`|x|` made it normal again (d2/dx2 0.0 for :math:`-5.9 \\cdot 10^{-306}` at
:math:`x = 708.4`, :math:`y = 0`), and reverse mode multiplied a cotangent by
:math:`2^{-shift}` and the tiny slope before the large one (d2/dxdy, reverse over reverse,
wrong from :math:`|x| \\approx 140` at :math:`\\gamma = 5`, 590 at :math:`\\gamma \\le 1`).
Where the mixed derivative is a cancellation of :math:`O(1)` terms
(:math:`\\alpha_t' + \\alpha_t(1 + \\gamma) = 0` at a wrong hard label, e.g. :math:`y = 1`,
:math:`\\alpha = 0.25`, :math:`\\gamma = 1`) the orders disagreed in every digit.

Here, for :math:`|x| \\ge` :data:`FAR_FROM` in float64, the kernel runs on the logit with its
derivative stopped, and every coefficient gains its logit derivative from the closed forms
below (:func:`far_slopes`); :math:`\\partial_x` itself takes its derivatives in ``y``,
:math:`\\gamma` and :math:`\\alpha` from them too, so that both orders of each mixed
derivative read one number. With :math:`t = |x|`, :math:`s = \\sigma(-t)`, :math:`b = 1 - s`,
:math:`u = n_s s + n_b b`, :math:`\\delta = n_b - n_s`, :math:`\\epsilon = dn_b/dy =
-\\operatorname{sign} x`, :math:`ce = n_b t + L(t)`, :math:`R = ce/u`, :math:`P = u^\\gamma`
and :math:`q = s b / u \\le 1` (:math:`u_t = \\delta\\,s b`):

.. math::

    F_{xx} &= \\alpha_t\\,P q u\\,[\\gamma(\\gamma - 1)\\delta^2 q R - \\gamma\\delta (b - s) R
        + 2\\gamma\\delta (n_b - s)/u + 1],\\\\
    F_{xy} &= \\operatorname{sign} x\\,\\bigl(P K + P q\\,[-\\alpha_t' u/b - 2\\gamma\\alpha_t
        \\epsilon + \\alpha_t'\\gamma\\delta\\,ce + \\gamma\\alpha_t\\epsilon((\\gamma - 1)
        \\delta (b - s) R + 2 ce + \\delta t)]\\bigr),\\quad
        K = \\alpha_t' n_b + \\alpha_t\\epsilon(1 + \\gamma),\\\\
    F_{x\\gamma} &= -F_x \\ell + \\operatorname{sign} x\\,\\delta\\alpha_t R\\,P q u,\\qquad
    F_{x\\alpha} = (2y - 1)\\,F_x/\\alpha_t,

(:math:`\\ell = -\\log u`), checked against ``tests/reference.py`` at 3000 bits. The
:math:`O(1)` part of :math:`F_{xy}` is the one number :math:`K`, 0 exactly where it
cancels, and the rest is :math:`O(q\\,t)`. Each product with a tiny factor is
:math:`\\pm e^{\\log(\\text{tiny}) + \\log|c|}`, from :math:`\\log q` (:math:`-L` at a right
hard label, :math:`\\ell - t - 2L` elsewhere) and :math:`\\ell`: normal wherever the result
is, within :math:`|x| \\cdot 2^{-52}` of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxbce._arithmetic import Pair, divide
from jaxbce._focal_near import weighting_on
from jaxbce._label_weights import total

#: From this :math:`|x|` on (float64, below :math:`2^{64}`), the logit derivatives of the
#: coefficients are :func:`far_slopes`' closed forms. They are exact at every :math:`x`,
#: but near 0 the kernel's label slopes are its own (``_with_label_slope``); the wrong-label
#: cancellation of :math:`F_{xy}` (:math:`K = 0`) cost the kernel's autodiff 1e-10 from
#: :math:`|x| = 15.7`, 1 % from 37 and every digit of ``hessian[y, x]`` from 100.
FAR_FROM = 8.0


def far_band(x: jax.Array, stretch: jax.Array) -> jax.Array | None:
    """Where the closed forms take over (``None`` in float32, which keeps its own code):
    finite float64 logits from :data:`FAR_FROM` up to the kernel's linear range."""
    if x.dtype != jnp.float64:
        return None
    return jnp.isfinite(x) & (jnp.abs(x) >= FAR_FROM) & (stretch == 1.0)


def sure_ratio(softplus: Pair, s: Pair) -> jax.Array:
    """:math:`R = L/s`, :math:`ce/u` at a right hard label, from the pairs of :math:`L(t)`
    and :math:`s = \\sigma(-t)`; 1 where :math:`s` is not normal. The focal kernel's
    :math:`R` for d/dy, 1 above :math:`t = 20`, is :math:`e^{-t}/2` off: 1e-10 of d2/dy2 at
    :math:`t = 20`, :math:`\\gamma = 5`."""
    ok = total(s) >= jnp.finfo(s[0].dtype).tiny
    s_safe = (jnp.where(ok, s[0], 1.0), jnp.where(ok, s[1], 0.0))
    return jnp.where(ok, total(divide(softplus, s_safe)), 1.0)


class FarParts(NamedTuple):
    """The kernel's intermediates that the closed forms read (values only)."""

    nonneg: jax.Array  # x >= 0
    sure: jax.Array  # a right hard label: n_b = 0
    t: jax.Array  # |x|
    y: jax.Array
    n_s: jax.Array
    n_b: jax.Array
    s: jax.Array  # sigma(-t)
    b: jax.Array  # 1 - s
    u: jax.Array  # u (1 where sure)
    softplus: jax.Array  # L(t) = log1p(e^-t)
    nl: jax.Array  # -log u
    at: jax.Array  # alpha_t
    d_at: jax.Array  # its derivative in y
    ce: jax.Array
    ratio: jax.Array  # ce / u
    core: jax.Array  # 2^shift F_x / alpha_t
    weighted: jax.Array  # 2^shift F_x


@jax.custom_jvp
def _plus_slopes(
    q: jax.Array, own: jax.Array, slopes: tuple[jax.Array, ...], args: tuple[jax.Array, ...]
) -> jax.Array:
    """``q`` itself, whose derivative is its own where ``own`` (0 elsewhere) plus
    ``slopes[i]`` times that of ``args[i]``. A rule rather than a sum, so that the value and
    the first derivatives compute no slope."""
    del own, slopes, args
    return q


@_plus_slopes.defjvp
def _plus_slopes_jvp(
    primals: tuple[jax.Array, jax.Array, tuple[jax.Array, ...], tuple[jax.Array, ...]],
    tangents: tuple[jax.Array, jax.Array, tuple[jax.Array, ...], tuple[jax.Array, ...]],
) -> tuple[jax.Array, jax.Array]:
    q, own, slopes, args = primals
    dq, _, _, d_args = tangents
    out = jnp.where(own, dq, 0.0)
    for c, d in zip(slopes, d_args, strict=True):
        out = out + c * d
    return _plus_slopes(q, own, slopes, args), out


def _signed_exp(log_m: jax.Array, c: jax.Array) -> jax.Array:
    """:math:`c\\,e^{\\log m}` as :math:`\\pm e^{\\log m + \\log|c|}`: normal wherever the
    product is, though :math:`e^{\\log m}` alone may not be (0 for ``c = 0``)."""
    mag = jnp.exp(log_m + jnp.log(jnp.abs(c)))
    return jnp.where(c == 0, 0.0, jnp.sign(c) * mag)


def _closed_forms(
    p: FarParts, gamma: jax.Array, alpha: jax.Array, back: Callable[[jax.Array], jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(F_xx, F_xy, F_xgamma, F_xalpha)`` by the module's formulas; ``back`` scales by
    :math:`2^{-shift}`."""
    g = gamma
    sign = jnp.where(p.nonneg, 1.0, -1.0)
    eps = -sign
    delta = p.n_b - p.n_s
    bs = p.b - p.s  # tanh(t / 2)
    # log q: -(t + L) - L - log u; at a right hard label u = s and q = b = e^-L exactly.
    log_q = jnp.where(p.sure, -p.softplus, p.nl - p.t - 2.0 * p.softplus)
    q = jnp.exp(log_q)
    log_p = -g * p.nl
    log_pq = log_q + log_p
    log_pqu = log_pq - p.nl
    u_val = jnp.where(p.sure, p.s, p.u)  # u = s D, D = 1 at a right hard label
    slope_u = jnp.where(p.sure, -1.0, (p.n_b - p.s) / p.u)  # (n_b - s) / u = ce_t / u
    r = p.ratio
    bxx = g * (g - 1.0) * delta**2 * q * r - g * delta * bs * r + 2.0 * g * delta * slope_u + 1.0
    f_xx = _signed_exp(log_pqu, p.at * bxx)
    k = p.d_at * p.n_b + p.at * eps * (1.0 + g)
    inner = (g - 1.0) * delta * bs * r + 2.0 * p.ce + delta * p.t
    b2 = (
        -p.d_at * (u_val / p.b)
        - 2.0 * g * p.at * eps
        + p.d_at * g * delta * p.ce
        + g * p.at * eps * inner
    )
    # P (K + q B2) in one exponential where q is not tiny (q = b at a right hard label): at
    # gamma 1 there P K and P q B2 are 2 P and -(2 + t) P, the first subnormal from
    # |x| = 709.1 and the sum normal to 715 (0.3 % lost at 709.8). Elsewhere (q < e^-350)
    # P q B2 is below 2^-500 of P B2, and P K the product, or 0 with K.
    joint = _signed_exp(log_p, k + q * b2)
    apart = _signed_exp(log_p, k) + _signed_exp(log_pq, b2)
    f_xy = sign * jnp.where(log_q > -350.0, joint, apart)
    f_xg = _signed_exp(log_pqu, sign * delta * p.at * r) - back(p.weighted * p.nl)
    # At a wrong hard label l = L(t) and P q u = P s b, both about e^-t: F_x l (F_x of O(1))
    # is subnormal from t = 708.4, where F_xg, O(t e^-t), is normal to 715 (1/t lost). There
    # F_xg = s (P b sign(x) delta alpha_t R - F_x L/s), in one exponential.
    log_s = -p.t - p.softplus
    log_l = jnp.where(p.softplus >= jnp.finfo(p.t.dtype).tiny, jnp.log(p.softplus), -p.t)
    lead = jnp.exp(log_pqu - log_s) * (sign * delta * p.at * r) - back(p.weighted) * jnp.exp(
        log_l - log_s
    )
    f_xg = jnp.where((p.n_s == 0) & ~p.sure, _signed_exp(log_s, lead), f_xg)
    f_xa = jnp.where(weighting_on(alpha), (2.0 * p.y - 1.0) * back(p.core), 0.0)
    return f_xx, f_xy, f_xg, f_xa


def far_slopes(
    band: jax.Array,
    inputs: tuple[jax.Array, jax.Array, jax.Array, jax.Array],
    v: Any,
    ratios: tuple[jax.Array, jax.Array, jax.Array],
    back: Callable[[jax.Array], jax.Array],
    coefficients: tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array],
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(value, d/dx, d/dy, d/dgamma, d/dalpha)`` with the closed forms' logit
    derivatives in ``band``, where the kernel ran on the logit with its derivative stopped:
    each coefficient gains its :math:`x` derivative, :math:`\\partial_x` drops its own
    derivatives there for :math:`F_{xx}`, :math:`F_{xy}`, :math:`F_{x\\gamma}` and
    :math:`F_{x\\alpha}`, and the value gains :math:`\\partial_x` itself (not stopped:
    forward over forward differentiates the value of the JVP rule too).

    ``inputs`` are ``(x, y, gamma, alpha)``, ``x`` with its derivative; ``v`` the kernel's
    intermediates (``jaxbce._focal._Value``); ``ratios`` :math:`ce/u` as d/dy read it and
    :math:`2^{shift}` times :math:`F_x/\\alpha_t` and :math:`F_x`."""
    x, y, gamma, alpha = inputs
    ratio = jnp.where(v.sure, sure_ratio(v.softplus, v.s), ratios[0])
    parts = FarParts(
        *(v.nonneg, v.sure, v.t, y, v.n_s, v.n_b, v.sums[0], v.sums[1], total(v.u)),
        *(total(v.softplus), total(v.nl), total(v.at), v.d_at, v.ce, ratio, *ratios[1:]),
    )
    shape = x.shape
    g, a = (jnp.broadcast_to(w, shape) for w in (gamma, alpha))
    safe = FarParts(*(jnp.where(band, w, 1.0) for w in parts))._replace(
        nonneg=parts.nonneg, sure=band & parts.sure
    )
    closed = _closed_forms(safe, lax.stop_gradient(g), lax.stop_gradient(a), back)
    f_xx, f_xy, f_xg, f_xa = (
        lax.stop_gradient(jnp.where(band & jnp.isfinite(c), c, 0.0)) for c in closed
    )
    value, d_x, d_y, d_gamma, d_alpha = coefficients
    everywhere = jnp.ones(shape, bool)
    d_x = _plus_slopes(d_x, ~band, (f_xx, f_xy, f_xg, f_xa), (x, y, g, a))
    value = _plus_slopes(value, everywhere, (jnp.where(band, d_x, 0.0),), (x,))
    d_y = _plus_slopes(d_y, everywhere, (f_xy,), (x,))
    d_gamma = _plus_slopes(d_gamma, everywhere, (f_xg,), (x,))
    d_alpha = _plus_slopes(d_alpha, everywhere, (f_xa,), (x,))
    return value, d_x, d_y, d_gamma, d_alpha
