"""Is ``value_and_grad`` of the mean loss on CPU as fast as at another git revision?

Times ``jax.value_and_grad`` of ``sigmoid_binary_cross_entropy(z, y, reduction="mean")``
(float32, N elements laid out ``(N // 16384, 16384)``) as this checkout computes it, as the
``jaxbce/_losses.py`` of git revision ``--ref`` computes it (same kernels), and optax's
``sigmoid_binary_cross_entropy(z, y).mean()``, interleaved round by round. Each sample is
preceded by an untimed call; medians of times and of per-round ratios are printed.

Usage::

    python benchmarks/reduction_speed.py --ref main --rounds 15
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax

import jaxbce

ROOT = Path(__file__).resolve().parent.parent


def losses_at(ref: str):
    """The module ``jaxbce/_losses.py`` as it is at git revision ``ref``."""
    source = subprocess.run(
        ["git", "show", f"{ref}:jaxbce/_losses.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.TemporaryDirectory() as folder:  # removed once the module is loaded
        path = Path(folder) / "_losses_ref.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("_losses_ref", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="git revision to compare with")
    parser.add_argument("--log2n", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    # The inputs are (N / 16384, 16384): a smaller N made them empty, and the table timed
    # nothing; no rounds made it NaN.
    if not 14 <= args.log2n <= 30:
        parser.error(
            f"--log2n must be in [14, 30] (N = 2^14 is one row of 16384), got {args.log2n}"
        )
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    n = 2**args.log2n
    rng = np.random.default_rng(0)
    z = jax.numpy.asarray((3 * rng.standard_normal((n // 16384, 16384))).astype(np.float32))
    y = jax.numpy.asarray((rng.random(z.shape) < 0.3).astype(np.float32))
    old = losses_at(args.ref).sigmoid_binary_cross_entropy
    contenders = {
        "this checkout": lambda z, y: jaxbce.sigmoid_binary_cross_entropy(z, y, reduction="mean"),
        args.ref: lambda z, y: old(z, y, reduction="mean"),
        "optax": lambda z, y: optax.sigmoid_binary_cross_entropy(z, y).mean(),
    }
    compiled = {
        k: jax.jit(jax.value_and_grad(f)).lower(z, y).compile() for k, f in contenders.items()
    }
    times: dict[str, list[float]] = {k: [] for k in compiled}
    for _ in range(args.rounds):
        for name, f in compiled.items():
            jax.block_until_ready(f(z, y))  # untimed: the same allocator state each sample
            start = time.perf_counter()
            jax.block_until_ready(f(z, y))
            times[name].append(time.perf_counter() - start)
    base = np.asarray(times["this checkout"])
    print(f"N = 2^{args.log2n}, {args.rounds} rounds, {jax.devices()[0].device_kind}")
    print(f"{'':16s} {'median ms':>10s} {'x this checkout':>16s}")
    for name, t in times.items():
        print(f"{name:16s} {1e3 * np.median(t):10.2f} {np.median(np.asarray(t) / base):16.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
