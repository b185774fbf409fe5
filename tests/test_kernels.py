"""Numerics of the elementwise kernel against mpmath, and the custom-derivative machinery.

Errors are in ulps of the exact value (see ``reference.ulp`` for the floor at the smallest
normal number). Every bound is the issue's: loss within 2 ulp (3 with ``pos_weight`` and
``weights``); d/dz within 2 ulp for hard labels, and for soft or smoothed labels within 2 ulp of
``max(|exact|, |pw*q|, |1-q|)`` because ``sigmoid(z) - y`` cancels there; float64 the same plus 2.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref
from jax.test_util import check_grads

import jaxbce
from jaxbce import _kernels

_POSITIVE = [1e-7, 1e-3, 0.5, 1, 3, 10, 17, 20, 30, 50, 87, 88, 88.5, 100, 1e3, 1e4]
EXTREMES = [-v for v in reversed(_POSITIVE)] + [0.0] + _POSITIVE


def logit_grid(dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    spread = rng.uniform(-40, 40, 48)
    wide = rng.choice([-1, 1], 16) * 10 ** rng.uniform(-8, 4, 16)
    return np.concatenate([EXTREMES, spread, wide]).astype(dtype)


# (label, pos_weight, weight, label_smoothing)
CASES = [
    (0.0, None, None, 0.0),
    (1.0, None, None, 0.0),
    (0.3, None, None, 0.0),
    (1e-6, None, None, 0.0),
    (1 - 1e-6, None, None, 0.0),
    (1.0, None, None, 0.1),
    (0.0, None, None, 0.1),
    (0.3, None, None, 0.2),
    (1.0, 3.5, 0.7, 0.0),
    (0.0, 3.5, 0.7, 0.0),
    (1.0, 0.25, 1.5, 0.0),
    (0.3, 0.37, 2.5, 0.1),
]


def _errors(dtype, y, pw, w, eps, z=None):
    z = logit_grid(dtype) if z is None else z
    n = z.size

    def loss(z, y, pw, w):
        return jaxbce.sigmoid_binary_cross_entropy(
            z, y, pos_weight=pw, weights=w, label_smoothing=eps
        )

    full = lambda v: None if v is None else jnp.full(n, v, dtype)
    f = jax.jit(jax.vmap(jax.value_and_grad(loss)))
    got_l, got_g = map(np.asarray, f(jnp.asarray(z), full(y), full(pw), full(w)))
    hard = y in (0.0, 1.0) and eps == 0.0
    cast = lambda v: np.asarray(1.0 if v is None else v, dtype)
    el, eg = [], []
    for zi, li, gi in zip(z, got_l, got_g, strict=True):
        exact_l, exact_g = ref.bce(zi, cast(y), pw=cast(pw), w=cast(w), eps=cast(eps))
        q, qc = ref.smoothed(cast(y), cast(eps))
        floor = (
            0 if hard else max(abs(q * float(cast(pw)) * float(cast(w))), abs(qc * float(cast(w))))
        )
        el.append(ref.ulp_error(li, exact_l, dtype))
        eg.append(ref.ulp_error(gi, exact_g, dtype, floor=floor))
    return z, np.array(el), np.array(eg)


@pytest.mark.parametrize("y, pw, w, eps", CASES)
def test_float32_loss_and_grad_within_ulp_bounds(y, pw, w, eps):
    z, el, eg = _errors(np.float32, y, pw, w, eps)
    weighted = pw is not None or w is not None
    loss_bound = 3.0 if weighted else 2.0
    grad_bound = 3.0 if weighted else 2.0
    assert el.max() <= loss_bound, f"loss {el.max():.2f} ulp at z={z[el.argmax()]}"
    assert eg.max() <= grad_bound, f"grad {eg.max():.2f} ulp at z={z[eg.argmax()]}"


@pytest.mark.parametrize("y, pw, w, eps", CASES)
def test_float64_loss_and_grad_within_ulp_bounds(x64, y, pw, w, eps):
    z, el, eg = _errors(np.float64, y, pw, w, eps)
    bound = (3.0 if (pw is not None or w is not None) else 2.0) + 2.0
    assert el.max() <= bound, f"loss {el.max():.2f} ulp at z={z[el.argmax()]}"
    assert eg.max() <= bound, f"grad {eg.max():.2f} ulp at z={z[eg.argmax()]}"


@pytest.mark.parametrize("y, pw, w, eps", [c for c in CASES if c[1] or c[3]])
def test_float64_tiny_terms_scaled_by_the_flush_guard_within_ulp_bounds(x64, y, pw, w, eps):
    # Beyond |z| = 690 the float64 kernel with options evaluates e^-|z| times 2^64 (so that
    # a weight can bring a value that a flushing device would zero back to normal). That
    # scaling once rounded 64 ln 2 - |z| and was 48-51 ulps off at |z| in [691, 708], where
    # the exact values are normal.
    t = np.random.default_rng(7).uniform(690.0, 708.3, 32)
    z, el, eg = _errors(np.float64, y, pw, w, eps, z=np.concatenate([-t, t]))
    bound = (3.0 if (pw is not None or w is not None) else 2.0) + 2.0
    assert el.max() <= bound, f"loss {el.max():.2f} ulp at z={z[el.argmax()]}"
    assert eg.max() <= bound, f"grad {eg.max():.2f} ulp at z={z[eg.argmax()]}"


def test_confident_right_answers_keep_their_tiny_gradients():
    # sigmoid(30) - 1 rounds to 0 in float32; the exact gradient is -sigmoid(-30) = -9.36e-14,
    # and with pos_weight the naive (pw*y + 1 - y) * sigmoid(z) - pw*y even flips sign.
    z = jnp.float32(30.0)
    g = jax.grad(jaxbce.sigmoid_binary_cross_entropy)(z, jnp.float32(1.0))
    assert g == pytest.approx(-9.357622968839299e-14, rel=2**-22, abs=0.0)
    gp = jax.grad(lambda z: jaxbce.sigmoid_binary_cross_entropy(z, 1.0, pos_weight=3.0))(z)
    assert gp == pytest.approx(-3 * 9.357622968839299e-14, rel=2**-22, abs=0.0)
    assert jax.nn.sigmoid(z) - 1.0 == 0.0  # the hand-written gradient this avoids


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_is_computed_in_float32_and_rounded_once(dtype):
    z = jnp.asarray(np.linspace(-9, 9, 181), dtype)
    y = jnp.asarray(np.tile([0.0, 1.0, 0.25], 61)[:181], dtype)
    loss, grad = jax.vmap(jax.value_and_grad(jaxbce.sigmoid_binary_cross_entropy))(z, y)
    assert loss.dtype == dtype and grad.dtype == dtype
    ol, og = jax.vmap(jax.value_and_grad(optax.sigmoid_binary_cross_entropy))(z, y)
    worst = dict.fromkeys(["jaxbce_loss", "jaxbce_grad", "optax_loss", "optax_grad"], 0.0)
    arrays = (z, y, loss, grad, ol, og)
    for zi, yi, li, gi, oli, ogi in zip(*(np.asarray(a, np.float64) for a in arrays), strict=True):
        exact_l, exact_g = ref.bce(zi, yi)
        floor = 0 if yi in (0.0, 1.0) else yi
        worst["jaxbce_loss"] = max(worst["jaxbce_loss"], ref.ulp_error(li, exact_l, dtype))
        worst["jaxbce_grad"] = max(
            worst["jaxbce_grad"], ref.ulp_error(gi, exact_g, dtype, floor=floor)
        )
        worst["optax_loss"] = max(worst["optax_loss"], ref.ulp_error(oli, exact_l, dtype))
        worst["optax_grad"] = max(
            worst["optax_grad"], ref.ulp_error(ogi, exact_g, dtype, floor=floor)
        )
    assert worst["jaxbce_loss"] <= 1.0, worst
    assert worst["jaxbce_grad"] <= 1.0, worst
    # optax rounds every intermediate to the low-precision dtype and loses several ulps.
    assert max(worst["optax_loss"], worst["optax_grad"]) > 2.0, worst


INF = float("inf")


@pytest.mark.parametrize(
    "z, y, loss, grad",
    [
        (INF, 1.0, 0.0, 0.0),
        (-INF, 0.0, 0.0, 0.0),  # optax: NaN
        (INF, 0.0, INF, 1.0),
        (-INF, 1.0, INF, -1.0),
        (INF, 0.3, INF, 0.7),
        (-INF, 0.3, INF, -0.3),
    ],
)
def test_infinite_logits_follow_ieee_sense(z, y, loss, grad):
    v, g = jax.value_and_grad(jaxbce.sigmoid_binary_cross_entropy)(jnp.float32(z), jnp.float32(y))
    assert float(v) == loss
    assert float(g) == pytest.approx(grad)
    assert np.isfinite(float(g))


def test_nan_in_an_included_element_propagates():
    z = jnp.array([jnp.nan, 1.0], jnp.float32)
    for y in (0.0, 1.0, 0.5):
        out = jaxbce.sigmoid_binary_cross_entropy(z, jnp.full(2, y))
        assert np.isnan(out[0]) and np.isfinite(out[1])
        assert np.isnan(jaxbce.sigmoid_binary_cross_entropy(z, jnp.full(2, y), reduction="mean"))
    assert np.isnan(jaxbce.sigmoid_binary_cross_entropy(1.0, jnp.nan))
    assert np.isnan(jaxbce.binary_cross_entropy(jnp.nan, 1.0))


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("which", ["alpha", "gamma", "label_smoothing"])
def test_a_traced_nan_option_propagates(which, reduction):
    """A NaN option traced by the user's jit gives a NaN loss (a concrete NaN is refused).
    A traced NaN alpha read as "alpha >= 0" was the weighting turned off: the unweighted
    focal loss, finite, and d/dalpha 0 (adversarial pass, 2026-11-27). The loss is linear
    in alpha and in the smoothing, so their own derivatives do not depend on them (as
    ``jax.grad`` of ``a * x`` at a NaN ``a`` is ``x``); gamma's does, and is NaN."""
    z = jnp.array([1.0, -2.0, 30.0], jnp.float32)
    y = jnp.array([1.0, 0.0, 0.3], jnp.float32)
    base = {"alpha": 0.25, "gamma": 2.0}

    def loss(v):
        if which == "label_smoothing":
            return jaxbce.sigmoid_binary_cross_entropy(z, y, label_smoothing=v, reduction=reduction)
        return jaxbce.sigmoid_focal_loss(z, y, **{**base, which: v}, reduction=reduction)

    nan = jnp.float32(jnp.nan)
    assert np.all(np.isnan(jax.jit(loss)(nan)))
    slope = jax.jit(jax.grad(lambda v: jnp.sum(loss(v))))
    if which == "gamma":
        assert np.isnan(slope(nan))
    else:
        finite = {"alpha": 0.25, "label_smoothing": 0.1}[which]
        assert float(slope(nan)) == pytest.approx(float(slope(jnp.float32(finite))), rel=1e-6)


def test_reverse_only_kernel_registers_the_same_rules():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=64) * 20, jnp.float32)
    y = jnp.asarray(rng.uniform(size=64), jnp.float32)
    eps = jnp.float32(0.1)
    pw = jnp.asarray(rng.uniform(0.5, 3, size=64), jnp.float32)
    w = jnp.asarray(rng.uniform(0.5, 3, size=64), jnp.float32)
    for kind, xx in (("logits", x), ("probs", jax.nn.sigmoid(x / 10))):
        args = (xx, y, eps, pw if kind == "logits" else None, w)

        def total(f, *a, kind=kind):
            return jnp.sum(f(kind, *a))

        argnums = (0, 1, 2, 4)
        g_jvp = jax.jit(jax.grad(lambda *a: total(_kernels.nll, *a), argnums=argnums))(*args)
        g_vjp = jax.jit(jax.grad(lambda *a: total(_kernels.nll_vjp, *a), argnums=argnums))(*args)
        for a, b in zip(g_jvp, g_vjp, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_custom_vjp_cannot_do_forward_mode_but_the_public_kernel_can():
    x, y = jnp.float32(0.3), jnp.float32(1.0)
    with pytest.raises(TypeError, match=r"forward-mode|jvp|custom_vjp"):
        jax.jvp(lambda x: _kernels.nll_vjp("logits", x, y, None, None, None), (x,), (1.0,))
    _, t = jax.jvp(lambda x: _kernels.nll("logits", x, y, None, None, None), (x,), (1.0,))
    assert float(t) == pytest.approx(float(jax.nn.sigmoid(x) - 1.0), rel=1e-6)


@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_kernel_check_grads_order_2_every_input(x64, kind):
    rng = np.random.default_rng(2)
    x = rng.normal(size=7) * 3
    x = rng.uniform(0.2, 0.8, size=7) if kind == "probs" else x
    y = rng.uniform(0.05, 0.95, size=7)
    eps = np.float64(0.15)
    pw = rng.uniform(0.5, 2, size=7) if kind == "logits" else None
    w = rng.uniform(0.5, 2, size=7)
    # Under jit (eager, each of the kernel's hundreds of operations is dispatched alone).
    f = jax.jit(lambda x, y, eps, w: _kernels.nll(kind, x, y, eps, pw, w))
    check_grads(f, (x, y, eps, w), order=2, modes=["fwd", "rev"], eps=1e-4)
    if pw is not None:
        g = jax.jit(lambda pw: _kernels.nll(kind, x, y, eps, pw, w))
        check_grads(g, (pw,), order=2, modes=["fwd", "rev"], eps=1e-4)


@pytest.mark.parametrize(
    "name, exact",
    [("exp_neg", lambda t: np.exp(-t)), ("tanh_half", lambda t: np.tanh(t / 2))],
)
def test_float32_call_free_elementary_functions_within_an_ulp(name, exact):
    # The focal kernel's e^-t and tanh(t/2), written out so that XLA:CPU emits no call in
    # its loops (tests/test_memory.py): within an ulp of float64 at every 61st float32 from
    # 1e-30 to 90 (XLA's own tanh is 4.2 ulp off there). Below the smallest normal number
    # the result may flush to 0, as XLA:CPU's exp does.
    from jaxbce import _elementary

    bits = np.arange(np.float32(1e-30).view(np.int32), np.float32(90).view(np.int32), 61)
    t = bits.astype(np.int32).view(np.float32)
    got = np.asarray(jax.jit(getattr(_elementary, name))(jnp.asarray(t)), np.float64)
    want = exact(t.astype(np.float64))
    normal = want >= np.finfo(np.float32).tiny
    ulps = np.abs(got[normal] - want[normal]) / np.spacing(want[normal].astype(np.float32))
    assert ulps.max() <= 1.0, (ulps.max(), t[normal][np.argmax(ulps)])
    assert np.all(got[~normal] <= np.finfo(np.float32).tiny)
    assert float(getattr(_elementary, name)(jnp.float32(np.inf))) == float(exact(np.inf))
    assert np.isnan(float(getattr(_elementary, name)(jnp.float32(np.nan))))


def test_float32_summed_softplus_within_a_few_ulps():
    # The value of a "sum" or "mean" (only summed): XLA's exp and the artanh series, within
    # 3.3 ulp of float64 at every float32 t below 87.33 (a full sweep, 2026-11-27); here
    # every 61st float32 from 0 (2.99 at most) and every float32 in [1.25, 1.3] (3.26 at
    # t = 1.2774217, the sweep's worst).
    # Below the smallest normal number it is e^-t or, where the device flushes, 0: at
    # least it is never the 0 of a quotient that underflowed first (w = e / (2 + e) did).
    from jaxbce import _elementary

    sparse = np.arange(0, np.float32(87.33).view(np.int32), 61)
    dense = np.arange(np.float32(1.25).view(np.int32), np.float32(1.3).view(np.int32))
    t = np.concatenate([sparse, dense]).astype(np.int32).view(np.float32)
    f = jax.jit(_elementary.softplus_neg_abs_summed)
    got = np.asarray(f(jnp.asarray(t)), np.float64)
    want = np.log1p(np.exp(-t.astype(np.float64)))
    ulps = np.abs(got - want) / np.spacing(want.astype(np.float32))
    assert ulps.max() <= 3.3, (ulps.max(), t[np.argmax(ulps)])
    band = np.float32([86.7, 87.0, 87.3, 88.0, 100.0])
    tiny = np.asarray(f(jnp.asarray(band)), np.float64)
    exact = np.exp(-band.astype(np.float64))
    normal = exact >= np.finfo(np.float32).tiny
    assert np.all(np.abs(tiny[normal] / exact[normal] - 1) < 2**-21), tiny
    assert np.all(tiny[~normal] <= np.finfo(np.float32).tiny)
    assert float(f(jnp.float32(np.inf))) == 0.0
    assert np.isnan(float(f(jnp.float32(np.nan))))


def test_float32_quotient_is_correctly_rounded_at_every_subnormal_divisor():
    # The probability kernel's num / p, which a flushing CPU would compute as num / 0 at a
    # subnormal p: correctly rounded (float64 division, rounded once) at every one of the
    # 2^23 - 1 positive subnormal p and at 2^22 random normal p in (0, 1], with numerators
    # of every size; an exact quotient beyond finfo.max is inf.
    from jaxbce import _quotient

    rng = np.random.default_rng(3)
    subnormal = np.arange(1, 2**23, dtype=np.uint32)
    normal = rng.integers(0x00800000, 0x3F800001, size=2**22, dtype=np.uint32)
    p = np.concatenate([subnormal, normal]).view(np.float32)
    num = rng.uniform(-2.0, 2.0, size=p.size).astype(np.float32)
    num[::5] *= np.float32(1e-30)
    got = np.asarray(jax.jit(_quotient.quotient)(jnp.asarray(num), jnp.asarray(p)))
    want = (num.astype(np.float64) / p.astype(np.float64)).astype(np.float32)  # overflow: inf
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), np.flatnonzero(got != want)[
        :5
    ]


def test_float32_quotient_a_few_ulps_off_is_corrected():
    # XLA:GPU's float32 division is not correctly rounded (div.full.f32, up to 2 ulps from
    # the exact quotient; openxla/xla#37181): at the first run on an H200 the probability
    # loss' soft-label gradients were 2.4-2.5 ulp off (bound 2) for that reason. The
    # correction gets a quotient one or two ulps off, either way, back to within
    # (1 + 2^-14)/2 of an ulp, and to the correctly rounded one but where the exact quotient
    # is that close to a midpoint; a correctly rounded quotient is left as it is (the CPU's,
    # bit for bit: the test above).
    from jaxbce import _quotient

    rng = np.random.default_rng(4)
    num = rng.uniform(-2.0, 2.0, size=2**21).astype(np.float32)
    num[::3] *= np.float32(1e-30)
    den = np.concatenate(
        [
            # every normal p in (0, 1], and the significands of subnormal ones
            rng.integers(0x00800000, 0x3F800001, size=2**20, dtype=np.uint32).view(np.float32),
            rng.integers(1, 2**23, size=2**20).astype(np.float32),
        ]
    )
    exact = num.astype(np.float64) / den.astype(np.float64)
    normal = (np.abs(exact) >= np.finfo(np.float32).tiny) & (np.abs(exact) < 2.0**127)
    num, den, exact = num[normal], den[normal], exact[normal]
    rounded = exact.astype(np.float32)
    fix = jax.jit(_quotient.correct_quotient)
    for off, steps in itertools.product((np.float32(np.inf), np.float32(-np.inf)), (1, 2)):
        approx = rounded
        for _ in range(steps):  # XLA:GPU's division was up to 2.0015 ulp from the exact one
            approx = np.nextafter(approx, off)
        got = np.asarray(fix(num, den, approx))
        ulps = np.abs(got - exact) / np.spacing(np.abs(rounded))
        assert ulps.max() <= 0.50004, ulps.max()
        assert np.mean(got == rounded) > 0.9999
    assert np.array_equal(np.asarray(fix(num, den, rounded)), rounded)


def test_float32_quotient_one_ulp_above_a_power_of_two_is_corrected():
    # (Adversarial review of the correction.) Where a division one ulp high returns a power
    # of two and the exact quotient lies just below it, the ulp below is half the ulp of
    # the power: the correction must be measured in that smaller spacing (1023 divisors per
    # binade, D 2^-23 with 2^24 - 1024 < D < 2^24 and numerator (D - 1) 2^-23, were left
    # at 1.0, 1.00006 ulp off).
    from jaxbce import _quotient

    d = np.arange(2**24 - 1023, 2**24, dtype=np.int64)
    den = (d * 2.0**-23).astype(np.float32)
    fix = jax.jit(_quotient.correct_quotient)
    for scale in (1.0, 2.0**-40, 2.0**60, -1.0):
        num = ((d - 1) * 2.0**-23 * scale).astype(np.float32)
        exact = num.astype(np.float64) / den.astype(np.float64)
        rounded = exact.astype(np.float32)
        high = np.nextafter(rounded, np.float32(np.copysign(np.inf, scale)))  # a power of two
        got = np.asarray(fix(num, den, high))
        assert np.array_equal(got, rounded), np.sum(got != rounded)
        assert np.array_equal(np.asarray(fix(num, den, rounded)), rounded)


def _division_an_ulp_off(a, b):
    # A division that is not correctly rounded, as XLA:GPU's: one ulp from the correctly
    # rounded quotient, up and down in turn (and correct at every third element).
    q = (a.astype(np.float64) / b.astype(np.float64)).astype(a.dtype)
    flat = np.arange(q.size).reshape(q.shape) % 3
    toward = np.where(flat == 1, np.inf, -np.inf).astype(q.dtype)
    return np.where(flat == 0, q, np.nextafter(q, toward))


@pytest.mark.parametrize("which", ["quotient", "linear_quotient"])
def test_float32_quotient_under_a_division_an_ulp_off(which):
    # The public path, not the correction alone: the probability kernel's quotient evaluated
    # op by op with a division an ulp off (tests/ieee_eval.py), at every normal p exponent,
    # subnormal p and powers of two, is within 0.50004 ulp; the uncorrected quotient the
    # derivative rules use is not (which is what the corrected one would be without it).
    from ieee_eval import ieee

    from jaxbce import _quotient

    rng = np.random.default_rng(6)
    p = np.concatenate(
        [
            rng.integers(0x00800000, 0x3F800001, size=2**17, dtype=np.uint32).view(np.float32),
            rng.integers(1, 2**23, size=2**15, dtype=np.uint32).view(np.float32),
            np.float32(2.0) ** -np.arange(0, 126, dtype=np.float32),
        ]
    )
    num = rng.uniform(-2.0, 2.0, size=p.size).astype(np.float32)
    exact = num.astype(np.float64) / p.astype(np.float64)
    keep = (np.abs(exact) >= np.finfo(np.float32).tiny) & (np.abs(exact) < 2.0**127)
    got = np.asarray(ieee(getattr(_quotient, which), div=_division_an_ulp_off)(num, p))
    ulps = np.abs(got[keep] - exact[keep]) / np.spacing(np.abs(exact[keep].astype(np.float32)))
    if which == "quotient":
        assert ulps.max() <= 0.50004, ulps.max()
    else:
        assert ulps.max() > 1.0


def _subnormal_band() -> np.ndarray:
    # Every float32 t from 87.3 (e^-t at the smallest normal number) to 104.5 (past the
    # last t whose e^-t rounds to a subnormal).
    lo, hi = np.float32(87.3).view(np.int32), np.float32(104.5).view(np.int32)
    return np.arange(lo, hi + 1, dtype=np.int32).view(np.float32)


def test_the_ieee_evaluation_agrees_with_xla_on_normal_results():
    # The evaluator the subnormal tests rely on (tests/ieee_eval.py), against XLA:CPU where
    # nothing is subnormal: the loss and gradient at 2^16 logits up to 87 within one ulp of
    # XLA's (each is within an ulp of the exact value; XLA may contract into FMAs), and
    # most of them identical.
    from ieee_eval import ieee

    z = np.linspace(-87.0, 87.0, 2**16, dtype=np.float32)
    y = (np.arange(z.size) % 2).astype(np.float32)

    def both(z, y):
        return jax.value_and_grad(lambda z: jaxbce.sigmoid_binary_cross_entropy(z, y).sum())(z)

    ours = [np.asarray(v) for v in ieee(both)(z, y)]
    xla = [np.asarray(v) for v in jax.jit(both)(z, y)]
    loss = [
        np.asarray(v)
        for v in (
            ieee(jaxbce.sigmoid_binary_cross_entropy)(z, y),
            jax.jit(jaxbce.sigmoid_binary_cross_entropy)(z, y),
        )
    ]
    for a, b in (loss, (ours[1], xla[1])):
        assert np.all(np.abs(a - b) <= np.spacing(np.abs(b))), np.max(np.abs(a - b))
        assert np.mean(a == b) > 0.9


def test_results_below_the_smallest_normal_number_are_faithful_where_subnormals_are_kept():
    # The first run on a GPU (an H200, which keeps subnormals) found sigmoid_bce's loss and
    # gradient 5.9 million subnormal ulps off at z = -87.68, y = 0: the kernel's scaling by
    # 2^-k stopped at the smallest normal number, so every result below it was 0. XLA:CPU
    # flushes them, so here the kernel runs op by op in NumPy (tests/ieee_eval.py), which
    # keeps them as a GPU does: the loss, its gradient and the elementary functions within
    # one unit of the smallest subnormal at every float32 t in the band.
    from ieee_eval import ieee

    from jaxbce import _elementary

    t = _subnormal_band()
    t64 = t.astype(np.float64)
    e = np.exp(-t64)  # float64: relative error 1e-16, far below the subnormal spacing
    unit = 2.0**-149

    def off(got, want):
        return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / unit)

    assert off(ieee(_elementary.exp_neg)(t), e) <= 1.0
    assert off(sum(ieee(_elementary.softplus_neg_abs)(t)), np.log1p(e)) <= 1.0
    assert off(sum(ieee(_elementary.sigmoid_neg_abs)(t)), e / (1.0 + e)) <= 1.0
    for z, y in ((-t, np.zeros_like(t)), (t, np.ones_like(t))):
        loss = ieee(jaxbce.sigmoid_binary_cross_entropy)(z, y)
        grad = ieee(jax.grad(lambda z, y: jaxbce.sigmoid_binary_cross_entropy(z, y).sum()))(z, y)
        assert off(loss, np.log1p(e)) <= 1.0
        assert off(np.abs(grad), e / (1.0 + e)) <= 1.0


@pytest.mark.parametrize(
    "pos_weight, weight", [(3.5, 0.7), (None, 1.5), (0.25, 1.5), (None, 1e-30)]
)
def test_weighted_results_below_the_smallest_normal_number_where_subnormals_are_kept(
    pos_weight, weight
):
    # The option path scales softplus and the sigmoid by 2^64 beyond |z| = 80 and back once
    # (a CPU would flush them before the weights scaled them): on a device that keeps
    # subnormals, the weighted loss and gradient in the subnormal band within the bound of
    # weighted rows (3 ulps), every 16th float32 t of the band, both labels. A coverage
    # test of that path, which the GPU fixes did not change.
    bound = 3.0
    from ieee_eval import ieee

    t = _subnormal_band()[::16]
    e = np.exp(-t.astype(np.float64))
    unit = 2.0**-149
    w = np.float64(np.float32(weight))
    w_ones = np.full_like(t, np.float32(weight))

    def loss(z, y):
        return jaxbce.sigmoid_binary_cross_entropy(z, y, pos_weight=pos_weight, weights=w_ones)

    for z, y, scale in ((-t, 0.0, w), (t, 1.0, w * np.float64(np.float32(pos_weight or 1.0)))):
        labels = np.full_like(t, y)
        value = np.asarray(ieee(loss)(z, labels), np.float64)
        grad = np.asarray(ieee(jax.grad(lambda z, y: loss(z, y).sum()))(z, labels), np.float64)
        assert np.max(np.abs(value - scale * np.log1p(e))) / unit <= bound
        assert np.max(np.abs(np.abs(grad) - scale * e / (1.0 + e))) / unit <= bound
