"""Self-check: ``python -m jaxbce.check`` measures jaxbce on the backend JAX sees right now.

For each loss, option set and dtype it evaluates the loss and its gradient under ``jax.jit``
on the default device over a grid of extreme logits (±1e4, ±100, ±88, ±1e-7, 0, ...) and hard
and soft labels, compares them with a reference computed on the host in float64 (extended
precision for float64 inputs), and prints the worst error in ulps next to its bound. It then
runs ``jax.test_util.check_grads`` (order 2, forward and reverse mode) on every loss. The exit
status is 1 if anything is out of bounds: run it on a new accelerator before trusting it.

Errors are measured in ulps of the exact value, floored at the smallest normal number (XLA
flushes subnormals to zero). For soft labels ``sigmoid(z) - y`` cancels, so the gradient's
unit is that of ``max(|exact|, |pw*q*w|, |(1-q)*w|)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.test_util import check_grads

from jaxbce._losses import binary_cross_entropy, sigmoid_binary_cross_entropy, sigmoid_focal_loss

_POSITIVE = [1e-7, 1e-3, 0.5, 1, 3, 10, 17, 20, 30, 50, 87, 88, 88.5, 100, 1e3, 1e4]
LOGITS = np.array([-v for v in reversed(_POSITIVE)] + [0.0] + _POSITIVE)
LABELS = [0.0, 1.0, 0.3, 1e-6, 1 - 1e-6]

#: (name, loss function, keyword options, float32 bound in ulps)
CASES: list[tuple[str, Callable[..., jax.Array], dict[str, Any], float]] = [
    ("sigmoid_bce", sigmoid_binary_cross_entropy, {}, 2.0),
    ("sigmoid_bce smoothing=0.1", sigmoid_binary_cross_entropy, {"label_smoothing": 0.1}, 2.0),
    (
        "sigmoid_bce pos_weight, weights",
        sigmoid_binary_cross_entropy,
        {"pos_weight": 3.5, "weights": 0.7},
        3.0,
    ),
    ("bce (probabilities)", binary_cross_entropy, {}, 2.0),
    ("focal gamma=2", sigmoid_focal_loss, {"gamma": 2.0}, 4.0),
    ("focal gamma=0.5", sigmoid_focal_loss, {"gamma": 0.5, "alpha": None}, 4.0),
]


def _mantissa_bits(dtype: Any) -> int:
    return int(ml_dtypes.finfo(dtype).nmant) + 1


def _ulps(
    got: np.ndarray,
    exact: np.ndarray,
    dtype: Any,
    floor: np.ndarray | float = 0.0,
    *,
    weight: float = 1.0,
):
    """``|got - exact|`` in ulps of ``max(|exact|, floor)``, floored at the smallest normal.

    The floor is ``tiny * max(1, weight)``: an intermediate flushed to zero (``exp(-88)`` in
    float32) loses at most ``tiny``, and the weights scale that loss into the result.
    """
    ref_t = np.longdouble
    tiny = ref_t(float(ml_dtypes.finfo(dtype).tiny)) * ref_t(max(1.0, weight))
    scale = np.maximum(np.abs(exact.astype(ref_t)), ref_t(floor))
    safe = np.where(scale > 0, scale, ref_t(1))
    exponent = np.floor(np.log2(safe))
    unit = np.maximum(np.exp2(exponent - (_mantissa_bits(dtype) - 1)), tiny)
    err = np.abs(got.astype(ref_t) - exact.astype(ref_t)) / unit
    same = got.astype(ref_t) == exact.astype(ref_t)  # also inf == inf
    return np.where(same, 0.0, err)


def _reference(
    name: str, x: np.ndarray, y: np.ndarray, opts: dict[str, Any], ref_t: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host reference ``(loss, d/dx, gradient floor)`` in ``ref_t`` (float64 or extended)."""
    x, y = x.astype(ref_t), y.astype(ref_t)
    one = ref_t(1)

    def sig(v):
        e = np.exp(-np.abs(v))
        return np.where(v >= 0, one / (one + e), e / (one + e))

    def softplus(v):
        return np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))

    if name.startswith("bce"):
        with np.errstate(divide="ignore", invalid="ignore"):
            lp, l1p = np.log(x), np.log1p(-x)
            loss = -(y * np.maximum(lp, -100) + (one - y) * np.maximum(l1p, -100))
            # The clamped log is flat: its derivative is 0 where the clamp is active.
            d_a = np.where(lp > -100, -y / x, 0)
            d_b = np.where(l1p > -100, (one - y) / (one - x), 0)
        floor = np.where((y == 0) | (y == 1), 0, np.maximum(np.abs(d_a), np.abs(d_b)))
        return loss, d_a + d_b, floor
    if name.startswith("focal"):
        gamma = ref_t(opts["gamma"])
        alpha = opts.get("alpha", 0.25)
        ce = y * softplus(-x) + (one - y) * softplus(x)
        dce = (one - y) * sig(x) - y * sig(-x)
        u = y * sig(-x) + (one - y) * sig(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            du_over_u = (one - 2 * y) * sig(x) * sig(-x) / u
        mod = u**gamma
        at = one if alpha is None else alpha * y + (1 - alpha) * (one - y)
        loss = at * mod * ce
        grad = at * mod * (gamma * du_over_u * ce + dce)
        hard = (y == 0) | (y == 1)
        return loss, grad, np.where(hard, 0, np.abs(at * mod * np.maximum(y, one - y)))
    eps = ref_t(opts.get("label_smoothing", 0.0))
    pw, w = ref_t(opts.get("pos_weight", 1.0)), ref_t(opts.get("weights", 1.0))
    q, qc = y * (one - eps) + eps / 2, (one - y) * (one - eps) + eps / 2
    loss = w * (pw * q * softplus(-x) + qc * softplus(x))
    grad = w * (qc * sig(x) - pw * q * sig(-x))
    hard = ((y == 0) | (y == 1)) & (eps == 0)
    return loss, grad, np.where(hard, 0, np.maximum(np.abs(pw * q * w), np.abs(qc * w)))


def measure(dtype: Any) -> list[tuple[str, str, float, float, float]]:
    """Worst loss and gradient errors in ulps: rows ``(case, dtype, loss, grad, bound)``."""
    rows = []
    x64 = np.dtype(dtype) == np.float64
    ref_t = np.longdouble if x64 else np.float64
    for name, fn, opts, bound in CASES:
        grid_x, grid_y = np.meshgrid(LOGITS, LABELS, indexing="ij")
        if name.startswith("bce"):
            with np.errstate(over="ignore"):
                grid_x = 1 / (1 + np.exp(-grid_x / 10))  # probabilities, 0 and 1 included
        x = np.asarray(grid_x, dtype)
        # Devices treat subnormal inputs as 0 (XLA's flush-to-zero); so does the reference.
        x[np.abs(x.astype(np.float64)) < float(ml_dtypes.finfo(dtype).tiny)] = 0
        y = grid_y.astype(np.float64 if x64 else np.float32)
        f = jax.jit(jax.vmap(jax.value_and_grad(lambda a, b, fn=fn, opts=opts: fn(a, b, **opts))))
        got_l, got_g = (np.asarray(v, np.float64) for v in f(x.ravel(), y.ravel()))
        exact_l, exact_g, floor = _reference(
            name, x.ravel().astype(np.float64), y.ravel(), opts, ref_t
        )
        finite = np.isfinite(exact_l) & np.isfinite(exact_g)
        weight = opts.get("pos_weight", 1.0) * opts.get("weights", 1.0)
        el = _ulps(got_l[finite], exact_l[finite], dtype, weight=weight)
        eg = _ulps(got_g[finite], exact_g[finite], dtype, floor[finite], weight=weight)
        if np.dtype(dtype).itemsize < 4:
            bound = 1.0  # computed in float32 and rounded once
        elif x64:
            bound += 2.0
        rows.append((name, np.dtype(dtype).name, float(el.max()), float(eg.max()), bound))
    return rows


def gradient_checks() -> list[tuple[str, bool, str]]:
    """``check_grads`` order 2, fwd and rev, in float64 for every loss and option set."""
    results = []
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for name, fn, opts, _ in CASES:
            x = rng.normal(size=(2, 3)) * 2
            if name.startswith("bce"):
                x = 0.2 + 0.6 / (1 + np.exp(-x))
            y = rng.uniform(0.1, 0.9, size=(2, 3))
            try:
                check_grads(
                    jax.jit(lambda a, b, fn=fn, opts=opts: fn(a, b, reduction="sum", **opts)),
                    (x, y),
                    order=2,
                    modes=["fwd", "rev"],
                    eps=1e-5,
                )
                results.append((name, True, ""))
            except AssertionError as err:
                results.append((name, False, str(err).splitlines()[0]))
    return results


def main(argv: list[str] | None = None) -> int:
    """Prints the accuracy table and gradient checks; returns 1 if anything is out of bounds."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxbce.check", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--dtypes", nargs="+", default=["float32", "bfloat16", "float16", "float64"]
    )
    args = parser.parse_args(argv)
    dev = jax.devices()[0]
    print(f"jaxbce self-check on {dev.platform} ({dev.device_kind}), jax {jax.__version__}")
    print(f"{'case':34s} {'dtype':9s} {'loss ulp':>9s} {'grad ulp':>9s} {'bound':>6s}  ok")
    failed = False
    for dtype_name in args.dtypes:
        dtype = jnp.dtype(dtype_name)
        if dtype == jnp.float64 and np.finfo(np.longdouble).nmant <= 52:
            print("float64: skipped, this host has no extended precision for a reference")
            continue
        with jax.enable_x64(dtype == jnp.float64):
            rows = measure(dtype)
        for name, dt, el, eg, bound in rows:
            ok = el <= bound and eg <= bound
            failed |= not ok
            print(f"{name:34s} {dt:9s} {el:9.2f} {eg:9.2f} {bound:6.1f}  {'yes' if ok else 'NO'}")
    print("\ncheck_grads (order 2, fwd + rev, float64):")
    for name, ok, msg in gradient_checks():
        failed |= not ok
        print(f"  {name:34s} {'pass' if ok else 'FAIL ' + msg}")
    print("\nresult:", "FAIL" if failed else "all within bounds")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
