"""What the stand-alone table benchmarks (``unaligned_sizes.py``, ``inner_dims.py``,
``vectorized_loops.py``, ``eager_odd_sizes.py``, ``runtime_scalars.py``) share: the command
line (``--rounds`` and an ``--out`` file that is never replaced), the interleaved
fastest-of-rounds timing, their inputs and their tables in ns per element."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def table_arguments(description: str, rounds: int, argv: list[str] | None) -> argparse.Namespace:
    """``--rounds`` (at least 1, default ``rounds``) and ``--out``, a new file in an existing
    folder, refused before anything is measured."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--out", type=Path, help="also write the table here (a new file)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    refuse_existing(parser, args.out)
    return args


def refuse_existing(parser: argparse.ArgumentParser, out: Path | None) -> None:
    """Exits with an error naming ``--out`` unless it is a new file in an existing folder."""
    if out is not None and (out.exists() or not out.parent.is_dir()):
        parser.error(f"--out {str(out)!r} exists or its folder does not; it is never replaced")


def write_table(out: Path | None, table: str) -> None:
    """Writes ``table`` to ``out`` (checked by :func:`table_arguments`), if given."""
    if out is not None:
        out.write_text(table + "\n")


def fastest_of_rounds(
    compiled: dict[str, Callable[..., Any]], args: tuple[Any, ...], rounds: int
) -> dict[str, float]:
    """The fastest of ``rounds`` timings (seconds) of each compiled program on ``args``,
    interleaved round by round, each sample preceded by an untimed call (the same
    allocator state for every program)."""
    best = dict.fromkeys(compiled, float("inf"))
    for _ in range(rounds):
        for name, f in compiled.items():
            jax.block_until_ready(f(*args))
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def logits_and_labels(rng: np.random.Generator, shape: Any) -> tuple[jax.Array, jax.Array]:
    """The table benchmarks' inputs: float32 logits 3 N(0, 1) and labels 1 with probability
    0.3."""
    z = jnp.asarray((3 * rng.standard_normal(shape)).astype(np.float32))
    y = jnp.asarray((rng.random(shape) < 0.3).astype(np.float32))
    return z, y


def per_element_table(
    rounds: int,
    measures: str,
    label: str,
    names: Sequence[str],
    rows: Iterable[tuple[str, tuple[Any, ...], dict[str, Callable[..., Any]]]],
    widths: tuple[int, int],
) -> str:
    """One line per row, ``(label, arguments, programs)``: each program's fastest of
    ``rounds`` interleaved timings (:func:`fastest_of_rounds`) in ns per element of the
    first argument, printed as it is measured; returns the table, a header first (the jax
    version, the device, the rounds and what the numbers ``measures``). ``widths``: of the
    label column and of each number's."""
    label_width, width = widths
    lines = [
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, fastest of {rounds} rounds, "
        + measures,
        f"{label:>{label_width}s} " + " ".join(f"{name:>{width}s}" for name in names),
    ]
    for row_label, arguments, programs in rows:
        best = fastest_of_rounds(programs, arguments, rounds)
        size = arguments[0].size
        cells = " ".join(f"{1e9 * t / size:{width}.2f}" for t in best.values())
        lines.append(f"{row_label:>{label_width}s} {cells}")
        print(lines[-1], flush=True)
    return "\n".join(lines)
