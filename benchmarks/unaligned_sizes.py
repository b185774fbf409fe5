"""Is jaxbce's mean loss as fast per element at any N as at a multiple of 512?

Times the mean ``sigmoid_binary_cross_entropy`` (value alone, and ``value_and_grad``) of
float32 logits and labels of N elements (1-D) against optax's, interleaved round by round
(each sample preceded by an untimed call; medians of times and of per-round ratios), at
N = 2^22 and at sizes that are not multiples of 512: 4 * 10^6 = 2^8 5^6 (summed in blocks
of 500), 2^22 - 2 = 2 * 7^2 * 127 * 337 (blocks of 337) and the prime 4194301 (no block: XLA's
plain sum, which writes the loss once). Until commit 1788b96 the CPU sum padded the loss to
whole blocks of 512 inside its fused reduction, which made it check every element's index.

Usage::

    python benchmarks/unaligned_sizes.py                      # this checkout's jaxbce
    python benchmarks/unaligned_sizes.py --out FILE           # also write the table (new file)
    PYTHONPATH=/path/to/other/checkout python benchmarks/unaligned_sizes.py  # another jaxbce

The table says which jaxbce it timed (the commit of the checkout it was imported from).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from bench.machine import git_state
from bench.tables import table_arguments, write_table

import jaxbce

SIZES = (2**22, 4 * 10**6, 2**22 - 2, 4194301)


def _programs(n: int) -> tuple[dict[str, Callable[[], float]], int]:
    rng = np.random.default_rng(0)
    z = jnp.asarray((3 * rng.standard_normal(n)).astype(np.float32))
    y = jnp.asarray((rng.random(n) < 0.3).astype(np.float32))

    def ours(z, y):
        return jaxbce.sigmoid_binary_cross_entropy(z, y, reduction="mean")

    def theirs(z, y):
        return optax.sigmoid_binary_cross_entropy(z, y).mean()

    programs = {
        "jaxbce value": ours,
        "jaxbce value_and_grad": jax.value_and_grad(ours),
        "optax value_and_grad": jax.value_and_grad(theirs),
    }

    def timer(f: Callable) -> Callable[[], float]:
        compiled = jax.jit(f).lower(z, y).compile()

        def sample() -> float:
            jax.block_until_ready(compiled(z, y))  # untimed: the same allocator state
            start = time.perf_counter()
            jax.block_until_ready(compiled(z, y))
            return time.perf_counter() - start

        return sample

    return {name: timer(f) for name, f in programs.items()}, n


def main(argv: list[str] | None = None) -> int:
    args = table_arguments(__doc__.splitlines()[0], 9, argv)
    timers = [_programs(n) for n in SIZES]
    times = {(n, name): [] for programs, n in timers for name in programs}
    for _ in range(args.rounds):
        for programs, n in timers:
            for name, sample in programs.items():
                times[n, name].append(sample())
    per_element = {key: np.asarray(t) / key[0] for key, t in times.items()}
    lines = [
        f"jaxbce {git_state(('.',), Path(jaxbce.__file__).resolve().parent) or 'unknown'} "
        f"({jaxbce.__file__}), jax {jax.__version__}, "
        f"{jax.devices()[0].device_kind}, {args.rounds} rounds, medians",
        f"{'N':>9s} {'N % 512':>7s} {'program':24s} {'ms':>8s} {'ns/elem':>8s} "
        f"{'x at 2^22':>9s} {'optax / jaxbce':>14s}",
    ]
    for programs, n in timers:
        for name in programs:
            t = np.asarray(times[n, name])
            vs_aligned = np.median(per_element[n, name] / per_element[SIZES[0], name])
            vs_optax = (
                f"{np.median(np.asarray(times[n, 'optax value_and_grad']) / t):14.2f}"
                if name == "jaxbce value_and_grad"
                else ""
            )
            lines.append(
                f"{n:9d} {n % 512:7d} {name:24s} {1e3 * np.median(t):8.2f} "
                f"{1e9 * np.median(per_element[n, name]):8.3f} {vs_aligned:9.2f} {vs_optax}"
            )
    table = "\n".join(lines)
    print(table)
    write_table(args.out, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
