"""What the stand-alone table benchmarks (``unaligned_sizes.py``, ``inner_dims.py``,
``vectorized_loops.py``, ``eager_odd_sizes.py``, ``runtime_scalars.py``) share: the command
line (``--rounds`` and an ``--out`` file that is never replaced) and the interleaved
fastest-of-rounds timing."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax


def table_arguments(description: str, rounds: int, argv: list[str] | None) -> argparse.Namespace:
    """``--rounds`` (at least 1, default ``rounds``) and ``--out``, a new file in an existing
    folder, refused before anything is measured."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--out", type=Path, help="also write the table here (a new file)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.out is not None and (args.out.exists() or not args.out.parent.is_dir()):
        parser.error(f"--out {str(args.out)!r} exists or its folder does not; it is never replaced")
    return args


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
