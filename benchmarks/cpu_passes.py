"""Where the time of jaxbce's value_and_grad goes on a CPU, pass by pass.

This diagnostic times, round by round in one process (medians, so machine noise hits all
rows alike):

* the page-fault cost of a fresh output: an XLA negation into a new buffer against the
  same negation into a donated (already mapped) buffer;
* jaxbce's ``value_and_grad`` of the mean loss: two passes, the value fused into its
  reduction and the gradient written fresh, each evaluating its own exponential;
* each pass alone: the mean loss (reads z, y; no output array) and its gradient alone;
* PyTorch ``BCEWithLogitsLoss`` forward and ``autograd.grad`` when torch is installed.

Usage::

    python benchmarks/cpu_passes.py              # N = 2^24, 20 rounds
    python benchmarks/cpu_passes.py --log2n 22 --rounds 40
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxbce

CLASSES = 16384


def mean_loss(z: jax.Array, y: jax.Array) -> jax.Array:
    return jaxbce.sigmoid_binary_cross_entropy(z, y, reduction="mean")


def build(n: int) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    shape = (n // CLASSES, CLASSES) if n >= CLASSES else (1, n)
    z_np = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    y_np = (rng.random(shape) < 0.3).astype(np.float32)
    z, y = jnp.asarray(z_np), jnp.asarray(y_np)

    def compiled(f, *args, donate=()):
        return jax.jit(f, donate_argnums=donate).lower(*args).compile()

    vag = compiled(jax.value_and_grad(mean_loss), z, y)
    value = compiled(mean_loss, z, y)
    grad = compiled(jax.grad(mean_loss), z, y)
    neg = compiled(jnp.negative, z)
    neg_donated = compiled(jnp.negative, z, donate=(0,))

    # Donated arguments are consumed: each call gets a fresh copy made outside the timing.
    def donated(f, make):
        def call():
            args = jax.block_until_ready(make())
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            return time.perf_counter() - start

        return call

    def timed(f, *args):
        def call():
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            return time.perf_counter() - start

        return call

    tasks = {
        "negation, fresh output": timed(neg, z),
        "negation, donated output": donated(neg_donated, lambda: (z + 0,)),
        "jaxbce value_and_grad": timed(vag, z, y),
        "  value pass: mean loss of z, y": timed(value, z, y),
        "  gradient pass: fresh output": timed(grad, z, y),
    }
    try:
        import torch
    except ImportError:
        return tasks
    criterion = torch.nn.BCEWithLogitsLoss()
    tz = torch.from_numpy(z_np).requires_grad_(True)
    ty = torch.from_numpy(y_np)

    def torch_step():
        start = time.perf_counter()
        torch.autograd.grad(criterion(tz, ty), tz)
        return time.perf_counter() - start

    tasks["torch forward + autograd.grad"] = torch_step
    return tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2n", type=int, default=24, help="N = 2^log2n elements")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    n = 2**args.log2n
    tasks = build(n)
    samples: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(args.rounds):
        for name, task in tasks.items():
            task()  # an untimed call first: each sample starts from the same allocator state
            samples[name].append(task())
    base = np.asarray(samples["jaxbce value_and_grad"])
    print(f"N = 2^{args.log2n}, {args.rounds} rounds, {jax.devices()[0].device_kind}")
    print(f"{'':46s} {'median ms':>10s} {'x jaxbce':>9s}")
    for name, times in samples.items():
        ratio = np.median(np.asarray(times) / base)
        print(f"{name:46s} {1e3 * np.median(times):10.2f} {ratio:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
