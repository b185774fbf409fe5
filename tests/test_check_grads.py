"""``jax.test_util.check_grads`` of the losses where they are hard to differentiate: order 2,
forward and reverse, float64, at confident logits and at probabilities next to 0 and 1
(issue 10); and the focal loss' reverse-over-reverse mixed derivative at confident right
answers against mpmath. The dense sweeps of every derivative against mpmath are in
tests/test_curvature.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref
from jax.test_util import check_grads

import jaxbce

#: On the worker that runs tests/test_curvature.py, as when they were part of it (the
#: suite's schedule, and time, stay as measured).
pytestmark = pytest.mark.xdist_group("curvature")

SBCE = jaxbce.sigmoid_binary_cross_entropy
PROBS = jaxbce.binary_cross_entropy
FOCAL = jaxbce.sigmoid_focal_loss

# Every input is three copies of the points, against labels 0, 1 and soft labels 0.3 (only
# the soft ones are differentiated: a hard label moved by a finite difference leaves [0, 1]).

EXTREME_LOGITS = np.array([30.0, 50.0, 80.0, -30.0, -50.0, -80.0])
SOFT = np.full(6, 0.3)


def _with_labels(x, soft):
    return jnp.tile(x, 3), jnp.concatenate([jnp.zeros(6), jnp.ones(6), soft])


def _check_grads(f, x, **kw):
    # Jitted, as a gradient-checking script would call it: eager, each of the kernel's
    # operations would be dispatched alone, many times over.
    check_grads(jax.jit(f), (x, SOFT), order=2, modes=["fwd", "rev"], **kw)


def test_check_grads_sigmoid_bce_at_extreme_logits(x64):
    def f(z, y):
        zz, yy = _with_labels(z, y)
        options = {"pos_weight": 3.5, "weights": 0.7, "label_smoothing": 0.1}
        return jnp.concatenate([SBCE(zz, yy), SBCE(zz, yy, **options)])

    _check_grads(f, EXTREME_LOGITS, eps=1e-6)


def test_check_grads_focal_at_extreme_logits(x64):
    """The default (gamma 2, alpha 0.25) and gamma 0.5 without alpha, whose modulating
    factor's derivative u^(gamma - 1) grows without bound where u = 1 - p_t underflows.

    Both option sets are one focal kernel ``vmap``-ped over the elements with their options:
    the public function passes ``gamma`` and ``alpha`` into its compiled program as traced
    values (``alpha=None`` as the -1 that turns the weighting off there), so this is the
    kernel code of both calls, compiled once. (Alone on this machine, forward over forward
    compiled in 1.8 s this way, 3.1 s as two calls, and 15.5 s ``vmap``-ped over the two
    option sets, each broadcast over the whole input.)"""
    gamma = np.repeat([2.0, 0.5], 18)
    alpha = np.repeat([0.25, -1.0], 18)

    def f(z, y):
        zz, yy = _with_labels(z, y)
        focal = lambda z, y, g, a: FOCAL(z, y, gamma=g, alpha=a)
        return jax.vmap(focal)(jnp.tile(zz, 2), jnp.tile(yy, 2), gamma, alpha)

    _check_grads(f, EXTREME_LOGITS, eps=1e-6)


def test_check_grads_probs_bce_near_0_and_1(x64):
    """p = 1e-10 with steps of 1e-14 (truncation (1e-4)^2), and p = 1 - 1e-10 with steps of
    1e-13: next to 1, p is resolved only to 1.1e-16, which quantises each step to ~5e-4 of
    itself, hence rtol 2e-3 there."""

    def f(p, y):
        pp, yy = _with_labels(p, y)
        return jnp.concatenate([PROBS(pp, yy), PROBS(pp, yy, label_smoothing=0.1)])

    _check_grads(f, np.full(6, 1e-10), eps=1e-14)
    _check_grads(f, np.full(6, 1 - 1e-10), eps=1e-13, rtol=2e-3)


@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_mixed_derivative_by_reverse_over_reverse_at_confident_right_answers(x64, alpha):
    """d/dy of d/dx by ``jacrev(grad)`` at a right hard label, within 1e-10 of mpmath out to
    |x| = 560: the cotangent met the cross-entropy (about e^-|x|) before the label
    derivative's e^|x|, and underflowed where (gamma + 1) |x| > 745 (0.2 % off at |x| = 480,
    gamma = 1, through two lost terms of gamma / |x| each)."""
    xs = np.array([300.0, 480.0, 560.0])
    cases = [(x, 1.0, g) for x in xs for g in (0.5, 1.0, 2.0)]
    cases += [(-x, 0.0, g) for x, _, g in cases]
    x, y, g = (np.array(c) for c in zip(*cases, strict=True))

    def loss(x, y, g):
        return FOCAL(x, y, gamma=g, alpha=alpha)

    mixed = jax.vmap(lambda x, y, g: jax.jacrev(jax.grad(loss), argnums=1)(x, y, g))
    got = np.asarray(jax.jit(mixed)(x, y, g))
    exact = [float(ref.focal_curvature(z, t, alpha=alpha, gamma=k)["dzy"]) for z, t, k in cases]
    np.testing.assert_allclose(got, exact, rtol=1e-10)
