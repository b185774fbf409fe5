"""XLA temp bytes of ``value_and_grad`` of the mean loss over shapes and dtypes, per backend.

Prints one line per (shape, logits dtype, labels dtype): jaxbce's and optax's temp bytes in
units of 4N (optax given labels of the logits' dtype, whatever the row's labels dtype); with
``--hlo FILE`` (a new file) writes the optimized HLO of the first shape's programs.

    python tools/memory_probe.py [--hlo FILE]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import optax

import jaxbce

SHAPES = [(4096, 4096), (4096, 16384), (1, 2**24), (2**17, 128), (2**24,)]
DTYPES = [(jnp.float32, jnp.float32), (jnp.float32, jnp.bool_), (jnp.bfloat16, jnp.bool_)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hlo", default=None, metavar="FILE", help="a new file (never replaced)")
    args = parser.parse_args()
    if args.hlo and os.path.lexists(args.hlo):
        parser.error(f"--hlo {args.hlo!r} exists, and is never replaced")
    ours = jax.jit(
        jax.value_and_grad(lambda z, y: jaxbce.sigmoid_binary_cross_entropy(z, y, reduction="mean"))
    )
    theirs = jax.jit(
        jax.value_and_grad(lambda z, y: optax.sigmoid_binary_cross_entropy(z, y).mean())
    )
    texts = []
    print(f"backend {jax.default_backend()} {jax.devices()[0].device_kind}")
    for shape in SHAPES:
        n = 1
        for s in shape:
            n *= s
        for zt, yt in DTYPES:
            z = jax.ShapeDtypeStruct(shape, zt)
            y = jax.ShapeDtypeStruct(shape, yt)
            a = ours.lower(z, y).compile()
            b = theirs.lower(z, jax.ShapeDtypeStruct(shape, zt)).compile()
            ta = a.memory_analysis().temp_size_in_bytes
            tb = b.memory_analysis().temp_size_in_bytes
            name = f"{shape} {jnp.dtype(zt).name}/{jnp.dtype(yt).name}"
            # optax is given labels of the logits' dtype, whatever the row's labels dtype.
            print(
                f"{name:36s} jaxbce {ta / (4 * n):6.3f} x 4N, "
                f"optax ({jnp.dtype(zt).name} labels) {tb / (4 * n):6.3f} x 4N"
            )
            if shape == SHAPES[0]:
                texts.append(f"==== jaxbce {name}\n{a.as_text()}")
    if args.hlo:
        with open(args.hlo, "x") as f:
            f.write("\n".join(texts))


if __name__ == "__main__":
    main()
