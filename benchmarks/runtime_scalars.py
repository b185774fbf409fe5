"""Does a scalar read at run time slow the losses' gradient loops at odd sizes on CPU?

Times jitted ``value_and_grad`` calls in which the gradient loop reads a scalar that is only
known at run time: the count of a masked mean, a loss scale passed as an argument (as in
mixed-precision training), ``gamma`` passed as an argument; for jaxbce and optax, at 2^22
and 2^22 - 1 float32 elements, interleaved round by round (each sample preceded by an
untimed call; the fastest of the rounds, per element). XLA:CPU splits a loop between
threads; where the split leaves a remainder the loop's body is predicated, and LLVM did not
vectorize a predicated body that loads such a scalar (``eager_odd_sizes.py`` for the
options of an eager call, which jaxbce now fixes at compile time).

Usage::

    python benchmarks/runtime_scalars.py                  # prints the table
    python benchmarks/runtime_scalars.py --out FILE       # also writes it (a new file)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from bench.tables import logits_and_labels, per_element_table, table_arguments, write_table

import jaxbce

SIZES = (2**22, 2**22 - 1)


def _optax_masked_mean(z: jax.Array, y: jax.Array, m: jax.Array) -> jax.Array:
    loss = optax.sigmoid_binary_cross_entropy(z, y)
    return jnp.sum(jnp.where(m, loss, 0.0)) / jnp.maximum(jnp.sum(m), 1)


def _programs() -> dict:
    bce, focal = jaxbce.sigmoid_binary_cross_entropy, jaxbce.sigmoid_focal_loss

    def scaled(loss):  # d/dz of s * loss(z, y) for a run-time s
        return lambda z, y, m, s: jax.value_and_grad(lambda z: s * loss(z, y))(z)

    return {
        "bce masked": jax.value_and_grad(lambda z, y, m, s: bce(z, y, where=m, reduction="mean")),
        "optax masked": jax.value_and_grad(lambda z, y, m, s: _optax_masked_mean(z, y, m)),
        "bce scaled": scaled(lambda z, y: bce(z, y, reduction="mean")),
        "optax scaled": scaled(lambda z, y: optax.sigmoid_binary_cross_entropy(z, y).mean()),
        "focal gamma arg": jax.value_and_grad(
            lambda z, y, m, s: focal(z, y, gamma=2.0 * s, reduction="mean")
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = table_arguments(__doc__.splitlines()[0], 5, argv)
    rng = np.random.default_rng(0)

    def rows():
        for n in SIZES:
            z, y = logits_and_labels(rng, n)
            m = jnp.asarray(rng.random(n) < 0.9)
            s = jnp.float32(1.0)
            compiled = {
                name: jax.jit(f).lower(z, y, m, s).compile() for name, f in _programs().items()
            }
            yield str(n), (z, y, m, s), compiled

    measures = "ns per element of value_and_grad (s = 1.0 passed at run time)"
    table = per_element_table(args.rounds, measures, "size", list(_programs()), rows(), (9, 15))
    write_table(args.out, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
