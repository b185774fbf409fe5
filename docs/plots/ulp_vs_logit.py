"""Error in float32 ulps of the sigmoid BCE and its gradient against the logit: jaxbce,
optax and PyTorch side by side.

Every float32 logit of a dense, evenly spaced grid on [-limit, limit] (2^20 + 1 points by
default) goes through each library's elementwise loss (``reduction="none"``) and its
derivative, for the labels y = 1 and y = 0:

* jaxbce: ``jaxbce.sigmoid_binary_cross_entropy`` and ``jax.grad`` of its sum;
* optax: ``optax.sigmoid_binary_cross_entropy`` and ``jax.grad`` of its sum;
* PyTorch: ``torch.nn.functional.binary_cross_entropy_with_logits`` and autograd.

Reference: float64 numpy, ``softplus(z) = max(z, 0) + log1p(exp(-|z|))`` and
``sigmoid(z)`` from ``exp(-|z|)``, on the float32 inputs; a few operations with a relative
error of a few 2^-53 each, about 2^-29 of a float32 ulp. ``--mpmath N`` checks that on N
grid points against 50-digit mpmath.

The error is ``|got - exact| / ulp(|exact|)`` with ``ulp(s) = 2^(floor(log2 s) - 23)``
floored at the smallest normal float32 (the definition of ``python -m jaxbce.check``); a 0
where the exact value is below the smallest normal counts as exact (XLA:CPU and PyTorch
flush subnormal results). Each panel shows the largest error in each of ``--bins`` bins of
the logit.

    python docs/plots/ulp_vs_logit.py                    # writes runs/docs/ulp_vs_logit.png
    python docs/plots/ulp_vs_logit.py --out docs/ulp_vs_logit.png --overwrite   # the docs' figure

It never replaces an existing file unless given ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "runs" / "docs" / "ulp_vs_logit.png"
LIBRARIES = ("jaxbce", "optax", "PyTorch")
LABELS = (1.0, 0.0)
_TINY = float(np.finfo(np.float32).tiny)

#: (loss, gradient) of each library for float32 logits and one label: numpy in, numpy out.
Evaluator = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def grid(points: int, limit: float) -> np.ndarray:
    """``points`` evenly spaced float32 logits on [-limit, limit], 0 included."""
    return np.unique(np.linspace(-limit, limit, points).astype(np.float32))


def reference(z: np.ndarray, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Float64 loss and d/dz of the sigmoid BCE at the float32 logits ``z``, label 0 or 1."""
    x = z.astype(np.float64) * (1.0 if y == 0 else -1.0)  # the loss is softplus(x)
    e = np.exp(-np.abs(x))
    loss = np.maximum(x, 0.0) + np.log1p(e)
    sig = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # sigmoid(x)
    return loss, sig if y == 0 else -sig


def ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """``|got - exact|`` in float32 ulps of ``|exact|`` (see the module docstring)."""
    got = got.astype(np.float64)
    scale = np.maximum(np.abs(exact), _TINY)
    unit = np.ldexp(1.0, np.frexp(scale)[1] - 1 - 23)
    err = np.abs(got - exact) / np.maximum(unit, _TINY)
    flushed = (got == 0) & (np.abs(exact) < _TINY)
    return np.where((got == exact) | flushed, 0.0, err)


def evaluators() -> dict[str, Evaluator]:
    """The three libraries' elementwise loss and gradient, each jitted or vectorised."""
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    import jaxbce

    def from_jax(loss_fn: Callable[..., jax.Array]) -> Evaluator:
        value_and_grad = jax.jit(
            lambda z, y: (loss_fn(z, y), jax.grad(lambda z: loss_fn(z, y).sum())(z))
        )

        def run(z: np.ndarray, y: float) -> tuple[np.ndarray, np.ndarray]:
            loss, grad = value_and_grad(jnp.asarray(z), jnp.full(z.shape, y, jnp.float32))
            return np.asarray(loss), np.asarray(grad)

        return run

    def from_torch(z: np.ndarray, y: float) -> tuple[np.ndarray, np.ndarray]:
        t = torch.from_numpy(z.copy()).requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            t, torch.full_like(t, y), reduction="none"
        )
        (grad,) = torch.autograd.grad(loss.sum(), t)
        return loss.detach().numpy(), grad.numpy()

    return {
        "jaxbce": from_jax(jaxbce.sigmoid_binary_cross_entropy),
        "optax": from_jax(optax.sigmoid_binary_cross_entropy),
        "PyTorch": from_torch,
    }


def errors(z: np.ndarray) -> dict[tuple[str, float], tuple[np.ndarray, np.ndarray]]:
    """``{(library, label): (loss ulp errors, gradient ulp errors)}`` at the logits ``z``."""
    out = {}
    for name, run in evaluators().items():
        for y in LABELS:
            loss, grad = run(z, y)
            want_loss, want_grad = reference(z, y)
            out[name, y] = (ulp_error(loss, want_loss), ulp_error(grad, want_grad))
    return out


def max_errors(points: int = 2**14 + 1, limit: float = 100.0) -> dict[str, tuple[float, float]]:
    """The largest loss and gradient error of each library over both labels on the grid."""
    errs = errors(grid(points, limit))
    return {
        name: (
            max(float(errs[name, y][0].max()) for y in LABELS),
            max(float(errs[name, y][1].max()) for y in LABELS),
        )
        for name in LIBRARIES
    }


def check_reference(z: np.ndarray, count: int) -> float:
    """The largest error of the float64 reference, in float32 ulps, at ``count`` logits."""
    import mpmath

    mpmath.mp.dps = 50
    worst = 0.0
    for x in z[np.linspace(0, z.size - 1, count).astype(int)]:
        for y in LABELS:
            s = mpmath.mpf(float(x)) * (1 if y == 0 else -1)
            exact = (mpmath.log1p(mpmath.exp(s)), mpmath.mpf(1) / (1 + mpmath.exp(-s)))
            exact = (exact[0], exact[1] if y == 0 else -exact[1])
            got = reference(np.array([x], np.float32), y)
            for g, e in zip(got, exact, strict=True):
                unit = max(2.0 ** (int(mpmath.floor(mpmath.log(abs(e), 2))) - 23), _TINY)
                worst = max(worst, float(abs(mpmath.mpf(float(g[0])) - e) / unit))
    return worst


def plot(z: np.ndarray, errs: dict, out: Path, bins: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True, sharey="row")
    edges = np.linspace(z.min(), z.max(), bins + 1)
    which = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, bins - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    colours = {1.0: "tab:blue", 0.0: "tab:orange"}
    top = [1.0, 1.0]  # the largest error of each row, for the shared y range
    for col, name in enumerate(LIBRARIES):
        for row, quantity in enumerate(("loss", "gradient")):
            ax = axes[row, col]
            worst = 0.0
            for y in LABELS:
                e = errs[name, y][row]
                per_bin = np.zeros(bins)
                np.maximum.at(per_bin, which, e)
                worst = max(worst, float(e.max()))
                ax.plot(centres, per_bin, ".", ms=2.5, color=colours[y], label=f"y = {y:g}")
            ax.axhline(1.0, color="black", lw=0.8, ls="--")
            ax.set_yscale("symlog", linthresh=1.0)
            top[row] = max(top[row], worst)
            ax.set_title(f"{name}: {quantity} (max {worst:.3g} ulp)", fontsize=10)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(f"{quantity} error (float32 ulp)")
            if row == 1:
                ax.set_xlabel("logit z")
    for row in range(2):
        axes[row, 0].set_ylim(0, 2.0 * top[row])
    axes[0, 0].legend(loc="upper left", fontsize=8, markerscale=3)
    fig.suptitle(
        f"sigmoid BCE in float32 against a float64 reference: {z.size} logits on "
        f"[{z.min():g}, {z.max():g}], largest error per bin of {edges[1] - edges[0]:.2g}; "
        "dashed: 1 ulp",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--points", type=int, default=2**20 + 1, help="grid points")
    parser.add_argument("--limit", type=float, default=100.0, help="grid on [-limit, limit]")
    parser.add_argument("--bins", type=int, default=800, help="bins of the logit axis")
    parser.add_argument(
        "--mpmath",
        type=int,
        default=200,
        metavar="N",
        help="check the float64 reference against mpmath at N logits (0: skip)",
    )
    args = parser.parse_args(argv)
    # A grid of fewer than 2 points, or no bins, ended in an IndexError traceback.
    for name, value, least in (("--points", args.points, 2), ("--bins", args.bins, 1)):
        if value < least:
            parser.error(f"{name} must be at least {least}, got {value}")
    if not args.limit > 0:
        parser.error(f"--limit must be positive, got {args.limit}")
    if args.out.exists() and not args.overwrite:
        print(f"{args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    z = grid(args.points, args.limit)
    if args.mpmath:
        print(
            f"float64 reference vs mpmath at {args.mpmath} logits: "
            f"max {check_reference(z, args.mpmath):.2e} float32 ulp"
        )
    errs = errors(z)
    for name in LIBRARIES:
        for y in LABELS:
            loss, grad = errs[name, y]
            print(
                f"{name:8s} y={y:g}: loss max {loss.max():.3f} ulp, "
                f"gradient max {grad.max():.3f} ulp"
            )
    plot(z, errs, args.out, args.bins)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
