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
import numpy as np
from bench.tables import logits_and_labels, per_element_table, table_arguments, write_table

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
    rows = ((str(n), logits_and_labels(rng, n), _calls()) for n in SIZES)
    measures = "ns per element of an eager call"
    table = per_element_table(args.rounds, measures, "size", list(_calls()), rows, (9, 15))
    write_table(args.out, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
