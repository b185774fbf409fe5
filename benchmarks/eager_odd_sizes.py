"""Is an eager call at an odd size as fast per element as at an aligned one?

Times eager (un-jitted) calls of the losses with scalar options, the way a script or an
evaluation loop calls them, at 2^22 and 2^22 - 1 float32 elements, interleaved round by
round (each sample preceded by an untimed call; the fastest of the rounds, per element).
XLA:CPU splits a loop between threads, and where the split leaves a remainder the loop's
body is predicated; a scalar the body reads from memory (an option passed into the program
as an input, not a constant) then kept LLVM from vectorizing it.

Usage::

    python benchmarks/eager_odd_sizes.py                  # prints the table
    python benchmarks/eager_odd_sizes.py --out FILE       # also writes it (a new file)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from bench.tables import fastest_of_rounds, table_arguments, write_table

import jaxbce

SIZES = (2**22, 2**22 - 1)


def _calls() -> dict:
    bce, focal = jaxbce.sigmoid_binary_cross_entropy, jaxbce.sigmoid_focal_loss

    def focal_grad(z: jax.Array, y: jax.Array) -> jax.Array:
        return jax.grad(lambda z: focal(z, y, reduction="mean"))(z)

    return {
        "focal": lambda z, y: focal(z, y),
        "focal grad": focal_grad,
        "bce smoothing": lambda z, y: bce(z, y, label_smoothing=0.1),
        "bce pos_weight": lambda z, y: bce(z, y, pos_weight=2.0),
        "bce": lambda z, y: bce(z, y),
    }


def main(argv: list[str] | None = None) -> int:
    args = table_arguments(__doc__.splitlines()[0], 5, argv)
    rng = np.random.default_rng(0)
    lines = [
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, fastest of {args.rounds} "
        "rounds, ns per element of an eager call",
        f"{'size':>9s} " + " ".join(f"{name:>15s}" for name in _calls()),
    ]
    for n in SIZES:
        z = jnp.asarray((3 * rng.standard_normal(n)).astype(np.float32))
        y = jnp.asarray((rng.random(n) < 0.3).astype(np.float32))
        best = fastest_of_rounds(_calls(), (z, y), args.rounds)
        cells = " ".join(f"{1e9 * t / n:15.2f}" for t in best.values())
        lines.append(f"{n:>9d} {cells}")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    write_table(args.out, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
