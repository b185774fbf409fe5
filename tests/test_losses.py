"""The public losses: parity with optax and PyTorch, options, masks, every JAX
transformation, lowering for GPU and TPU and the focal loss' numerics. Errors are in
test_errors.py, memory and long sums in test_memory.py, data parallelism (shard_map, pmap)
and symbolic-batch export in test_sharded.py."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import optax
import pytest
import reference as ref
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from loss_cases import BCE, FOCAL, FUNCTIONS, PROBS
from loss_cases import inputs as _inputs

# ----------------------------------------------------------------- parity


def test_defaults_are_a_drop_in_for_optax():
    z, y = _inputs(BCE, (64, 33))
    y_hard = (y > 0.5).astype(np.float32)
    for labels in (y, y_hard):
        np.testing.assert_allclose(
            BCE(z, labels), optax.sigmoid_binary_cross_entropy(z, labels), rtol=2e-7, atol=1e-7
        )
        ours = jax.grad(lambda z, y: BCE(z, y).sum())(z, labels)
        theirs = jax.grad(lambda z, y: optax.sigmoid_binary_cross_entropy(z, y).sum())(z, labels)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def _t(a):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_matches_torch_bce_with_logits(x64, reduction, with_weight, with_pos_weight):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 5)) * 4
    y = rng.uniform(size=(6, 5))
    w = rng.uniform(0.2, 2, size=(6, 1)) if with_weight else None
    pw = rng.uniform(0.2, 4, size=(5,)) if with_pos_weight else None
    zt, yt = _t(z), _t(y)
    crit = torch.nn.BCEWithLogitsLoss(
        weight=None if w is None else torch.tensor(w),
        pos_weight=None if pw is None else torch.tensor(pw),
        reduction=reduction,
    )
    out_t = crit(zt, yt)
    out_t.sum().backward()

    def f(z, y):
        return BCE(z, y, weights=w, pos_weight=pw, reduction=reduction)

    out = f(z, y)
    gz, gy = jax.grad(lambda z, y: f(z, y).sum(), argnums=(0, 1))(z, y)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(gz, zt.grad.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(gy, yt.grad.numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_matches_torch_bce_loss_including_clamped_logs(x64, reduction):
    rng = np.random.default_rng(4)
    p = rng.uniform(0.01, 0.99, size=(7, 3))
    p[0, :] = [0.0, 1.0, 1e-50]  # clamped logs: finite loss
    y = rng.uniform(size=(7, 3))
    w = rng.uniform(0.5, 2, size=(3,))
    pt, yt = _t(p), _t(y)
    out_t = torch.nn.BCELoss(weight=torch.tensor(w), reduction=reduction)(pt, yt)
    out_t.sum().backward()
    out = PROBS(p, y, weights=w, reduction=reduction)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-6)
    g = jax.grad(lambda p: PROBS(p, y, weights=w, reduction=reduction).sum())(p)
    assert np.all(np.isfinite(g))
    # Where p(1-p) > 1e-12 PyTorch's gradient is the exact derivative, as is ours.
    interior = (p * (1 - p)) > 1e-12
    np.testing.assert_allclose(g[interior], pt.grad.numpy()[interior], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_log_clamp_starts_exactly_where_log_p_reaches_minus_100(x64, dtype):
    # The smallest p of the dtype whose exact log is above -100 (mpmath) keeps its log and
    # its slope -1/p; the next below is clamped (slope 0). In float64 that p is
    # fl(exp(-100)), whose log XLA rounds to -100 (and so does correct rounding).
    mpmath.mp.prec = 200
    bound = mpmath.exp(-100)
    p = dtype(float(bound))
    p = p if mpmath.mpf(float(p)) > bound else np.nextafter(p, dtype(1))
    below = np.nextafter(p, dtype(0))
    assert mpmath.mpf(float(below)) < bound
    ps = np.array([p, below], dtype)
    value, grad = jax.value_and_grad(lambda p: PROBS(p, np.ones(2, dtype)).sum())(ps)
    exact = float(-mpmath.log(mpmath.mpf(float(p))))
    assert float(value) == pytest.approx(exact + 100.0, rel=np.finfo(dtype).eps)
    slope = float(-1 / mpmath.mpf(float(p)))  # -2.6e43 at float32's 27 * 2^-149: -inf
    huge = -slope > float(np.finfo(dtype).max)
    assert float(grad[0]) == (-np.inf if huge else pytest.approx(slope))
    assert float(grad[1]) == 0.0


def _torchvision_focal(inputs, targets, alpha, gamma):
    """torchvision.ops.sigmoid_focal_loss as published (torchvision has no CPU build here)."""
    p = torch.sigmoid(inputs)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


@pytest.mark.parametrize(
    "alpha, gamma", [(0.25, 2.0), (-1.0, 2.0), (0.6, 0.0), (0.25, 0.5), (0.9, 3.3)]
)
def test_focal_matches_torchvision_formula(x64, alpha, gamma):
    rng = np.random.default_rng(5)
    z = rng.normal(size=(5, 4)) * 3
    y = rng.uniform(size=(5, 4))
    y[0] = [0, 1, 0, 1]
    zt = _t(z)
    ref = _torchvision_focal(zt, torch.tensor(y), alpha, gamma)
    ref.sum().backward()
    np.testing.assert_allclose(
        FOCAL(z, y, alpha=alpha, gamma=gamma), ref.detach().numpy(), rtol=1e-6
    )
    g = jax.grad(lambda z: FOCAL(z, y, alpha=alpha, gamma=gamma).sum())(z)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-6, atol=1e-12)


#: One compilation for every gamma (traced; see _focal_value_and_grad below).
_focal_default_alpha = jax.jit(
    jax.vmap(jax.value_and_grad(lambda z, y, g: FOCAL(z, y, gamma=g)), in_axes=(0, 0, None))
)


@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 1.0, 2.0])
def test_focal_stays_finite_where_torchvision_and_optax_do_not(gamma):
    z = jnp.array([-jnp.inf, -200.0, -40.0, -20.0, 20.0, 40.0, 200.0, jnp.inf], jnp.float32)
    for y in (0.0, 1.0):
        yy = jnp.full_like(z, y)
        loss, grad = _focal_default_alpha(z, yy, gamma)
        right = (z > 0) == (y == 1)
        assert np.all(np.isfinite(grad)), (y, grad)
        assert np.all(np.asarray(loss)[np.isinf(z) & right] == 0)
        assert np.all(np.isinf(np.asarray(loss)[np.isinf(z) & ~right]))
    # torchvision's formula at |z| = 20 with gamma < 1: 1 - p_t rounds to 0 and the
    # derivative of its power is 0 * inf = NaN.
    if 0 < gamma < 1:
        zt = torch.tensor([20.0], requires_grad=True)
        _torchvision_focal(zt, torch.tensor([1.0]), 0.25, gamma).sum().backward()
        assert torch.isnan(zt.grad).any()
    ol = jax.grad(lambda z: optax.sigmoid_focal_loss(z, jnp.ones_like(z), gamma=gamma).sum())(
        jnp.array([jnp.inf, -jnp.inf])
    )
    assert not np.all(np.isfinite(ol))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_focal_label_derivatives_near_zero_and_at_right_hard_labels(x64, dtype):
    """Two defects of the focal loss' label derivatives (adversarial pass): d/dy near x = 0
    took du/dy = sigma(-x) - sigma(x) as s - (1 - s), which cancels (26 % off at
    |x| < 1e-8 in float32); d2/dy2 at a right hard label lacked the label derivative of
    ce/u (0.115 for 0.160 at x = 3, y = 1). Against mpmath: d/dy within 4 ulps, d2/dy2
    within 1e-5 (float32) or 1e-12 (float64) relative to the larger of the value and its
    terms, near x = 0 too (its label slopes are exact there now), or at most 4 * tiny where
    the exact value is below the smallest normal number."""
    eps = np.finfo(dtype).eps
    cases = [
        (1e-20, 0.0, 0.5, None), (1e-9, 0.3, 0.5, 0.25), (-1e-9, 1.0, 2.0, 0.25),
        (1e-5, 0.0, 2.0, None), (3.0, 1.0, 2.0, 0.25), (-3.0, 0.0, 2.0, 0.25),
        (0.5, 1.0, 0.5, 0.6), (20.0, 1.0, 2.0, None),
    ]  # fmt: skip
    # The options as data (alpha None as the -1 the public function passes for it): one
    # program per dtype; eager calls with Python floats compile one per option set.
    columns = zip(*[(x, y, g, -1.0 if a is None else a) for x, y, g, a in cases], strict=True)
    xs, ys, gs, als = (jnp.asarray(c, dtype) for c in columns)

    def derivatives(x, y, g, a):
        f = lambda yy: FOCAL(x, yy, gamma=g, alpha=a)
        return jax.grad(f)(y), jax.hessian(f)(y)

    d_ys, d_yys = jax.jit(jax.vmap(derivatives))(xs, ys, gs, als)
    for k, (x, y, gamma, alpha) in enumerate(cases):
        exact = ref.focal_curvature(float(np.asarray(x, dtype)), y, alpha=alpha, gamma=gamma)
        d_y, d_yy = float(d_ys[k]), float(d_yys[k])
        assert abs(d_y - float(exact["dy"])) <= 4 * eps * abs(float(exact["dy"])), (x, y)
        rtol, tiny = (1e-5 if dtype == np.float32 else 1e-12), float(np.finfo(dtype).tiny)
        scale = max(abs(float(exact["dyy"])), float(exact["dyy_terms"]))
        if scale >= tiny:
            assert abs(d_yy - float(exact["dyy"])) <= rtol * scale, (x, y, d_yy)
        else:
            assert abs(d_yy) <= 4 * tiny, (x, y, d_yy)


def test_focal_gamma_derivative_at_confident_answers():
    """Float32 d/dgamma took -log u from u near 1 at a wrong hard label (2e-4 off at z = 17,
    y = 0), and d/dy of d/dgamma came from the value after its 2^-shift scaling, which
    underflows at right hard labels (1e-3 off at z = 30, y = 1, gamma 2; adversarial pass).
    Within 4 ulps (d/dgamma) and 1e-5 relative (the mixed one), every order."""
    eps = float(np.finfo(np.float32).eps)
    dg = jax.jit(
        jax.vmap(
            jax.grad(lambda z, y, g: FOCAL(z, y, gamma=g, alpha=None), argnums=2),
            in_axes=(0, 0, None),
        )
    )
    z = np.arange(5.0, 87.0, 0.37, dtype=np.float32)
    for y, zz in ((0.0, z), (1.0, -z)):
        got = np.asarray(dg(zz, np.full_like(zz, y), np.float32(2.0)))
        exact = np.array(
            [float(ref.focal_gamma_slope(mpmath.mpf(float(a)), y, alpha=None)) for a in zz]
        )
        assert np.all(np.abs(got - exact) <= 4 * eps * np.abs(exact)), (
            y,
            np.max(np.abs(got / exact - 1)),
        )
    x, y, g, a = np.float32(30.0), np.float32(1.0), np.float32(2.0), np.float32(0.25)
    exact = float(
        mpmath.diff(lambda yy: ref.focal_gamma_slope(mpmath.mpf(30.0), yy, alpha=0.25), 1.0)
    )
    loss = lambda x, y, g: FOCAL(x, y, gamma=g, alpha=a)
    for mixed in (
        jax.jacfwd(jax.grad(loss, argnums=2), argnums=1),
        jax.grad(jax.grad(loss, argnums=2), argnums=1),
        jax.grad(jax.grad(loss, argnums=1), argnums=2),
    ):
        assert float(mixed(x, y, g)) == pytest.approx(exact, rel=1e-5, abs=0.0)


@pytest.mark.parametrize("fn", [BCE, FOCAL])
def test_forward_mode_with_weights_is_finite_at_infinite_logits(fn):
    """A weighted focal loss took the undifferentiated weight's instantiated zero tangent
    times its infinite loss: jvp NaN at z = +-inf, and jacfwd of the sum NaN everywhere
    (a padded batch of inf logits under a weight mask). Every mode equals reverse mode."""
    z = jnp.array([jnp.inf, -jnp.inf, 1.0, jnp.inf])
    y = jnp.array([0.0, 1.0, 0.5, 0.0])
    w = jnp.array([2.0, 2.0, 2.0, 0.0])  # the last one absent: value 0, every derivative 0

    def total(z):
        return fn(z, y, weights=w, reduction="sum")

    grad = jax.grad(total)(z)
    assert np.all(np.isfinite(grad)) and grad[3] == 0, grad
    tangent = jax.jvp(lambda z: fn(z, y, weights=w), (z,), (jnp.ones(4),))[1]
    np.testing.assert_array_equal(tangent, grad)
    np.testing.assert_array_equal(jax.jacfwd(total)(z), grad)
    np.testing.assert_array_equal(jax.linearize(total, z)[1](jnp.ones(4)), grad.sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_focal_loss_is_exact_out_to_the_largest_logits(dtype):
    """Beyond |x| = 2^64 the focal loss is c(y)|x| (sigma(-|x|) is 0): the loss and d/dx, by
    grad and by jacfwd in (x, y) (which was NaN at finfo.max: the kernel's intermediate
    terms overflowed), are within the focal bound max(4, 2 + gamma) ulps of mpmath there,
    at 2^64's neighbours and up to finfo.max."""
    big = np.array([2.0**64, 1e25, 1e30, 3e38], dtype)
    big = np.concatenate([big, np.nextafter(big[:1], 0), np.nextafter(big[:1], np.inf)])
    if dtype == np.float64:
        big = np.concatenate([big, [1e300]])
    big = np.concatenate([big, [np.finfo(dtype).max]]).astype(dtype)
    grid = [(x, y, g) for x in (*big, *-big) for y in (0.0, 1.0, 0.3, 1e-6) for g in (0, 0.5, 2, 5)]
    x, y, gamma = (np.array(a, dtype) for a in zip(*grid, strict=True))
    with jax.enable_x64(dtype == np.float64):
        for alpha in (None, 0.25):

            def loss(x, y, g, alpha=alpha):
                return FOCAL(x, y, alpha=alpha, gamma=g)

            def both(x, y, g, loss=loss):
                value, slope = jax.value_and_grad(loss)(x, y, g)
                return value, slope, jax.jacfwd(loss, (0, 1))(x, y, g)[0]

            got = jax.jit(jax.vmap(both))(x, y, gamma)
            for xi, yi, gi, v, d, d_fwd in zip(x, y, gamma, *map(np.asarray, got), strict=True):
                exact = ref.focal_value(mpmath.mpf(float(xi)), yi, alpha=alpha, gamma=gi)
                slope = ref.focal_curvature(xi, yi, alpha=alpha, gamma=gi)["dz"]
                bound, where = max(4, 2 + gi), f"x={xi!r} y={yi} alpha={alpha} gamma={gi}"
                assert ref.ulp_error(v, exact, dtype) <= bound, (where, v, exact)
                assert ref.ulp_error(d, slope, dtype) <= bound, (where, d, slope)
                assert ref.ulp_error(d_fwd, slope, dtype) <= bound, (where, d_fwd, slope)


# ----------------------------------------------------------- options, masks


def test_label_smoothing_is_keras_convention():
    z, y = _inputs(BCE, (3, 4))
    e = 0.2
    np.testing.assert_allclose(
        BCE(z, y, label_smoothing=e),
        optax.sigmoid_binary_cross_entropy(z, y * (1 - e) + e / 2),
        rtol=2e-6,
    )


def test_pos_weight_broadcasts_along_the_class_axis():
    z, y = _inputs(BCE, (3, 4))
    pw = np.array([1.0, 2.0, 0.5, 3.0], np.float32)
    per_class = np.stack([BCE(z[:, c], y[:, c], pos_weight=pw[c]) for c in range(4)], axis=1)
    np.testing.assert_allclose(BCE(z, y, pos_weight=pw), per_class, rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.25, 0.5])
def test_float64_focal_label_derivative_where_u_is_subnormal(x64, gamma):
    # At a right hard label beyond |x| = 745, u = sigma(-|x|) is below float64's range but
    # u^gamma and d/dy = gamma u^(gamma-1)(s - (1 - s)) L(|x|) - |x| u^gamma are normal:
    # u^gamma 2^shift came from exp(shift log 2 - gamma (-log u)), whose rounded argument
    # cost 5.5e-15 relative (~25-50 ulps).
    mpmath.mp.prec = 200
    for x in (760.0, 1000.0, 1300.0):
        dy = float(jax.grad(lambda y, x=x: FOCAL(x, y, gamma=gamma, alpha=None))(1.0))
        big = mpmath.mpf(x)
        s = 1 / (1 + mpmath.exp(big))
        exact = gamma * s ** (gamma - 1) * (2 * s - 1) * mpmath.log1p(mpmath.exp(-big))
        exact -= big * s**gamma
        assert dy == pytest.approx(float(exact), rel=4e-16, abs=0.0), x


@pytest.mark.parametrize("fn", [BCE, FOCAL])
def test_a_zero_weight_makes_an_infinitely_wrong_element_absent(fn):
    # 0 * inf = 0 in the cross-entropies' kernel; the focal loss multiplied its weights
    # outside the kernel and gave NaN for the element and for the sum (adversarial pass).
    z, y = jnp.array([jnp.inf, -jnp.inf, 1.0]), jnp.array([0.0, 1.0, 1.0])
    w = jnp.array([0.0, 0.0, 2.0])
    loss = fn(z, y, weights=w)
    assert loss[0] == 0.0 and loss[1] == 0.0 and loss[2] == 2.0 * fn(z[2:], y[2:])[0]
    total, (dz, dw) = jax.value_and_grad(
        lambda z, w: fn(z, y, weights=w, reduction="sum"), argnums=(0, 1)
    )(z, w)
    # The sum's value may be rounded differently from the element's (a reduction's value is
    # only summed, tests/test_kernels.py::test_float32_summed_softplus_within_a_few_ulps);
    # the absent elements add exactly 0 to the same sum of the third alone.
    assert total == fn(z[2:], y[2:], weights=w[2:], reduction="sum")
    assert np.isclose(total, loss[2], rtol=2**-21, atol=0)
    assert np.all(np.asarray(dz)[:2] == 0.0) and np.all(np.isinf(np.asarray(dw)[:2]))


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_excluded_elements_contribute_exactly_zero_even_when_nan(fn):
    x, y = _inputs(fn, (4, 6))
    mask = np.ones((4, 6), bool)
    mask[1, 2] = mask[3, 0] = mask[0, 5] = False
    x_bad, y_bad = x.copy(), y.copy()
    x_bad[1, 2], y_bad[3, 0], x_bad[0, 5] = np.nan, np.inf, -np.inf
    w = np.ones((4, 6), np.float32)
    w[3, 0] = np.nan
    for reduction in ("sum", "mean"):
        clean = fn(np.where(mask, x, 0.3), y * mask, where=mask, reduction=reduction)
        val, grads = jax.value_and_grad(
            lambda x, y, w, red=reduction: fn(x, y, weights=w, where=mask, reduction=red),
            argnums=(0, 1, 2),
        )(x_bad, y_bad, w)
        assert np.isfinite(val) and val == pytest.approx(float(clean), rel=1e-6)
        for g in grads:
            assert np.all(np.isfinite(g))
            assert np.all(np.asarray(g)[~mask] == 0.0)
    none = fn(x_bad, y_bad, where=mask)
    assert np.all(np.asarray(none)[~mask] == 0.0) and np.all(np.isfinite(none))


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_mean_divides_by_included_count_and_empty_mean_is_zero(fn):
    x, y = _inputs(fn, (5, 3))
    mask = np.zeros((5, 3), bool)
    mask[:2] = True
    full = np.asarray(fn(x, y))
    assert float(fn(x, y, where=mask, reduction="mean")) == pytest.approx(full[:2].mean(), rel=1e-6)
    assert float(fn(x, y, where=mask, reduction="sum")) == pytest.approx(full[:2].sum(), rel=1e-6)
    empty = np.zeros((5, 3), bool)
    val, g = jax.value_and_grad(lambda x: fn(x, y, where=empty, reduction="mean"))(x)
    assert float(val) == 0.0 and np.all(np.asarray(g) == 0.0)
    no_elements = np.zeros((0, 3), np.float32)
    assert float(fn(no_elements, no_elements, reduction="mean")) == 0.0
    assert float(fn(no_elements, no_elements, reduction="sum")) == 0.0


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("label_dtype", [np.bool_, np.int8, np.int32, np.float16])
def test_integer_and_bool_labels_give_the_float_answer(fn, label_dtype):
    x, y = _inputs(fn, (3, 7))
    hard = y > 0.5
    expected = fn(x, hard.astype(np.float32))
    np.testing.assert_array_equal(fn(x, hard.astype(label_dtype)), expected)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_result_has_the_input_dtype(fn, dtype, reduction):
    # The dtypes are decided when the loss is traced: eval_shape gives the ones an eager or
    # jitted call returns, without compiling 36 programs that only this test would use (40
    # s of the suite). The values in these dtypes are the self-check's and the sweeps'.
    x, y = _inputs(fn, (3, 7))
    x = jnp.asarray(x, dtype)
    out = jax.eval_shape(lambda x: fn(x, y, reduction=reduction), x)
    g = jax.eval_shape(jax.grad(lambda x: fn(x, y, reduction=reduction).sum()), x)
    assert out.dtype == dtype and g.dtype == dtype


def test_float64_inputs_stay_float64(x64):
    x, y = _inputs(BCE, (3, 7), dtype=np.float64)
    assert BCE(x, y).dtype == jnp.float64
    assert BCE(x, y, reduction="mean").dtype == jnp.float64


# ---------------------------------------------------------- transformations


def _scalar_fn(fn, y, reduction="mean", **kw):
    return lambda x: fn(x, y, reduction=reduction, **kw)


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_every_transformation_agrees_with_plain_autodiff_of_the_value(fn):
    x, y = _inputs(fn, (3, 4))
    x, y = jnp.asarray(x), jnp.asarray(y)
    f = _scalar_fn(fn, y)
    # The reference: the value differentiated by JAX's own rules on a plain formula.
    g = jax.jit(jax.grad(f))(x)
    expected = {"sigmoid_binary_cross_entropy": lambda x: jax.nn.sigmoid(x) - y}
    if fn.__name__ in expected:
        np.testing.assert_allclose(g, expected[fn.__name__](x) / x.size, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(jax.grad(f)(x), g, rtol=1e-6)
    _, g2 = jax.jit(jax.value_and_grad(f))(x)
    np.testing.assert_allclose(g2, g, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.jacrev(f))(x), g, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.jacfwd(f))(x), g, rtol=1e-5, atol=1e-8)
    t = jnp.asarray(np.random.default_rng(0).normal(size=x.shape), x.dtype)
    _, tangent = jax.jit(lambda x, t: jax.jvp(f, (x,), (t,)))(x, t)
    assert float(tangent) == pytest.approx(float(jnp.vdot(g, t)), rel=1e-5, abs=1e-7)
    _, lin = jax.linearize(f, x)
    assert float(lin(t)) == pytest.approx(float(tangent), rel=1e-6, abs=1e-7)
    np.testing.assert_allclose(jax.jit(jax.grad(jax.checkpoint(f)))(x), g, rtol=1e-6)
    h = jax.jit(jax.hessian(f))(x)
    hvp_fwd_over_rev = jax.jit(lambda x, t: jax.jvp(jax.grad(f), (x,), (t,))[1])(x, t)
    np.testing.assert_allclose(
        jnp.tensordot(h, t, axes=t.ndim), hvp_fwd_over_rev, rtol=1e-4, atol=1e-7
    )
    if fn is not FOCAL:  # the focal kernel's: jacrev(grad) in tests/test_curvature.py (15 s)
        np.testing.assert_allclose(jax.jit(jax.jacrev(jax.jacrev(f)))(x), h, rtol=1e-4, atol=1e-7)
    # Elementwise loss: the Hessian is diagonal.
    off = np.asarray(h).reshape(x.size, x.size) * (1 - np.eye(x.size))
    assert np.all(off == 0)


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_vmap_nested_and_over_multilabel_batches(fn):
    x, y = _inputs(fn, (2, 3, 5))
    # Under jit, as a training step calls them.
    per = jax.jit(jax.vmap(jax.vmap(lambda a, b: fn(a, b, reduction="sum"))))(x, y)
    np.testing.assert_allclose(per, np.asarray(jax.jit(fn)(x, y)).sum(-1), rtol=1e-6)
    grads = jax.jit(jax.vmap(jax.grad(lambda a, b: fn(a, b, reduction="mean"))))(x, y)
    direct = jax.jit(jax.grad(lambda a: fn(a, y, reduction="sum")))(x) / 15
    np.testing.assert_allclose(grads, direct, rtol=1e-6)


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_an_eager_call_compiles_one_program_not_one_per_operation(fn):
    """An eager call (and an eager ``grad``) at a new shape compiles the loss as one program,
    plus the few operations of the value checks; the focal loss compiled 101 programs, one
    per operation of its kernel, and took 6 s (86 at every new shape)."""
    from jax._src import dispatch

    compiles = []

    def count(event: str, duration: float, **kwargs) -> None:
        if event == dispatch.BACKEND_COMPILE_EVENT:
            compiles.append(duration)

    x, y = _inputs(fn, (3, 11))  # a shape no other test uses
    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        value = fn(x, y, weights=0.5)
        first = len(compiles)
        grad = jax.grad(lambda a: fn(a, y, reduction="mean"))(x)
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert first <= 10, f"the first eager call compiled {first} programs"
    assert len(compiles) - first <= 6, f"an eager grad compiled {len(compiles) - first}"
    np.testing.assert_allclose(value, np.asarray(jax.jit(fn)(x, y)) * 0.5, rtol=1e-6)
    assert np.all(np.isfinite(grad))


def test_options_may_arrive_traced_under_jit():
    z, y = _inputs(BCE, (3, 4))

    @jax.jit
    def f(z, y, pw, w, e):
        return BCE(z, y, pos_weight=pw, weights=w, label_smoothing=e, reduction="mean")

    pw, w = np.float32(2.0), np.full((3, 1), 0.5, np.float32)
    eager = BCE(z, y, pos_weight=2.0, weights=w, label_smoothing=0.1, reduction="mean")
    assert float(f(z, y, pw, w, 0.1)) == pytest.approx(float(eager), rel=1e-6)
    foc = jax.jit(lambda z, y, a, g: FOCAL(z, y, alpha=a, gamma=g, reduction="sum"))
    assert float(foc(z, y, 0.25, 2.0)) == pytest.approx(
        float(FOCAL(z, y, reduction="sum")), rel=1e-5
    )
    assert float(foc(z, y, -1.0, 2.0)) == pytest.approx(
        float(FOCAL(z, y, alpha=None, reduction="sum")), rel=1e-5
    )


CHECK_CASES = [
    (BCE, {}),
    (BCE, {"label_smoothing": 0.1, "reduction": "mean"}),
    (BCE, {"pos_weight": np.array([0.5, 2.0, 1.5]), "weights": np.array([[1.0], [2.0]])}),
    (BCE, {"where": np.array([[True, False, True], [True, True, False]]), "reduction": "sum"}),
    (PROBS, {}),
    (PROBS, {"weights": np.array([0.5, 2.0, 1.5]), "label_smoothing": 0.2, "reduction": "mean"}),
    # The focal loss elementwise (every gamma in {0, 0.5, 1, 2, 5}, alpha None and 0.25) is
    # in tests/test_curvature.py's float64 sweep, every mode against mpmath, and its
    # check_grads at extreme logits in tests/test_check_grads.py; here one option set with
    # every other option: a non-integer gamma, an alpha, a mask and a reduction (each focal
    # option set costs ~22 s of compilation).
    (
        FOCAL,
        {
            "gamma": 2.7,
            "alpha": 0.6,
            "where": np.array([[True, False, True], [True, True, False]]),
            "reduction": "mean",
        },
    ),
]


@pytest.mark.parametrize("fn, kw", CHECK_CASES)
def test_check_grads_order_2_forward_and_reverse_in_float64(x64, fn, kw):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 3)) * 2
    x = 0.2 + 0.6 / (1 + np.exp(-x)) if fn is PROBS else x
    y = rng.uniform(0.1, 0.9, size=(2, 3))
    # Under jit, as a gradient-checking script would call it (and much faster than eager).
    # The weights too, in the same call: each check_grads call compiles six programs.
    options = {o: kw[o] for o in ("weights", "pos_weight") if o in kw}

    def loss(x, y, *values):
        return fn(x, y, **{**kw, **dict(zip(options, values, strict=True))})

    check = functools.partial(check_grads, order=2, modes=["fwd", "rev"], eps=1e-5)
    check(jax.jit(loss), (x, y, *options.values()))


# -------------------------------------------------------- property tests


@st.composite
def _problems(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    z = rng.normal(size=shape) * draw(st.sampled_from([0.1, 3.0, 30.0]))
    y = rng.uniform(size=shape)
    if draw(st.booleans()):
        y = (y > 0.5).astype(np.float64)

    # Broadcastable option shapes: drop leading dims or set some to 1.
    def bshape():
        k = draw(st.integers(0, len(shape)))
        return tuple(1 if draw(st.booleans()) else d for d in shape[len(shape) - k :])

    w = rng.uniform(0.1, 3, size=bshape()) if draw(st.booleans()) else None
    pw = rng.uniform(0.1, 3, size=bshape()) if draw(st.booleans()) else None
    mask = rng.uniform(size=bshape()) > 0.3 if draw(st.booleans()) else None
    eps = draw(st.sampled_from([0.0, 0.05, 0.5]))
    reduction = draw(st.sampled_from(["none", "sum", "mean"]))
    return z, y, w, pw, mask, eps, reduction


@settings(max_examples=25)
@given(_problems())
def test_property_matches_a_float64_numpy_reference(problem):
    z, y, w, pw, mask, eps, reduction = problem
    q = y * (1 - eps) + eps / 2
    elem = (1 if pw is None else pw) * q * np.logaddexp(0, -z) + (1 - q) * np.logaddexp(0, z)
    elem = elem * (1 if w is None else w)
    m = np.broadcast_to(True if mask is None else mask, z.shape)
    elem = np.where(m, elem, 0.0)
    expected = {"none": elem, "sum": elem.sum(), "mean": elem.sum() / max(m.sum(), 1)}[reduction]
    f = jax.jit(functools.partial(BCE, label_smoothing=eps, reduction=reduction))
    got = f(z.astype(np.float32), y.astype(np.float32), weights=w, pos_weight=pw, where=mask)
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


@settings(max_examples=25)
@given(_problems())
def test_property_gradient_is_weighted_sigmoid_minus_label(problem):
    z, y, w, pw, mask, eps, _ = problem
    q = y * (1 - eps) + eps / 2
    p = 1 / (1 + np.exp(-z))
    pw_b = 1 if pw is None else pw
    g = (1 if w is None else w) * ((pw_b * q + 1 - q) * p - pw_b * q)
    g = np.where(np.broadcast_to(True if mask is None else mask, z.shape), g, 0.0)
    f = jax.jit(jax.grad(functools.partial(BCE, label_smoothing=eps, reduction="sum")))
    got = f(z.astype(np.float32), y.astype(np.float32), weights=w, pos_weight=pw, where=mask)
    np.testing.assert_allclose(got, np.broadcast_to(g, z.shape), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------- lowering elsewhere


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_exports_for_cpu_cuda_and_tpu(fn):
    x, y = _inputs(fn, (8, 16))
    f = _scalar_fn(fn, jnp.asarray(y))
    targets = {
        "value": lambda x: fn(x, jnp.asarray(y), reduction="none"),
        "value_and_grad": jax.value_and_grad(f),
        "hessian": jax.hessian(lambda x: f(x.reshape(8, 16)).sum()),
    }
    for name, g in targets.items():
        arg = x.reshape(-1) if name == "hessian" else x
        exp = jax.export.export(jax.jit(g), platforms=["cpu", "cuda", "tpu"])(
            jax.ShapeDtypeStruct(arg.shape, arg.dtype)
        )
        assert exp.platforms == ("cpu", "cuda", "tpu"), name
        assert exp.mlir_module_serialized, name


# ------------------------------------------------------------ focal numerics


#: gamma as a traced float32 scalar: one compilation for every case (the kernel has no
#: Python-level branch on gamma; a Python float gives the same bits, as the self-check's
#: test_batched_focal_variants_score_as_one_program_per_variant shows).
_focal_value_and_grad = jax.jit(
    jax.vmap(
        jax.value_and_grad(lambda z, y, g: FOCAL(z, y, alpha=0.25, gamma=g)),
        in_axes=(0, 0, None),
    )
)


@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 1.0, 2.0, 3.3])
@pytest.mark.parametrize("y", [0.0, 1.0, 0.3])
def test_focal_float32_within_a_few_ulp_of_mpmath(gamma, y):
    z = np.array(
        [-100, -50, -30, -20, -17, -5, -1, -1e-3, 0, 1e-3, 1, 5, 17, 20, 30, 50, 100], np.float32
    )
    got_l, got_g = map(np.asarray, _focal_value_and_grad(z, np.full_like(z, y), gamma))
    worst_l = worst_g = 0.0
    for zi, li, gi in zip(z, got_l, got_g, strict=True):
        # The options as the float32 kernel receives them (3.3 is 3.3f: at z = -20 the
        # difference alone is 8 ulps).
        exact_l, exact_g = ref.focal(
            zi, np.float32(y), alpha=float(np.float32(0.25)), gamma=float(np.float32(gamma))
        )
        floor = 0 if y in (0.0, 1.0) else 0.25 * max(y, 1 - y)
        worst_l = max(worst_l, ref.ulp_error(li, exact_l, np.float32))
        worst_g = max(worst_g, ref.ulp_error(gi, exact_g, np.float32, floor=floor))
    # "A few ulp": the power (1 - p_t)**gamma multiplies the ~1 ulp error of the sigmoid by
    # gamma, so the bound is 2 + gamma ulps, at least 4.
    bound = max(4.0, 2.0 + gamma)
    assert worst_l <= bound and worst_g <= bound, (worst_l, worst_g)


@settings(max_examples=20)
@given(
    st.sampled_from(FUNCTIONS),
    st.sampled_from([jnp.bfloat16, jnp.float16, jnp.float32]),
    st.lists(st.integers(1, 5), min_size=1, max_size=3),
    st.integers(0, 2**31 - 1),
)
def test_property_low_precision_rounds_the_float32_result_once(fn, dtype, shape, seed):
    x, y = _inputs(fn, tuple(shape), seed=seed)
    x_low = jnp.asarray(x, dtype)
    got = jax.jit(fn)(x_low, y)
    assert got.dtype == dtype and got.shape == x.shape
    # The float32 computation on the same (rounded) inputs, rounded once to dtype.
    expected = jax.jit(fn)(x_low.astype(jnp.float32), y).astype(dtype)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(expected, np.float32))


def test_the_summed_value_pass_loses_flushed_tails_as_the_readme_says():
    """README ('How it is built'): a sum takes XLA's log1p(exp(-|z|)), and XLA:CPU flushes a
    subnormal exp(-|z|) to 0 before a weight scales it back; "none" keeps the value. If this
    changes (a fix, or another backend), the README's sentence must change with it."""
    z, y = jnp.array([88.5]), jnp.array([1.0])
    each = float(BCE(z, y, weights=1e6)[0])
    assert each == pytest.approx(1e6 * float(mpmath.log1p(mpmath.exp(-88.5))), rel=1e-6, abs=0.0)
    assert f"{each:.2g}" == "3.7e-33"
    flushes = jax.default_backend() == "cpu"
    assert (float(BCE(z, y, weights=1e6, reduction="sum")) == 0.0) == flushes


def test_the_readmes_weighted_element_beyond_the_flush_band():
    """README, "Faithfully rounded": weight 1e6 at z = 88.5 with the right label is 3.7e-33
    elementwise, and on XLA:CPU, which flushes the subnormal exp(-|z|) of the sum's value
    pass before the weight scales it, 0 in a "sum" (a device that keeps subnormals sums
    the element)."""
    z, y = jnp.float32(88.5), jnp.float32(1.0)
    none = float(BCE(z, y, weights=1e6))
    summed = float(BCE(z, y, weights=1e6, reduction="sum"))
    assert none == pytest.approx(1e6 * float(mpmath.log1p(mpmath.exp(-88.5))), rel=1e-6)
    assert f"{none:.1e}" == "3.7e-33"
    assert summed == (0.0 if jax.default_backend() == "cpu" else pytest.approx(none, rel=1e-5))
