"""The command line of the stand-alone table benchmarks (``unaligned_sizes.py``,
``inner_dims.py``): ``--rounds`` and an ``--out`` file that is never replaced."""

from __future__ import annotations

import argparse
from pathlib import Path


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
