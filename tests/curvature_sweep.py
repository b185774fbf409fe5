"""The curvature sweeps that ``test_curvature.py`` and ``test_focal_curvature.py`` read:
every loss with one option set (:data:`CASES`), differentiated as users differentiate it,
through the public function on scalar inputs ``vmap``-ped over a dense grid, in every
autodiff mode (:func:`all_modes`), one jitted program per option set and dtype, cached per
process (:func:`sweep`); and the exact values from ``reference.py``'s 200-bit mpmath closed
forms (:func:`reference`, :func:`exact_at`), with which of them are finite in the dtype
(:func:`finite_expected`). See ``test_curvature.py``'s docstring for what is checked.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import reference as ref

import jaxbce

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


def option_value(value, dtype):
    """An option as the kernel sees it: rounded to the compute dtype."""
    return float(np.asarray(value, dtype))


def _bce_exact(**options):
    def exact(x, y, gamma, dtype):
        d = ref.bce_curvature(x, y, **{k: option_value(v, dtype) for k, v in options.items()})
        return {"dx": d["dz"], "dy": d["dy"], "dxx": d["dzz"], "dxy": d["dzy"], "dyy": d["dyy"]}

    return exact


def _probs_exact(**options):
    def exact(x, y, gamma, dtype):
        d = ref.bce_probs_curvature(x, y, **{k: option_value(v, dtype) for k, v in options.items()})
        return {"dx": d["dz"], "dy": d["dy"], "dxx": d["dzz"], "dxy": d["dzy"], "dyy": d["dyy"]}

    return exact


def _focal_exact(alpha):
    def exact(x, y, gamma, dtype):
        a = None if alpha is None else option_value(alpha, dtype)
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


def all_modes(loss):
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
    """``all_modes`` of ``loss(x, y, *data)`` at every point: one jitted, vmapped program."""
    with jax.enable_x64(dtype == np.float64):

        def one(x, y, *d):
            return all_modes(lambda x, y: loss(x, y, *d))(x, y)

        got = jax.jit(jax.vmap(one))(x, y, *data)
        return jax.tree.map(np.asarray, got)


def exact_at(name: str, dtype, idx) -> dict:
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
    return idx, exact_at(name, dtype, idx)


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
    for q, values in exact_at(name, dtype, idx).items():
        expected[q][idx] &= np.array([abs(v) <= big for v in values], bool)
    return expected


def describe(name: str, dtype, q: str, bad: np.ndarray, got: np.ndarray) -> str:
    """The failing points with the smallest exact values first (the least excusable)."""
    s = sweep(name, dtype)
    idx = np.flatnonzero(bad)
    sample = idx[np.linspace(0, idx.size - 1, min(idx.size, 60)).astype(int)]
    exact = exact_at(name, dtype, sample)[q]
    order = np.argsort([float(abs(e)) for e in exact])[:4]
    shown = "; ".join(
        f"x={s.x[sample[j]]!r} y={s.y[sample[j]]:g} gamma={s.gamma[sample[j]]:g}: "
        f"got {got[sample[j]]!r}, exact {mpmath.nstr(exact[j], 8)}"
        for j in order
    )
    return f"{idx.size} points, e.g. {shown}"


def select_points(s: Sweep, x, y, gamma=None) -> np.ndarray:
    """Indices of the sweep points at predictions ``x`` (rounded to the dtype) and label y."""
    xs = np.asarray(x, s.x.dtype)
    mask = np.isin(s.x, xs) & (s.y == np.asarray(y, s.y.dtype))
    if gamma is not None:
        mask &= s.gamma == np.asarray(gamma, s.gamma.dtype)
    return np.flatnonzero(mask)
