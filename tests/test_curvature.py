"""Curvature of every loss (issue 10): first and second derivatives, in every autodiff mode,
are finite wherever the exact ones are, and float64 second derivatives are accurate.

Each loss is differentiated as users differentiate it, through the public function on scalar
inputs, ``vmap``-ped over a dense grid: ``grad`` and ``jacfwd`` (and ``jvp`` in ``x``) for
the first derivatives in the prediction ``x`` and the label ``y``; ``hessian`` (forward over
reverse), ``jacrev(grad)`` (reverse over reverse) and ``jvp`` of ``grad`` for d2/dx2, and the
mixed d2/dxdy in both orders (see :func:`_all_modes`). One jitted program per loss option
set and dtype computes all of them; labels, and the focal ``gamma`` and ``alpha``, are data
of that program (the public function passes ``gamma`` and ``alpha`` into its compiled
program as traced values, ``alpha=None`` as the -1 that turns the weighting off there), so
that the file compiles 12 programs: one per cross-entropy option set and dtype, and one per
dtype for both focal alpha cases.

"Finite where the exact one is finite": an exact value whose magnitude exceeds the dtype's
largest number counts as not finite (it overflows in any implementation). For logits every
first and second derivative in ``x`` and the mixed one are bounded by small constants at
every finite ``x`` (the sigmoids' products decay faster than the softplus grows), so they
must be finite everywhere; ``d/dy`` grows like ``|x|`` and is classified exactly (mpmath)
where ``|x| >= 1e30``. For probabilities ``1/p`` and ``1/p^2`` overflow for small ``p``, so
every ``p < 1e-15`` is classified with mpmath. Subnormal inputs count as the numbers they
are. At ``x = +-inf`` only ``d/dx`` is required finite (its limit; the loss itself is
infinite on the wrong side).

Accuracy: float64 second derivatives within ``1e-10`` relative of the closed forms in
``reference.py`` (200-bit mpmath, themselves checked against ``mpmath.diff`` here) where the
exact value is a normal float64 number; below the smallest normal number the result must be
at most ``4 * tiny`` in magnitude (XLA flushes subnormal results to zero).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import reference as ref

import jaxbce

#: The sweeps are cached per process and shared by several tests: one xdist worker runs
#: them all, so no sweep is computed twice.
pytestmark = pytest.mark.xdist_group("curvature")

#: Cases still failing on the kernel, each with what fails (issue 10's curvature target is
#: not met for them yet). Strict: a fix makes the case pass, the xfail then fails, and the
#: entry must go.
KNOWN_FAILURES = {
    "test_every_mode_computes_the_same_second_derivatives[focal-alpha_0.25-float64]": (
        "float64 focal, alpha 0.25: d2/dxdy at the soft label 1 - 1e-6 (|x| < 2e-5), where the "
        "exact value is 1e-7 of its O(1) terms and ill-conditioned (an ulp of y or alpha moves "
        "it by 1e-10 to 1e-8 relative): the orders differ by an ulp of the terms"
    ),
    "test_float64_second_derivatives_match_mpmath[focal-alpha_0.25]": (
        "float64 focal, alpha 0.25: d2/dxdy at the soft label 1 - 1e-6 (x = 1.3e-5, gamma 1: "
        "3e-9 off; x = -37: 1.3e-10), ill-conditioned there: an ulp of y or alpha moves the "
        "exact value by 1e-8 and 1.5e-10 relative"
    ),
}


@pytest.fixture(autouse=True)
def _known_failure(request):
    reason = KNOWN_FAILURES.get(request.node.name)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


LABELS = (0.0, 1.0, 0.3, 1e-6, 1 - 1e-6)
#: Where the focal kernel runs at +-2^64 and scales by |x| / 2^64 (jaxbce._focal).
FOCAL_LINEAR_FROM = 2.0**64
GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
DTYPES = (np.float32, np.float64)
RTOL_F64 = 1e-10
INF = float("inf")


class Case(NamedTuple):
    """A loss with one option set: ``loss(x, y, gamma)`` on scalars and its exact derivatives
    ``exact(x, y, gamma, dtype)`` (a dict with ``dx, dy, dxx, dxy, dyy``)."""

    kind: str  # "logits" or "probs"
    loss: Any
    exact: Any
    #: The focal ``alpha`` passed as data (-1: ``None``); None for the cross-entropies.
    alpha: float | None = None

    @property
    def focal(self) -> bool:
        return self.alpha is not None


def _opt(value, dtype):
    """An option as the kernel sees it: rounded to the compute dtype."""
    return float(np.asarray(value, dtype))


def _bce_exact(**options):
    def exact(x, y, gamma, dtype):
        d = ref.bce_curvature(x, y, **{k: _opt(v, dtype) for k, v in options.items()})
        return {"dx": d["dz"], "dy": d["dy"], "dxx": d["dzz"], "dxy": d["dzy"], "dyy": d["dyy"]}

    return exact


def _probs_exact(**options):
    def exact(x, y, gamma, dtype):
        d = ref.bce_probs_curvature(x, y, **{k: _opt(v, dtype) for k, v in options.items()})
        return {"dx": d["dz"], "dy": d["dy"], "dxx": d["dzz"], "dxy": d["dzy"], "dyy": d["dyy"]}

    return exact


def _focal_exact(alpha):
    def exact(x, y, gamma, dtype):
        a = None if alpha is None else _opt(alpha, dtype)
        d = ref.focal_curvature(x, y, alpha=a, gamma=gamma)
        return {"dx": d["dz"], "dy": d["dy"], "dxx": d["dzz"], "dxy": d["dzy"], "dyy": d["dyy"]}

    return exact


SBCE = jaxbce.sigmoid_binary_cross_entropy
PROBS = jaxbce.binary_cross_entropy
FOCAL = jaxbce.sigmoid_focal_loss

CASES = {
    "sigmoid_bce": Case("logits", lambda x, y, g: SBCE(x, y), _bce_exact()),
    "sigmoid_bce-smoothing": Case(
        "logits", lambda x, y, g: SBCE(x, y, label_smoothing=0.1), _bce_exact(eps=0.1)
    ),
    "sigmoid_bce-pos_weight-weights": Case(
        "logits",
        lambda x, y, g: SBCE(x, y, pos_weight=3.5, weights=0.7),
        _bce_exact(pw=3.5, w=0.7),
    ),
    "probs_bce": Case("probs", lambda x, y, g: PROBS(x, y), _probs_exact()),
    "probs_bce-smoothing": Case(
        "probs", lambda x, y, g: PROBS(x, y, label_smoothing=0.1), _probs_exact(eps=0.1)
    ),
    "focal-alpha_none": Case("logits", None, _focal_exact(None), alpha=-1.0),
    "focal-alpha_0.25": Case("logits", None, _focal_exact(0.25), alpha=0.25),
}
FOCAL_CASES = [n for n in CASES if CASES[n].focal]


def _focal_loss(x, y, g, a):
    return FOCAL(x, y, alpha=a, gamma=g)


# ------------------------------------------------------------------------- grids


def _logit_edges(dtype) -> list[float]:
    """Where float32 and float64 exponentials overflow, underflow or go subnormal, and
    the points of Finding 3 (50, 60, 75, 87)."""
    return [
        *(30, 37, 50, 60, 75, 80, 87, 87.3365, 88, 88.7, 88.7228, 89, 100, 103.28, 103.98),
        *(104, 110, 700, 708.4, 709, 709.78, 710, 744.44, 745.13, 746, 1e3, 1e4),
        *(1e6, 1e30, float(np.finfo(dtype).max)),
    ]


def _logit_grid(dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(x, is_reference)``: |x| < 20 every 0.02, 400 log-uniform magnitudes in
    [1e-30, 1] (Finding 7), 20..1e4 log-spaced, the edges, both signs, +-0 and +-inf; the
    reference subset (mpmath) holds the edges up to 1e4 and a sample of the rest."""
    rng = np.random.default_rng(10)
    dense = np.linspace(-20, 20, 2001)
    small = 10 ** rng.uniform(-30, 0, 400)
    wide = np.geomspace(20, 1e4, 300)
    edges = np.array(_logit_edges(dtype))
    parts = [
        (dense, np.arange(dense.size) % 40 == 0),
        (small, np.arange(small.size) % 20 == 0),
        (-small, np.arange(small.size) % 20 == 10),
        (wide, np.arange(wide.size) % 25 == 0),
        (-wide, np.arange(wide.size) % 25 == 12),
        (edges, edges <= 1e4),
        (-edges, edges <= 1e4),
        (np.array([0.0, -0.0, INF, -INF]), np.array([True, True, False, False])),
    ]
    x = np.concatenate([p for p, _ in parts]).astype(dtype)
    return x, np.concatenate([r for _, r in parts])


def _prob_edges(dtype) -> list[float]:
    """Subnormal, tiny, the clamp at log p = -100, and next to 1 (Finding 4)."""
    fi = np.finfo(dtype)
    clamp = np.asarray(np.exp(-100.0), dtype)
    near_clamp = [np.nextafter(clamp, dtype(0)), clamp, np.nextafter(clamp, dtype(1))]
    if dtype == np.float32:  # exp(-100) lies between the subnormals 26 and 27 * 2^-149
        near_clamp = [k * 2.0**-149 for k in (25, 26, 27, 28, 29)]
    return [
        *(0.0, 1.0, 1e-45, 1e-40, 3e-39, 1e-38, 1e-30, 1e-20, 1e-10, 1e-5, 0.5),
        *(float(fi.smallest_subnormal), float(fi.tiny), 1e-300, 1e-200, 1e-160, 1e-150),
        *(float(v) for v in near_clamp),
        *(1 - 2.0**-24, 1 - 2.0**-23, 1 - 2.0**-53, 1 - 1e-10, 1 - 1e-6),
        float(np.nextafter(dtype(1), dtype(0))),
    ]


def _prob_grid(dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(p, is_reference)``: [0, 1] every 0.001, p and 1 - p log-spaced down to the
    smallest subnormal and eps/2, and the edges."""
    fi = np.finfo(dtype)
    dense = np.linspace(0, 1, 1001)
    low = np.geomspace(float(fi.smallest_subnormal), 0.5, 400)
    high = 1 - np.geomspace(float(fi.epsneg), 0.5, 200)
    edges = np.array(_prob_edges(dtype))
    parts = [
        (dense, np.arange(dense.size) % 20 == 0),
        (low, np.arange(low.size) % 8 == 0),
        (high, np.arange(high.size) % 8 == 0),
        (edges, np.ones(edges.size, bool)),
    ]
    p = np.concatenate([p for p, _ in parts]).astype(dtype)
    return p, np.concatenate([r for _, r in parts])


def _grid(case: Case, dtype) -> tuple[np.ndarray, np.ndarray]:
    return _logit_grid(dtype) if case.kind == "logits" else _prob_grid(dtype)


# ----------------------------------------------------------------------- programs

QUANTITIES = ("dx", "dy", "dxx", "dxy", "dyy")
#: The second derivatives, each computed by several modes that must agree.
SECOND = ("dxx", "dxy", "dyy")


def _all_modes(loss):
    """Every derivative of the scalar ``loss(x, y)`` by every mode: ``{quantity: {mode:
    value}}``.

    Joint modes differentiate in ``(x, y)`` together, as ``jax.hessian(loss, (0, 1))`` does,
    so every tangent meets every coefficient; ``jvp`` and ``jvp(grad)`` hold ``y`` fixed, as
    a Hessian-vector product in the parameters does. The mixed derivative comes in both
    orders: ``[x,y]`` is d/dy of d/dx, ``[y,x]`` d/dx of d/dy. ``jacrev(grad)`` is built as
    ``jax.jacrev`` builds it (the VJP of ``grad`` pulled back over the basis), so that the
    same trace also yields ``grad``: each trace of the loss costs compile time.
    """

    def derivatives(x, y):
        one, zero = jnp.ones_like(x), jnp.zeros_like(x)
        basis = (jnp.stack([one, zero]), jnp.stack([zero, one]))
        grad = jax.grad(loss, (0, 1))
        g_rev, pull = jax.vjp(grad, x, y)
        r = jax.vmap(lambda tx, ty: pull((tx, ty)))(*basis)  # r[j][i]: d/d(arg j) of d/d(arg i)
        h = jax.hessian(loss, (0, 1))(x, y)  # h[i][j]: d/d(arg j) of d/d(arg i)
        g_fwd = jax.jacfwd(loss, (0, 1))(x, y)
        grad_x = jax.grad(loss)
        g_x, t_xx = jax.jvp(lambda x: grad_x(x, y), (x,), (one,))
        _, j_x = jax.jvp(lambda x: loss(x, y), (x,), (one,))
        return {
            "dx": {"grad": g_rev[0], "grad(x)": g_x, "jacfwd": g_fwd[0], "jvp": j_x},
            "dy": {"grad": g_rev[1], "jacfwd": g_fwd[1]},
            "dxx": {"hessian": h[0][0], "jacrev(grad)": r[0][0], "jvp(grad)": t_xx},
            "dxy": {
                "hessian[x,y]": h[0][1],
                "hessian[y,x]": h[1][0],
                "jacrev(grad)[x,y]": r[1][0],
                "jacrev(grad)[y,x]": r[0][1],
            },
            # d2/dy2 was never compared: the focal loss' was wrong at right hard labels.
            "dyy": {"hessian": h[1][1], "jacrev(grad)": r[1][1]},
        }

    return derivatives


class Sweep(NamedTuple):
    x: np.ndarray  # predictions
    y: np.ndarray  # labels
    gamma: np.ndarray  # focal gamma (0 for the cross-entropies)
    reference: np.ndarray  # bool: in the mpmath subset
    got: dict  # {quantity: {mode: array}}


@functools.cache
def sweep(name: str, dtype) -> Sweep:
    """Every derivative of case ``name`` over its grid x labels (x gammas), cached."""
    if CASES[name].focal:
        return _focal_sweeps(dtype)[name]
    case = CASES[name]
    x, is_ref = _grid(case, dtype)
    xs, ys = np.tile(x, len(LABELS)), np.repeat(np.asarray(LABELS, dtype), x.size)
    got = _run(lambda x, y: case.loss(x, y, 0.0), dtype, xs, ys)
    return Sweep(xs, ys, np.zeros_like(xs), np.tile(is_ref, len(LABELS)), got)


@functools.cache
def _focal_sweeps(dtype) -> dict[str, Sweep]:
    """Both focal cases' sweeps (grid x labels x gammas each), from one program in which
    ``alpha`` is data."""
    x, is_ref = _logit_grid(dtype)
    points = [(y, g, CASES[n].alpha) for n in FOCAL_CASES for g in GAMMAS for y in LABELS]
    xs = np.tile(x, len(points))
    ys, gs, alphas = (np.repeat(np.asarray(v, dtype), x.size) for v in zip(*points, strict=True))
    got = _run(_focal_loss, dtype, xs, ys, gs, alphas)
    n = x.size * len(GAMMAS) * len(LABELS)
    refs = np.tile(is_ref, len(GAMMAS) * len(LABELS))
    return {
        name: Sweep(
            xs[k * n : (k + 1) * n],
            ys[k * n : (k + 1) * n],
            gs[k * n : (k + 1) * n],
            refs,
            jax.tree.map(lambda a, k=k: a[k * n : (k + 1) * n], got),
        )
        for k, name in enumerate(FOCAL_CASES)
    }


def _run(loss, dtype, x, y, *data) -> dict:
    """``_all_modes`` of ``loss(x, y, *data)`` at every point: one jitted, vmapped program."""
    with jax.enable_x64(dtype == np.float64):

        def one(x, y, *d):
            return _all_modes(lambda x, y: loss(x, y, *d))(x, y)

        got = jax.jit(jax.vmap(one))(x, y, *data)
        return jax.tree.map(np.asarray, got)


def _exact_at(name: str, dtype, idx) -> dict:
    """``{quantity: [mpf]}``: the exact derivatives of case ``name`` at sweep points ``idx``."""
    s, case = sweep(name, dtype), CASES[name]
    values = {q: [] for q in QUANTITIES}
    for i in idx:
        d = case.exact(s.x[i], s.y[i], float(s.gamma[i]), dtype)
        for q in QUANTITIES:
            values[q].append(d[q])
    return values


@functools.cache
def reference(name: str, dtype) -> tuple[np.ndarray, dict]:
    """``(index, exact)`` on the mpmath subset of the sweep (a few hundred points a label)."""
    idx = np.flatnonzero(sweep(name, dtype).reference)
    return idx, _exact_at(name, dtype, idx)


@functools.cache
def finite_expected(name: str, dtype) -> dict:
    """``{quantity: bool array}``: where the exact derivative is a finite ``dtype`` number.

    Logits: every finite ``x``, except ``d/dy`` where mpmath says it overflows (only
    ``|x| >= 1e30`` can; every quantity is classified there), and the focal ``d2/dy2``
    where mpmath says it overflows (far out, with ``0 < gamma < 1``); ``x = +-inf`` is left to
    :func:`test_gradients_are_finite_at_extreme_logits`. Probabilities: finite except where
    mpmath says ``1/p`` or ``1/p^2`` overflows (only ``p < 1e-15`` can: ``1 - p >= eps/2``).
    """
    s = sweep(name, dtype)
    finite_x = np.isfinite(s.x)
    expected = {q: finite_x.copy() for q in QUANTITIES}
    if CASES[name].kind == "probs":
        idx = np.flatnonzero(s.x < 1e-15)
    else:
        idx = np.flatnonzero(finite_x & (np.abs(s.x) >= 1e30))
        if CASES[name].focal:
            # d2/dy2 at a right hard label grows like e^((1 - gamma)|x|) for 0 < gamma < 1:
            # where that may overflow, ask mpmath too.
            log_max = np.log(float(np.finfo(dtype).max))
            with np.errstate(invalid="ignore"):  # inf * 0 at x = +-inf, not finite anyway
                far = (1 - s.gamma) * np.abs(s.x) > log_max / 2
            far &= (0 < s.gamma) & (s.gamma < 1) & (np.abs(s.x) < FOCAL_LINEAR_FROM)
            idx = np.union1d(idx, np.flatnonzero(finite_x & far))
    big = mpmath.mpf(float(np.finfo(dtype).max))
    for q, values in _exact_at(name, dtype, idx).items():
        expected[q][idx] &= np.array([abs(v) <= big for v in values], bool)
    return expected


def _describe(name: str, dtype, q: str, bad: np.ndarray, got: np.ndarray) -> str:
    """The failing points with the smallest exact values first (the least excusable)."""
    s = sweep(name, dtype)
    idx = np.flatnonzero(bad)
    sample = idx[np.linspace(0, idx.size - 1, min(idx.size, 60)).astype(int)]
    exact = _exact_at(name, dtype, sample)[q]
    order = np.argsort([float(abs(e)) for e in exact])[:4]
    shown = "; ".join(
        f"x={s.x[sample[j]]!r} y={s.y[sample[j]]:g} gamma={s.gamma[sample[j]]:g}: "
        f"got {got[sample[j]]!r}, exact {mpmath.nstr(exact[j], 8)}"
        for j in order
    )
    return f"{idx.size} points, e.g. {shown}"


def _select(s: Sweep, x, y, gamma=None) -> np.ndarray:
    """Indices of the sweep points at predictions ``x`` (rounded to the dtype) and label y."""
    xs = np.asarray(x, s.x.dtype)
    mask = np.isin(s.x, xs) & (s.y == np.asarray(y, s.y.dtype))
    if gamma is not None:
        mask &= s.gamma == np.asarray(gamma, s.gamma.dtype)
    return np.flatnonzero(mask)


# -------------------------------------------------------------------- the sweeps

SWEEPS = [(n, d) for n in CASES for d in DTYPES]
SWEEP_IDS = [f"{n}-{np.dtype(d).name}" for n, d in SWEEPS]


@pytest.mark.parametrize("name, dtype", SWEEPS, ids=SWEEP_IDS)
def test_every_derivative_is_finite_where_the_exact_one_is(name, dtype):
    s = sweep(name, dtype)
    expected = finite_expected(name, dtype)
    failures = []
    for q in QUANTITIES:
        for mode, got in s.got[q].items():
            bad = expected[q] & ~np.isfinite(got)
            if bad.any():
                failures.append(f"{q} by {mode}: {_describe(name, dtype, q, bad, got)}")
    assert not failures, "\n".join(failures)


AGREEMENT = [(n, np.float64) for n in CASES] + [
    (n, np.float32) for n in CASES if not CASES[n].focal
]


@pytest.mark.parametrize(
    "name, dtype", AGREEMENT, ids=[f"{n}-{np.dtype(d).name}" for n, d in AGREEMENT]
)
def test_every_mode_computes_the_same_second_derivatives(name, dtype):
    """Every mode, and both orders of the mixed derivative, give one number at every finite
    grid point where they are finite (finiteness is the test above's).

    float64: within 2e-10 relative of each other, or 8 * tiny absolute. This is implied by
    the 1e-10 accuracy claim (below tiny: |got| <= 4 * tiny), so it extends that claim from
    the mpmath subset to the whole grid. float32, cross-entropies only: within 4 ulps (or
    4 * tiny), since their second derivatives are sums of terms of one sign
    (``c sigma(x) sigma(-x)``, ``q/p^2 + qc/(1-p)^2``, ``-(pw sigma(-x) + sigma(x))``,
    ``-(1/p + 1/(1-p))``); the focal loss' float32 terms cancel, and float32 accuracy is not
    claimed.
    """
    s = sweep(name, dtype)
    fi = np.finfo(dtype)
    rtol, atol = (2e-10, 8 * fi.tiny) if dtype == np.float64 else (4 * fi.eps, 4 * fi.tiny)
    failures = []
    for q in SECOND:
        (first, a), *others = s.got[q].items()
        for mode, b in others:
            both = np.isfinite(s.x) & np.isfinite(a) & np.isfinite(b)
            diff = np.where(both, np.abs(a - b), 0.0)
            scale = np.maximum(np.abs(a), np.abs(b))
            bad = both & (diff > rtol * scale) & (diff > atol)
            if bad.any():
                worst_rel = np.argmax(np.where(bad, diff / np.maximum(scale, fi.tiny), -1.0))
                worst_abs = np.argmax(np.where(bad, diff, -1.0))
                shown = "; ".join(
                    f"x={s.x[i]!r} y={s.y[i]:g} gamma={s.gamma[i]:g}: {b[i]!r} vs {a[i]!r}"
                    for i in dict.fromkeys([worst_rel, worst_abs])
                )
                failures.append(f"{q}: {mode} != {first} at {bad.sum()} points, e.g. {shown}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", list(CASES))
def test_float64_second_derivatives_match_mpmath(name):
    """Within 1e-10 relative where the exact value is normal; at most 4 * tiny in magnitude
    where it is below the smallest normal number (2.2e-308)."""
    s = sweep(name, np.float64)
    idx, exact = reference(name, np.float64)
    tiny, big = np.finfo(np.float64).tiny, np.finfo(np.float64).max
    failures = []
    for q in SECOND:
        ex = np.array([float(e) if abs(e) <= big else np.inf for e in exact[q]])
        normal = np.abs(ex) >= tiny
        for mode, got in s.got[q].items():
            g = got[idx]
            with np.errstate(invalid="ignore", over="ignore"):
                err = np.where(normal, np.abs(g - ex) / np.where(normal, np.abs(ex), 1), 0.0)
            bad = np.where(np.isfinite(ex), np.where(normal, ~(err <= RTOL_F64), 0), 0)
            bad = bad | (~normal & ~(np.abs(g) <= 4 * tiny))
            if bad.any():
                worst = np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf), -1))
                i = idx[worst]
                failures.append(
                    f"{q} by {mode}: {bad.sum()} of {idx.size} points, worst x={s.x[i]!r} "
                    f"y={s.y[i]:g} gamma={s.gamma[i]:g}: got {g[worst]!r}, "
                    f"exact {mpmath.nstr(exact[q][worst], 17)} (rel err {err[worst]:.3g})"
                )
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------ the reference


def _mp_bce(z, y, pw, w, eps):
    q, qc = y * (1 - eps) + eps / 2, (1 - y) * (1 - eps) + eps / 2
    return w * (pw * q * ref.softplus(-z) + qc * ref.softplus(z))


def _mp_probs(p, y, eps):
    q, qc = y * (1 - eps) + eps / 2, (1 - y) * (1 - eps) + eps / 2
    return -(q * max(mpmath.log(p), -100) + qc * max(mpmath.log(1 - p), -100))


def _mp_focal(z, y, alpha, gamma):
    p = 1 / (1 + mpmath.exp(-z))
    ce = -(y * mpmath.log(p) + (1 - y) * mpmath.log(1 - p))
    alpha_t = 1 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    return alpha_t * (y * (1 - p) + (1 - y) * p) ** gamma * ce


def _reference_pairs():
    """``(closed_form(x, y), value(x, y) in mpmath, x values)`` for every loss family."""
    mpf, logits = mpmath.mpf, (-7.5, -0.7, 0.0, 1e-3, 0.4, 3.0, 15.0)
    probs = (1e-30, 0.01, 0.3, 0.5, 0.9, 0.999)
    yield (ref.bce_curvature, lambda z, t: _mp_bce(z, t, 1, 1, 0), logits)
    yield (
        functools.partial(ref.bce_curvature, pw=3.5, w=0.7, eps=0.1),
        lambda z, t: _mp_bce(z, t, mpf(3.5), mpf(0.7), mpf(0.1)),
        logits,
    )
    for eps in (0.0, 0.1):
        value = functools.partial(_mp_probs, eps=mpf(eps))
        yield (functools.partial(ref.bce_probs_curvature, eps=eps), value, probs)
    for alpha in (None, 0.25):
        for gamma in (0.0, 0.5, 2.0, 5.0):
            a = None if alpha is None else mpf(alpha)
            value = functools.partial(_mp_focal, alpha=a, gamma=mpf(gamma))
            closed = functools.partial(ref.focal_curvature, alpha=alpha, gamma=gamma)
            yield (closed, value, logits)


def test_reference_closed_forms_equal_mpmath_diff_of_the_definitions():
    """The closed forms in ``reference.py`` against numerical differentiation (mpmath.diff at
    200 bits) of each loss written from its definition, at moderate points."""
    worst = 0
    for closed, value, xs in _reference_pairs():
        for x in xs:
            for y in (0.0, 1.0, 0.3):
                exact = closed(x, y)
                point = (mpmath.mpf(x), mpmath.mpf(y))
                for q, orders in (("dz", (1, 0)), ("dy", (0, 1)), ("dzz", (2, 0)), ("dzy", (1, 1))):
                    numeric = mpmath.diff(value, point, orders)
                    worst = max(worst, abs(exact[q] - numeric) / max(abs(numeric), 1))
    assert worst < 1e-40, worst


# ------------------------------------------------------------------ regressions


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["focal-alpha_none", "focal-alpha_0.25"])
def test_focal_hessian_is_finite_where_the_modulating_factor_underflows(name, dtype):
    """Finding 3: ``jax.hessian`` of the focal loss was NaN at z = 50, 60, 75, 87 with y = 1
    (and -z with y = 0) in float32, for every gamma including 0; the exact value is tiny
    (gamma = 0, alpha = 0.25, z = 50: 4.82e-23) and finite."""
    s = sweep(name, dtype)
    idx = np.concatenate([_select(s, [50, 60, 75, 87], 1.0), _select(s, [-50, -60, -75, -87], 0.0)])
    assert idx.size == 8 * len(GAMMAS)
    for mode, got in s.got["dxx"].items():
        # convex there: alpha_t (1 + gamma)^2 sigma(-|z|)^(1 + gamma) >= 0, possibly underflowing
        bad = idx[~(got[idx] >= 0) | ~np.isfinite(got[idx])]
        shown = ", ".join(f"(z={s.x[i]:g}, gamma={s.gamma[i]:g}): {got[i]!r}" for i in bad[:8])
        assert not bad.size, f"{mode}: {bad.size} of {idx.size} points, e.g. {shown}"
    if dtype == np.float64:
        # the exact value at (50, 1), gamma = 0: alpha_t sigma(50) sigma(-50)
        i = _select(s, [50], 1.0, gamma=0.0)[0]
        alpha_t = 1.0 if name == "focal-alpha_none" else 0.25
        expected = alpha_t * 1.9287498479639178e-22
        assert s.got["dxx"]["hessian"][i] == pytest.approx(expected, rel=1e-12, abs=0.0)


LOGIT_CASES = [n for n in CASES if CASES[n].kind == "logits"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", LOGIT_CASES)
def test_gradients_are_finite_at_extreme_logits(name, dtype):
    """optax's test idea: the gradient is finite at +-1e4, +-100, +-88.7, and at +-inf (its
    limit; there by ``grad`` and by ``jvp`` in x alone, since a joint forward pass in
    ``(x, y)`` meets the infinite d/dy), and so is the curvature at the finite ones. Every
    label, every gamma."""
    s = sweep(name, dtype)
    failures = []

    def check(what, mode, idx, got):
        bad = idx[~np.isfinite(got[idx])]
        failures.extend(
            f"{what} by {mode} at x={s.x[i]!r} y={s.y[i]:g} gamma={s.gamma[i]:g}: {got[i]!r}"
            for i in bad
        )

    for y in LABELS:
        finite = _select(s, [1e4, -1e4, 100, -100, 88.7, -88.7], y)
        infinite = _select(s, [INF, -INF], y)
        for q in QUANTITIES:
            for mode, got in s.got[q].items():
                check(q, mode, finite, got)
        for mode in ("grad", "grad(x)", "jvp"):
            check("dx", mode, infinite, s.got["dx"][mode])
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:12])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_probs_curvature_through_the_clamped_log(dtype):
    """Finding 4: d2/dp2 of ``binary_cross_entropy(p, 0)`` is 1/(1-p)^2 = 1 at tiny p (it was
    NaN for p <= 1e-20), and the mixed derivative d/dp d/dy = -(1/p [log p > -100] +
    1/(1-p) [log(1-p) > -100]) is -1 at p = 0 and p = 1 (it was NaN), whatever the label."""
    s = sweep("probs_bce", dtype)
    tiny_p = _select(s, [0.0, 1e-45, 1e-40, 1e-38, 1e-30, 1e-20], 0.0)
    assert tiny_p.size >= 5
    rtol = 4 * np.finfo(dtype).eps
    for mode, got in s.got["dxx"].items():
        np.testing.assert_allclose(got[tiny_p], 1.0, rtol=rtol, err_msg=f"{mode} at {s.x[tiny_p]}")
    for y in LABELS:
        ends = _select(s, [0.0, 1.0], y)
        assert ends.size >= 2
        for mode, got in s.got["dxy"].items():
            np.testing.assert_allclose(got[ends], -1.0, rtol=rtol, err_msg=f"{mode}, y={y}")


@pytest.mark.parametrize("name, keep", [("sigmoid_bce", 1.0), ("sigmoid_bce-smoothing", 0.9)])
def test_label_derivative_is_minus_the_logit_to_the_last_bits(name, keep):
    """Finding 7: d loss/dy of the sigmoid cross-entropy is exactly -(1 - eps) z (the two
    softplus terms differ by exactly z); it had a 19% relative error at z = 1e-7 and 0.14% at
    1e-5. float32, 1e-30 <= |z| <= 1 (400 log-uniform magnitudes, both signs, every label):
    within 2^-22 relative (two roundings, of 1 - eps and of the product)."""
    s = sweep(name, np.float32)
    small = (np.abs(s.x) >= 1e-30) & (np.abs(s.x) <= 1)
    assert small.sum() >= 800 * len(LABELS)
    keep32 = 1.0 - np.float64(np.float32(0.1)) if keep != 1.0 else 1.0
    expected = -keep32 * s.x[small].astype(np.float64)
    for mode, got in s.got["dy"].items():
        rel = np.abs(got[small] - expected) / np.abs(expected)
        i = np.argmax(rel)
        assert rel[i] <= 2.0**-22, (
            f"{mode}: z={s.x[small][i]!r}, y={s.y[small][i]:g}: got {got[small][i]!r}, "
            f"expected {expected[i]!r} (relative error {rel[i]:.3g}; "
            f"{(rel > 2.0**-22).sum()} of {rel.size} points over 2^-22)"
        )


#: The modes of :func:`_focal_d2y_by_every_mode`, in its order.
D2Y_MODES = ("hessian", "jacfwd(jacfwd)", "jacrev(grad)", "jvp(grad)")


def _focal_d2y_by_every_mode(points, alpha) -> list[np.ndarray]:
    """float64 d2/dy2 of the focal loss at ``points``, ``(x, y, gamma)`` triples, by each of
    :data:`D2Y_MODES` (one jitted, vmapped program)."""
    x, y, g = (np.array(v, np.float64) for v in zip(*points, strict=True))
    with jax.enable_x64(True):

        def d2y(x, y, g):
            f = lambda y: FOCAL(x, y, alpha=alpha, gamma=g)
            grad = jax.grad(f)
            modes = (jax.hessian(f), jax.jacfwd(jax.jacfwd(f)), jax.jacrev(grad))
            return [m(y) for m in modes] + [jax.jvp(grad, (y,), (jnp.ones_like(y),))[1]]

        return [np.asarray(m) for m in jax.jit(jax.vmap(d2y))(x, y, g)]


@pytest.mark.parametrize("alpha", [None, 0.25], ids=["alpha_none", "alpha_0.25"])
def test_float64_focal_d2y_near_zero_by_every_mode(alpha):
    """d2/dy2 near x = 0 (O(x^2) for alpha None, O(x) with alpha) took the O(x) label slopes
    of u, and at hard labels of D = n_s + n_b e^|x| and of v (the wrong label's log1p
    argument), as differences of O(1) terms, an ulp of 1 off each: 1e-8 relative at
    |x| = 1e-8, 1e-4 at 1e-12, all of it below 1e-16 (reverse over reverse as well, whose
    cotangents of y and 1 - y cancelled the same way). Within 1e-10 of mpmath relative to
    the larger of the value and its terms, by hessian, forward over forward, reverse over
    reverse and jvp of grad, right and wrong hard labels and a soft one."""
    xs = np.array([1e-8, -1e-8, 1e-12, -1e-12, 3e-5, -1e-20])
    points = [(x, y, g) for x in xs for y in (0.0, 0.3, 1.0) for g in (0.5, 1.0, 2.0, 5.0)]
    got = _focal_d2y_by_every_mode(points, alpha)
    failures = []
    for i, (xi, yi, gi) in enumerate(points):
        exact = ref.focal_curvature(xi, yi, alpha=alpha, gamma=gi)
        ex = float(exact["dyy"])
        scale = max(abs(ex), float(exact["dyy_terms"]))
        for mode, m in zip(D2Y_MODES, got, strict=True):
            if not abs(m[i] - ex) <= RTOL_F64 * scale:
                failures.append(f"{mode} x={xi} y={yi} gamma={gi}: {m[i]!r}, exact {ex!r}")
    assert not failures, f"{len(failures)} of {4 * len(points)}, e.g. {failures[:4]}"


@pytest.mark.parametrize(
    "alpha", [None, 0.25, 0.75], ids=["alpha_none", "alpha_0.25", "alpha_0.75"]
)
def test_float64_focal_dxy_at_hard_labels_by_every_mode(alpha):
    """d2/dxdy at a hard label is alpha_t' dF/dx + alpha_t d2F/dxdy (F the unweighted loss), two
    O(1) terms whose sum is (1 - 4 alpha) 2^-gamma-1 (gamma log 2 + 1) at x = 0, y = 1: O(x)
    for alpha 1/4 (and at y = 0 for alpha 3/4), whatever gamma; and, at a wrong hard label,
    1 - alpha (gamma + 3) + O(|x| e^-|x|) as x -> -inf (y = 1), 0 for alpha 1/4 at gamma 1.
    Autodiff formed the terms separately and left an ulp of 1: -2.8e-18 for -9.3e-26 at
    x = 6e-24, 8e-10 relative at x = -17.26, the wrong sign from x = -28, and every mode and
    order another number. Within 1e-10 of mpmath relative, by hessian (both orders), forward
    over forward and reverse over reverse (both orders), at both hard labels (mirrored: x at
    y = 1 is -x at y = 0)."""
    xs = [7e-28, -2.3e-16, 1e-12, -1e-8, 3e-5, -0.6, 0.9, -1.5, -17.26, -27.9, -38.1, -122.0]
    xs += [-205.0, -700.0, -709.0]
    points = [(sx, y, g) for x in xs for sx, y in ((x, 1.0), (-x, 0.0)) for g in GAMMAS]
    x, y, g = (np.array(v, np.float64) for v in zip(*points, strict=True))
    with jax.enable_x64(True):

        def dxy(x, y, g):
            f = lambda x, y: FOCAL(x, y, alpha=alpha, gamma=g)
            h = jax.hessian(f, (0, 1))(x, y)
            ff = jax.jacfwd(jax.jacfwd(f, (0, 1)), (0, 1))(x, y)
            rr = jax.jacrev(jax.grad(f, (0, 1)), (0, 1))(x, y)
            return [h[0][1], h[1][0], ff[0][1], ff[1][0], rr[0][1], rr[1][0]]

        got = [np.asarray(m) for m in jax.jit(jax.vmap(dxy))(x, y, g)]
    modes = ("hessian[x,y]", "hessian[y,x]", "jacfwd[x,y]", "jacfwd[y,x]", "jacrev[x,y]")
    modes += ("jacrev[y,x]",)
    tiny = np.finfo(np.float64).tiny
    failures = []
    for i, (xi, yi, gi) in enumerate(points):
        ex = float(ref.focal_curvature(xi, yi, alpha=alpha, gamma=gi)["dzy"])
        for mode, m in zip(modes, got, strict=True):
            ok = abs(m[i] - ex) <= RTOL_F64 * abs(ex) if abs(ex) >= tiny else abs(m[i]) <= 4 * tiny
            if not ok:
                failures.append(f"{mode} x={xi} y={yi} gamma={gi}: {m[i]!r}, exact {ex!r}")
    assert not failures, f"{len(failures)} of {6 * len(points)}, e.g. {failures[:4]}"


@pytest.mark.parametrize(
    "alpha", [None, 0.25, 0.75], ids=["alpha_none", "alpha_0.25", "alpha_0.75"]
)
def test_float64_focal_d2y_at_soft_labels_by_every_mode(alpha):
    """d2/dy2 at a soft label y is |x| times u^(gamma - 2) n (gamma + 1) (2 a' n + gamma alpha_t)
    plus O(|x| e^-|x|) (n = y for x < 0, 1 - y for x > 0, a' = d alpha_t / dn), its terms of
    size |x|: at y = 0.3 (x < 0) with alpha 1/4, gamma 1/2, and at 0.7 (x > 0) with alpha 3/4,
    2 a' n + gamma alpha_t is the 1.4e-17 by which float64's 0.3 misses 3/10, and autodiff,
    which adds the terms, left an ulp of them: 1.4e-14 for 1.6e-15 at x = -43, 0 or the wrong
    sign elsewhere from |x| = 14, hessian and reverse over reverse two numbers (7e13 and
    2.2e14 for 3.8e13 at x = -1e30). Within 1e-10 of mpmath relative to the value itself, by
    hessian, forward over forward, reverse over reverse and jvp of grad."""
    xs = [-1.5, -13.6, -14.4, -20.0, -25.67, -30.0, -37.0, -43.15, -122.0, -263.2, -1e4, -1e30]
    points = [(sx, y, g) for x in xs for sx, y in ((x, 0.3), (-x, 0.7), (x, 1e-6)) for g in GAMMAS]
    got = _focal_d2y_by_every_mode(points, alpha)
    failures = []
    for i, (xi, yi, gi) in enumerate(points):
        ex = float(ref.focal_curvature(xi, yi, alpha=alpha, gamma=gi)["dyy"])
        for mode, m in zip(D2Y_MODES, got, strict=True):
            if not abs(m[i] - ex) <= RTOL_F64 * abs(ex):
                failures.append(f"{mode} x={xi} y={yi} gamma={gi}: {m[i]!r}, exact {ex!r}")
    assert not failures, f"{len(failures)} of {4 * len(points)}, e.g. {failures[:4]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_focal_d2y_beyond_2_to_64(dtype):
    """Beyond |x| = 2^64 the kernel runs at +-2^64 and scales by |x| / 2^64. There reverse
    over reverse was NaN at finfo.max (every label with gamma 0 and alpha 0.25, wrong hard
    and soft labels otherwise: the cotangent times |x| / 2^64 overflowed inside the kernel),
    and float32's d2/dy2 at the soft label 0.3 with alpha 0.25, gamma 0.5, a cancellation
    of terms of size |x|, was 5.96e22 (hessian) and 0 (reverse over reverse) for -4.08e22 at
    x = -1e30 (jaxbce._focal_huge). Within 1e-3 of mpmath, by every mode, wherever the exact
    value is finite."""
    failures = []
    for name in FOCAL_CASES:
        s = sweep(name, dtype)
        idx = np.flatnonzero(np.isfinite(s.x) & (np.abs(s.x) >= FOCAL_LINEAR_FROM))
        exact = _exact_at(name, dtype, idx)["dyy"]
        big = mpmath.mpf(float(np.finfo(dtype).max))
        ex = np.array([float(e) if abs(e) <= big else np.inf for e in exact])
        for mode, got in s.got["dyy"].items():
            g = got[idx]
            with np.errstate(invalid="ignore", over="ignore"):
                bad = np.isfinite(ex) & ~(np.abs(g - ex) <= 1e-3 * np.abs(ex))
            failures += [f"{name} {mode} x={s.x[i]!r} y={s.y[i]:g}" for i in idx[bad]]
    assert not failures, f"{len(failures)} points, e.g. {failures[:4]}"


def _linear_focal_dy_dgamma(x: float, y: float, gamma: float, alpha: float | None):
    """d/dgamma of d/dy beyond |x| = 2^64, where the focal loss is alpha_t n^(gamma + 1) |x|
    (n = y for x < 0, 1 - y for x > 0; e^-|x| is below every float), by mpmath."""
    with mpmath.workdps(60):
        x, y0 = mpmath.mpf(x), mpmath.mpf(y)

        def loss(y, g):
            n = y if x < 0 else 1 - y
            at = 1 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
            return at * n ** (g + 1) * abs(x)

        return mpmath.diff(loss, (y0, mpmath.mpf(gamma)), (1, 1))


@pytest.mark.parametrize(
    "order",
    [
        "dgamma(dy)",
        pytest.param(
            "dy(dgamma)",
            marks=pytest.mark.xfail(
                strict=True,
                reason="d/dy of the focal d/dgamma by hessian is NaN at x = -finfo.max, y = 1, "
                "gamma 2 (float32 and float64): the d/dgamma coefficient, -value log u, meets "
                "an overflowing label slope of the value times log u = 0",
            ),
        ),
    ],
)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_focal_d2y_dgamma_beyond_2_to_64(dtype, order):
    """The label slope of d/dy beyond 2^64 comes from jaxbce._focal_huge, and its gamma
    slope with it: d/dgamma of d/dy by reverse over reverse was NaN at x = -finfo.max (y = 1,
    gamma 2; y = 0.3, gamma 0.5, alpha 0.25 in float64), where the cotangent times
    |x| / 2^64 went through the kernel. Within 1e-3 of mpmath, by hessian and reverse over
    reverse, at labels whose big-logistic weight n is not 0."""
    big = float(np.finfo(dtype).max)
    points = [
        (x, y, g, a)
        for x in (-1e30, 1e30, -big, big)
        for y in LABELS
        for g in (0.5, 1.0, 2.0, 5.0)
        for a in (None, 0.25)
        if (y if x < 0 else 1 - y) > 0
    ]
    i, j = (0, 1) if order == "dgamma(dy)" else (1, 0)
    with jax.enable_x64(dtype == np.float64):

        def both(x, y, g, a):
            def f(y, g):
                return FOCAL(x, y, alpha=a, gamma=g)

            h = jax.hessian(f, (0, 1))(y, g)
            r = jax.jacrev(jax.grad(f, (0, 1)), (0, 1))(y, g)
            return h[i][j], r[i][j]

        failures = []
        for alpha in (None, 0.25):
            sel = [p for p in points if p[3] == alpha]
            x, y, g = (np.array([p[k] for p in sel], dtype) for k in range(3))
            got = jax.jit(jax.vmap(lambda x, y, g, a=alpha: both(x, y, g, a)))(x, y, g)
            a = None if alpha is None else _opt(alpha, dtype)
            for k in range(len(sel)):
                e = float(_linear_focal_dy_dgamma(float(x[k]), float(y[k]), float(g[k]), a))
                if not abs(e) <= big:
                    continue  # overflows
                for mode, m in zip(("hessian", "jacrev(grad)"), got, strict=True):
                    if not abs(float(m[k]) - e) <= 1e-3 * abs(e):
                        failures.append(f"{mode} x={x[k]!r} y={y[k]:g} gamma={g[k]:g}: {m[k]!r}")
    assert not failures, f"{len(failures)} points, e.g. {failures[:4]}"


@pytest.mark.parametrize("name", FOCAL_CASES)
def test_float64_focal_d2y_matches_mpmath(name):
    """d2/dy2 was wrong at right hard labels (0.115 for 0.160 at x = 3, y = 1, gamma 2,
    alpha 0.25: a label derivative of ce/u was missing; found by an adversarial pass), lost
    half its value from x = 160 (gamma 5), where u^gamma alone underflowed, and was up to
    0.79 off for |x| < 1e-4, where the label slopes of u (and of D and v at hard labels) are
    O(x) and were formed as differences of O(1) terms. Far out at right hard labels it lost
    half its value, or all of it, where the label slope of the scaled u^gamma 2^shift was
    lost: that factor underflowed (from |x| ~ 140 at gamma 5, 450 at gamma 2), e^|x| was
    capped (|x| > 708.8, gamma <= 1) or its product with it overflowed (gamma 0.5, |x| >
    1170). Within 1e-10 of mpmath, relative to the larger of the exact value and its terms
    (it has zeros, e.g. O(x^2) at x = 0), by every mode, on every reference point (|x| up to
    1e4) where the exact value does not overflow."""
    s = sweep(name, np.float64)
    idx, _ = reference(name, np.float64)
    a = CASES[name].alpha
    exact = [
        ref.focal_curvature(s.x[i], s.y[i], alpha=None if a < 0 else a, gamma=float(s.gamma[i]))
        for i in idx
    ]
    ex = np.array([float(d["dyy"]) for d in exact])  # inf where it overflows
    scale = np.maximum(np.abs(ex), [float(d["dyy_terms"]) for d in exact])
    failures = []
    for mode, got in s.got["dyy"].items():
        with np.errstate(invalid="ignore"):
            err = np.abs(got[idx] - ex) / np.maximum(scale, np.finfo(np.float64).tiny)
        failures += [
            f"{mode} x={s.x[i]!r} y={s.y[i]:g} gamma={s.gamma[i]:g}: got {got[i]!r}, "
            f"exact {ex[k]!r} (error {err[k]:.2g} of the terms)"
            for k, i in enumerate(idx)
            if np.isfinite(ex[k]) and not err[k] <= RTOL_F64
        ]
    assert not failures, f"{len(failures)} points, e.g. {failures[:6]}"


@pytest.mark.parametrize("alpha", [None, 0.25], ids=["alpha_none", "alpha_0.25"])
def test_float64_focal_d2y_far_out_by_every_mode(alpha):
    """d2/dy2 at right hard labels (y = 1 at x > 0, y = 0 at x < 0) far out, where
    u = sigma(-|x|) is tiny: half of it, or all, was lost to the scaled u^gamma 2^shift, whose
    label slope gamma u^gamma e^|x| 2^shift underflowed with it (gamma 2 from |x| ~ 450,
    gamma 5 from 140 in reverse over reverse), met a capped e^|x| (|x| > 708.8) or
    overflowed (gamma 0.5 from 1170), and beyond 2^64 (1.0 for 2.0e30 at x = 1e30,
    gamma 1); above |x| = 20 it read ce/u as 1 (9e-11 off at x = 20, gamma 5). Within
    1e-10 of mpmath, relative to the larger of the value and its terms, by hessian, forward
    over forward, reverse over reverse and jvp of grad; at most 4 * tiny where those are
    below the smallest normal number."""
    xs = np.array([21.0, 160.0, 200.0, 400.0, 600.0, 709.0, 800.0, 1277.5, 1e4, 1e30])
    points = [(sx, y, g) for x in xs for sx, y in ((x, 1.0), (-x, 0.0)) for g in (0.5, 1, 2, 5)]
    got = _focal_d2y_by_every_mode(points, alpha)
    tiny, big = np.finfo(np.float64).tiny, np.finfo(np.float64).max
    failures, checked = [], 0
    for i, (xi, yi, gi) in enumerate(points):
        exact = ref.focal_curvature(xi, yi, alpha=alpha, gamma=gi)
        if abs(exact["dyy"]) > big:
            continue  # overflows (gamma 0.5 at 1e4 and beyond)
        ex = float(exact["dyy"])
        scale = max(abs(ex), min(float(exact["dyy_terms"]), big))
        for mode, m in zip(D2Y_MODES, got, strict=True):
            checked += 1
            ok = abs(m[i] - ex) <= RTOL_F64 * scale if scale >= tiny else abs(m[i]) <= 4 * tiny
            if not ok:
                failures.append(f"{mode} x={xi} y={yi} gamma={gi}: {m[i]!r}, exact {ex!r}")
    assert checked >= 4 * 60
    assert not failures, f"{len(failures)} of {checked}, e.g. {failures[:4]}"


#: Far-out logits where float64 focal d2/dx2 and d2/dxdy failed (see the tests below).
FAR_OUT = (21.0, 37.0, 100.0, 141.1, 352.1, 592.07, 708.4, 709.78, 710.0, 800.0, 1388.25, 1e4)


@pytest.mark.parametrize("alpha", [None, 0.25], ids=["alpha_none", "alpha_0.25"])
def test_float64_focal_second_derivatives_far_out_by_every_mode(alpha):
    """d2/dx2 and d2/dxdy far out. d2/dx2 was 0.0 near |x| = 708.4 at every label but the
    right hard one, where sigma(-|x|), a factor of each term, is subnormal and flushed while
    the sum, about |x| e^-|x| (-5.9e-306 at x = 708.4, y = 0, gamma 0.5), is normal; d2/dxdy
    at right hard labels lost the label slope of the cross-entropy there (7e-4 at
    x = -708.4, y = 0, gamma 0.5), and by reverse over reverse the cotangent 2^-shift times
    the slope underflowed (0.0 or 2e-3 off from |x| = 141 at gamma 5, 352 at gamma 2, 592 at
    gamma <= 1); at a wrong hard label where its O(1) terms cancel exactly (y = 1, alpha
    0.25, gamma 1: -|x| e^-|x| / 4) the two orders differed by 1 % from |x| = 37 and one
    was 0.0 from 100. Within 1e-10 of mpmath by hessian, reverse over reverse, forward over
    forward and jvp of grad, both orders of the mixed one; at most 4 * tiny where the exact
    value is below the smallest normal number."""
    points = [
        (sx, y, g)
        for x in FAR_OUT
        for sx in (x, -x)
        for y in (0.0, 1.0, 0.3, 1e-6, 1 - 1e-6)
        for g in (0.0, 0.5, 1.0, 2.0, 5.0)
    ]
    x, y, g = (np.array(v, np.float64) for v in zip(*points, strict=True))
    with jax.enable_x64(True):

        def modes(x, y, g):
            f = lambda x, y: FOCAL(x, y, alpha=alpha, gamma=g)
            grad = jax.grad(f, (0, 1))
            h = jax.hessian(f, (0, 1))(x, y)
            r = jax.jacrev(grad, (0, 1))(x, y)
            ff = jax.jacfwd(jax.jacfwd(f, (0, 1)), (0, 1))(x, y)
            t_xx = jax.jvp(lambda x: grad(x, y)[0], (x,), (jnp.ones_like(x),))[1]
            xx = {"hessian": h[0][0], "jacrev(grad)": r[0][0], "jvp(grad)": t_xx}
            xx |= {"jacfwd(jacfwd)": ff[0][0]}
            xy = {"hessian[x,y]": h[0][1], "hessian[y,x]": h[1][0]}
            xy |= {"jacrev(grad)[x,y]": r[0][1], "jacrev(grad)[y,x]": r[1][0]}
            xy |= {"jacfwd(jacfwd)[x,y]": ff[0][1], "jacfwd(jacfwd)[y,x]": ff[1][0]}
            return {"dzz": xx, "dzy": xy}

        got = jax.tree.map(np.asarray, jax.jit(jax.vmap(modes))(x, y, g))
    tiny = np.finfo(np.float64).tiny
    failures, checked = [], 0
    for i, (xi, yi, gi) in enumerate(points):
        exact = ref.focal_curvature(xi, yi, alpha=alpha, gamma=gi)
        for q, by_mode in got.items():
            ex = float(exact[q])
            for mode, m in by_mode.items():
                checked += 1
                ok = (
                    abs(m[i] - ex) <= RTOL_F64 * abs(ex)
                    if abs(ex) >= tiny
                    else abs(m[i]) <= 4 * tiny
                )
                if not ok:
                    failures.append(f"{q} {mode} x={xi} y={yi} gamma={gi}: {m[i]!r}, exact {ex!r}")
    assert checked == 10 * len(points)
    assert not failures, f"{len(failures)} of {checked}, e.g. {failures[:4]}"


def test_float64_focal_gamma_mixed_derivative_far_out():
    """d/dgamma of d/dx, both orders, by forward and reverse over reverse: far out the logit
    derivatives of the coefficients are closed forms (jaxbce._focal_far), F_x log u + F u_x / u
    for this one. At a wrong hard label it was 0.0 from |x| = 708.4 (exact -8.7e-306 at
    x = -709, y = 1, gamma 2), where its terms, about e^-|x| and |x| e^-|x|, are subnormal and
    normal. Within 1e-10 of mpmath."""
    points = [
        (sx, y, g, a)
        for x in (21.0, 300.0, 708.4, 709.0, 712.0)
        for sx in (x, -x)
        for y in (0.0, 1.0, 0.3)
        for g in (0.5, 2.0)
        for a in (-1.0, 0.25)
    ]
    x, y, g, a = (np.array(v, np.float64) for v in zip(*points, strict=True))
    with jax.enable_x64(True):

        def modes(x, y, g, a):
            f = lambda x, g: FOCAL(x, y, alpha=a, gamma=g)
            h = jax.hessian(f, (0, 1))(x, g)
            r = jax.jacrev(jax.grad(f, (0, 1)), (0, 1))(x, g)
            return [h[0][1], h[1][0], r[0][1], r[1][0]]

        got = [np.asarray(m) for m in jax.jit(jax.vmap(modes))(x, y, g, a)]
    failures = []
    for i, (xi, yi, gi, ai) in enumerate(points):
        alpha = None if ai < 0 else ai
        z, t = mpmath.mpf(xi), mpmath.mpf(yi)
        with mpmath.workprec(1500):
            d = ref.focal_curvature(xi, yi, alpha=alpha, gamma=gi)
            s_plus, s_minus = ref.sigmoid(z), ref.sigmoid(-z)
            u = t * s_minus + (1 - t) * s_plus
            value = ref.focal_value(z, t, alpha=alpha, gamma=gi)
            ex = float(d["dz"] * mpmath.log(u) + value * (1 - 2 * t) * s_plus * s_minus / u)
        for k, m in enumerate(got):
            if not abs(m[i] - ex) <= RTOL_F64 * abs(ex):
                failures.append(f"mode {k} x={xi} y={yi} gamma={gi} alpha={ai}: {m[i]!r}, {ex!r}")
    assert not failures, f"{len(failures)} of {4 * len(points)}, e.g. {failures[:4]}"


def test_float32_focal_d2y_beyond_88():
    """Found by an adversarial pass (2026-11-27; float32 curvature accuracy is not claimed,
    this is a regression): beyond |z| = 88.7, where e^|z| overflows float32, the label
    derivative of D = n_s + n_b e^|z| was capped and d2/dy2 lost half its value (99.0 for
    200 at z = 100, gamma 1); it now comes from logs, as in float64."""
    loss = lambda y: FOCAL(np.float32(100.0), y, gamma=1.0, alpha=None)
    assert float(jax.hessian(loss)(np.float32(1.0))) == pytest.approx(200.0, rel=1e-4)


@pytest.mark.xfail(
    strict=True,
    reason="float32 focal label curvature at right hard labels (adversarial pass, "
    "2026-11-27; float32 curvature accuracy is not claimed, and this is recorded so that "
    "it is not forgotten): reverse over reverse, d2/dz dy is 9.5 % off at z = 30 (gamma 2, "
    "alpha 0.25) where a cotangent underflows",
)
def test_float32_focal_reverse_mixed_gap():
    f32 = np.float32
    loss = lambda z, y: FOCAL(z, y, gamma=2.0, alpha=0.25)
    x = f32(30.0)
    exact = ref.focal_curvature(x, 1.0, alpha=0.25, gamma=2.0)["dzy"]
    got = jax.grad(jax.grad(loss, argnums=0), argnums=1)(x, f32(1.0))
    assert float(got) == pytest.approx(float(exact), rel=1e-4, abs=0.0)


def test_float32_probs_forward_over_forward_at_subnormal_p():
    f = lambda p, y: PROBS(p, y)
    h = jax.jacfwd(jax.jacfwd(f, argnums=(0, 1)), argnums=(0, 1))(np.float32(1e-40), np.float32(0))
    assert float(h[0][0]) == pytest.approx(1.0) and float(h[1][1]) == 0.0


#: ``(p, y, options)`` where forward over forward in ``(p, y)`` was NaN at an entry whose
#: exact value is finite: d2/dp2 and d2/dy2 at a subnormal p with y = 0 (the other input's
#: coefficient, d2/dpdy = ``-w(1-eps)(1/p + 1/(1-p))``, overflows), and d2/dpdy itself
#: wherever d2/dp2 (``w q/p^2``) overflows while it does not, from p ~ 1e-19.
_PROBS_FORWARD_OVER_FORWARD = [
    *((1e-40, 0.0, name) for name in ("plain", "weights")),
    *(
        (p, y, name)
        for name in ("plain", "weights")
        for p in (3e-39, 1e-38, 1e-30, 1e-20)
        for y in (0.3, 1.0)
        if (p, y, name) != (3e-39, 1.0, "weights")  # there every entry overflows
    ),
    *((p, y, "smoothing") for p in (3e-39, 1e-38, 1e-30, 1e-20) for y in (0.0, 0.3, 1.0)),
]
_PROBS_OPTIONS = {
    "plain": ({}, {}),
    "weights": ({"weights": np.float32(2.5)}, {"w": 2.5}),
    "smoothing": ({"label_smoothing": 0.1}, {"eps": 0.1}),
}


@pytest.mark.parametrize("p, y, options", _PROBS_FORWARD_OVER_FORWARD)
def test_float32_probs_second_derivatives_through_forward_mode_at_tiny_p(p, y, options):
    # jacfwd in (p, y) gives p a zero tangent in y's column and y one in p's: forward over
    # forward met the overflowing derivative of the other input's coefficient with it
    # (-inf * 0). Reverse over forward transposes the same products, so it is checked too.
    kw, exact_kw = _PROBS_OPTIONS[options]
    f = lambda p, y: PROBS(p, y, **kw)
    exact = ref.bce_probs_curvature(
        np.float32(p), y, **{k: _opt(v, np.float32) for k, v in exact_kw.items()}
    )
    want = [[exact["dzz"], exact["dzy"]], [exact["dzy"], exact["dyy"]]]
    big = float(np.finfo(np.float32).max)
    for order in (jax.jacfwd, jax.jacrev):
        h = order(jax.jacfwd(f, argnums=(0, 1)), argnums=(0, 1))(np.float32(p), np.float32(y))
        for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
            if abs(want[i][j]) <= big:
                got = float(h[i][j])
                assert got == pytest.approx(float(want[i][j]), rel=1e-5, abs=0.0), (order, i, j)


@pytest.mark.parametrize("order", ["jacfwd", "hessian"])
def test_float32_probs_weight_curvature_at_a_subnormal_p(order):
    # d2/dw dp = -q/p + qc/(1-p) = 1 at p = 1e-40, y = 0: the weight's coefficient, the
    # unweighted loss, was differentiated through its value, 0 * d(-log p) = 0 * -inf.
    f = lambda p, w: PROBS(p, np.float32(0.0), weights=w)
    outer = jax.jacfwd if order == "jacfwd" else jax.jacrev
    h = jax.jacfwd(outer(f, argnums=(0, 1)), argnums=(0, 1))(np.float32(1e-40), np.float32(2.5))
    assert [[float(v) for v in row] for row in h] == [[2.5, 1.0], [1.0, 0.0]]
