"""Where the time of jaxbce's value_and_grad goes on a CPU, pass by pass.

This diagnostic times, round by round in one process (medians, so machine noise hits all
rows alike):

* the page-fault cost of a fresh output: an XLA negation into a new buffer against the
  same negation into a donated (already mapped) buffer;
* jaxbce's ``value_and_grad`` of the mean loss: two passes, the value fused into its
  reduction and the gradient written fresh, each evaluating its own exponential;
* each pass alone: the mean loss (reads z, y; no output array) and its gradient alone;
* the floor of each pass, whatever its arithmetic: a sum of ``max(z, 0) - y z`` in rows
  of 512 as jaxbce sums (reads z, y; no exponential or logarithm) and ``z - y`` written
  to a fresh output, and between them XLA's ``sigmoid(z) - y`` (the gradient rounded
  several times, not jaxbce's);
* optax's ``value_and_grad`` of the mean, and PyTorch ``BCEWithLogitsLoss`` forward and
  ``autograd.grad`` when torch is installed.

It ends with what a ``value_and_grad`` in two passes (a reduction, then the gradient
written fresh) could take at best, the two floors added, against a third of optax's and
of PyTorch's time (the 3x targets of ``run.py``).

Usage::

    python benchmarks/cpu_passes.py              # N = 2^24, 20 rounds
    python benchmarks/cpu_passes.py --log2n 22 --rounds 40
    python benchmarks/cpu_passes.py --out FILE   # also writes it (a new file)
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench.tables import refuse_existing, write_table

import jaxbce

CLASSES = 16384
VALUE_FLOOR = "  floor: mean of max(z, 0) - y z (no exp, log)"  # rows of 512
GRAD_FLOOR = "  floor: z - y, fresh output (no exp)"
OPTAX = "optax value_and_grad"
TORCH = "torch forward + autograd.grad"


def mean_loss(z: jax.Array, y: jax.Array) -> jax.Array:
    return jaxbce.sigmoid_binary_cross_entropy(z, y, reduction="mean")


def cheap_mean(z: jax.Array, y: jax.Array) -> jax.Array:
    """The mean of ``max(z, 0) - y z`` summed as jaxbce sums on CPU: a variadic (sum, count)
    reduction over rows of 512, then the row sums (a plain float sum goes to a library
    call that first writes the loss to memory: about twice the time at 2^24)."""
    loss = (jnp.maximum(z, 0.0) - y * z).reshape(-1, 512)
    ones = jnp.ones(loss.shape, jnp.int32)
    sums, counts = jax.lax.reduce(
        (loss, ones),
        (jnp.float32(0.0), jnp.int32(0)),
        lambda a, b: (a[0] + b[0], a[1] + b[1]),
        (1,),
    )
    return jnp.sum(sums) / jnp.sum(counts)


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
    value_floor = compiled(cheap_mean, z, y)
    grad_floor = compiled(lambda z, y: (z - y) / n, z, y)
    grad_xla = compiled(lambda z, y: (jax.nn.sigmoid(z) - y) / n, z, y)
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
        VALUE_FLOOR: timed(value_floor, z, y),
        GRAD_FLOOR: timed(grad_floor, z, y),
        "  XLA sigmoid(z) - y, fresh (not faithful)": timed(grad_xla, z, y),
    }
    try:
        import optax
    except ImportError:
        pass
    else:
        optax_vag = compiled(
            jax.value_and_grad(lambda z, y: optax.sigmoid_binary_cross_entropy(z, y).mean()), z, y
        )
        tasks[OPTAX] = timed(optax_vag, z, y)
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

    tasks[TORCH] = torch_step
    return tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2n", type=int, default=24, help="N = 2^log2n elements")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the table here (a new file)")
    args = parser.parse_args(argv)
    if args.log2n < 9 or args.rounds < 1:
        parser.error(f"needs --log2n 9 or more (rows of 512) and --rounds 1 or more, got {args}")
    refuse_existing(parser, args.out)
    n = 2**args.log2n
    tasks = build(n)
    samples: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(args.rounds):
        for name, task in tasks.items():
            task()  # an untimed call first: each sample starts from the same allocator state
            samples[name].append(task())
    table = format_table(samples, args.log2n, args.rounds)
    print(table)
    write_table(args.out, table)
    return 0


def format_table(samples: dict[str, list[float]], log2n: int, rounds: int) -> str:
    """Medians and median ratios to jaxbce's ``value_and_grad``, then the two-pass floor."""
    base = np.asarray(samples["jaxbce value_and_grad"])
    median = {name: float(np.median(times)) for name, times in samples.items()}
    lines = [
        f"N = 2^{log2n}, {rounds} rounds, {jax.devices()[0].device_kind},"
        f" XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        f"{'':46s} {'median ms':>10s} {'x jaxbce':>9s}",
    ]
    for name, times in samples.items():
        ratio = np.median(np.asarray(times) / base)
        lines.append(f"{name:46s} {1e3 * median[name]:10.2f} {ratio:9.2f}")
    floor = median[VALUE_FLOOR] + median[GRAD_FLOOR]
    lines.append(
        f"two-pass floor (the two floors added): {1e3 * floor:.2f} ms"
        f" = {floor / median['jaxbce value_and_grad']:.2f} x jaxbce's median"
    )
    for name in (OPTAX, TORCH):
        if name in median:
            third = median[name] / 3
            lines.append(
                f"{name.split()[0]} / 3: {1e3 * third:.2f} ms"
                f" (floor {'below' if floor < third else 'above'} it by"
                f" {1e3 * abs(third - floor):.2f} ms)"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
