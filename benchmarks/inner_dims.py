"""Does the speed of the mean losses on CPU depend on the size of the last dimension?

Times ``value_and_grad`` of the mean of jaxbce's ``sigmoid_binary_cross_entropy`` and
``sigmoid_focal_loss`` (alpha 0.25, gamma 2) against optax's, on float32 inputs of about
2^22 elements laid out with last dimensions 1024, 4, 3, 2 and 1 and as odd 1-D lengths,
interleaved round by round (each sample preceded by an untimed call; the fastest of the
rounds, per element). A fused loop whose last dimension is small or odd is compiled by
XLA:CPU into code that is slower per element; the question is how much each loss pays.

Usage::

    python benchmarks/inner_dims.py                  # prints the table
    python benchmarks/inner_dims.py --out FILE       # also writes it (a new file)
"""

from __future__ import annotations

import jax
import numpy as np
import optax
from bench.tables import logits_and_labels, per_element_table, table_arguments, write_table

import jaxbce

SHAPES = ((4096, 1024), (2**20, 4), (2**20, 3), (2**19, 7), (2**21, 2), (2**22, 1))
SHAPES += ((2**22,), (2**22 - 1,))


def _contenders() -> dict:
    return {
        "jaxbce": lambda z, y: jaxbce.sigmoid_binary_cross_entropy(z, y, reduction="mean"),
        "optax": lambda z, y: optax.sigmoid_binary_cross_entropy(z, y).mean(),
        "jaxbce focal": lambda z, y: jaxbce.sigmoid_focal_loss(z, y, reduction="mean"),
        "optax focal": lambda z, y: optax.sigmoid_focal_loss(z, y, alpha=0.25).mean(),
    }


def main(argv: list[str] | None = None) -> int:
    args = table_arguments(__doc__.splitlines()[0], 5, argv)
    rng = np.random.default_rng(0)

    def rows():
        for shape in SHAPES:
            z, y = logits_and_labels(rng, shape)
            compiled = {
                name: jax.jit(jax.value_and_grad(f)).lower(z, y).compile()
                for name, f in _contenders().items()
            }
            yield str(shape), (z, y), compiled

    measures = "ns per element of value_and_grad of the mean"
    table = per_element_table(args.rounds, measures, "shape", list(_contenders()), rows(), (14, 13))
    write_table(args.out, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
