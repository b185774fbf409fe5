"""Which layouts of the same elements does XLA:CPU compile into vectorized loops?

Compiles the elementwise focal loss (``reduction="none"``, alpha 0.25, gamma 2), the
gradient of its mean and the elementwise cross-entropy at about 2^22 float32 elements laid
out with different last dimensions, and reports for each compiled program the SIMD float
operations in XLA's optimized LLVM IR (lines holding a ``<k x float>`` value, summed over
the program's kernels) beside the time per element (the fastest of the rounds, interleaved).
XLA:CPU emits a fusion's loop over the shape of the fusion's result, split on its first
dimension between threads; whether LLVM vectorizes that loop decides the speed of a large
loop body such as the focal loss's.

Usage::

    python benchmarks/vectorized_loops.py                  # prints the table
    python benchmarks/vectorized_loops.py --out FILE       # also writes it (a new file)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench.tables import fastest_of_rounds, table_arguments, write_table

import jaxbce

_DUMP_ENV = "JAXBCE_VECTORIZED_LOOPS_DUMP"  # set in the child that measures

SHAPES = ((4096, 1024), (2**22,), (2**22 - 1,), (2**21, 2), (2**20, 3), (2**19, 7), (2**22, 1))

_VECTOR = re.compile(r"<\d+ x float>")


def _programs() -> dict:
    def focal_mean(z: jax.Array, y: jax.Array) -> jax.Array:
        return jaxbce.sigmoid_focal_loss(z, y, alpha=0.25, reduction="mean")

    return {
        "focal none": lambda z, y: jaxbce.sigmoid_focal_loss(z, y, alpha=0.25, reduction="none"),
        "focal grad": jax.grad(focal_mean),
        "bce none": lambda z, y: jaxbce.sigmoid_binary_cross_entropy(z, y, reduction="none"),
    }


def _vector_lines(dump: Path, tag: str) -> int:
    """SIMD float lines in the optimized LLVM IR of the program dumped under ``tag``."""
    files = list(dump.glob(f"*.jit_{tag}.*ir-with-opt.ll"))
    if not files:
        raise RuntimeError(f"XLA dumped no optimized LLVM IR for {tag} under {dump}")
    return sum(1 for f in files for line in f.read_text().splitlines() if _VECTOR.search(line))


def main(argv: list[str] | None = None) -> int:
    args = table_arguments(__doc__.splitlines()[0], 5, argv)
    if _DUMP_ENV not in os.environ:
        # XLA reads its flags once, when its backend starts: measure in a child that has
        # them, dumping into a folder removed afterwards.
        with tempfile.TemporaryDirectory(prefix="jaxbce-ir-") as dump:
            flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}".strip()
            env = dict(os.environ, XLA_FLAGS=flags, **{_DUMP_ENV: dump})
            argv = sys.argv[1:] if argv is None else argv
            return subprocess.run([sys.executable, __file__, *argv], env=env).returncode
    dump = Path(os.environ[_DUMP_ENV])
    rng = np.random.default_rng(0)
    names = list(_programs())
    lines = [
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, fastest of {args.rounds} "
        "rounds: ns per element / SIMD float lines in the optimized LLVM IR",
        f"{'shape':>14s} " + " ".join(f"{name:>17s}" for name in names),
    ]
    for i, shape in enumerate(SHAPES):
        z = jnp.asarray((3 * rng.standard_normal(shape)).astype(np.float32))
        y = jnp.asarray((rng.random(shape) < 0.3).astype(np.float32))
        compiled, simd = {}, {}
        for j, (name, f) in enumerate(_programs().items()):
            tag = f"vectorized_loops_{i}_{j}"
            f.__name__ = tag  # the name of the dumped module
            compiled[name] = jax.jit(f).lower(z, y).compile()
            simd[name] = _vector_lines(dump, tag)
        best = fastest_of_rounds(compiled, (z, y), args.rounds)
        cells = " ".join(f"{1e9 * best[n] / z.size:9.2f} / {simd[n]:5d}" for n in names)
        lines.append(f"{shape!s:>14s} {cells}")
        print(lines[-1], flush=True)
    write_table(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
