"""Benchmark jaxbce against optax, PyTorch and the memory-bandwidth floor.

Times, for N from 2^12 to 2^24 (2^26 on a GPU) elements in a ``(B, C)`` multi-label layout,
the forward pass and ``jax.value_and_grad`` of the mean loss of jaxbce, optax, the naive
formula, PyTorch and a single fused elementwise pass, against an XLA copy of the same bytes;
optionally the fused linear layer + BCE against the unfused one. The machinery is in the
``bench`` package beside this file (see its docstring); the method and the results are in
``benchmarks/README.md``.

Usage::

    python benchmarks/run.py             # full run: CPU 2^12..2^24, GPU 2^12..2^26
    python benchmarks/run.py --quick     # sizes 2^12, 2^16, 2^20, few rounds
    python benchmarks/run.py --sizes 4096 2^26 --out /tmp/bench
    python benchmarks/run.py --save      # a full run, kept in benchmarks/results/
    python benchmarks/run.py --summarize benchmarks/results/cpu-<date>.json  # Markdown
    python benchmarks/run.py --linear-only   # fused linear loss only
    python benchmarks/run.py --quick --linear --linear-sizes 2^12  # both, small

Prints a table per size, then the pass/fail lines of the targets, and writes
``<backend>[-<kind>]-<YYYY-MM-DD>.json`` and ``.png`` (time per element against N; none for
``--linear-only``) into ``runs/bench/`` (ignored by git), into ``--out DIR``, or with
``--save`` into ``benchmarks/results/``. The kind (``quick``, ``custom``, ``linear``, ...;
none for a full run) is also recorded in the JSON. A run never replaces a file outside
``runs/bench/``, nor there the files of another kind of run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
from bench.config import RunConfig
from bench.linear import LINEAR_BATCH, LINEAR_IN_FEATURES
from bench.report import markdown_summary
from bench.results import check_replaceable, file_stem, output_dir, today_utc, write_results
from bench.runner import run_benchmark


def parse_size(text: str) -> int:
    """Parses a size given as ``4096``, ``2^12`` or ``2**12``.

    Args:
      text: The command-line word.

    Returns:
      The number of elements, a positive integer.

    Raises:
      argparse.ArgumentTypeError: If the word is not a positive integer or a power of two.
    """
    match = re.fullmatch(r"\s*2\s*(?:\^|\*\*)\s*(\d+)\s*", text)
    try:
        value = 2 ** int(match.group(1)) if match else int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"size {text!r}: expected an integer such as 4096, 2^12 or 2**12"
        ) from err
    if not 8 <= value <= 2**32:  # above, the inputs alone outgrow any machine here
        raise argparse.ArgumentTypeError(f"size {text!r}: expected 8 to 2^32 elements")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Returns the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short run: sizes 2^12, 2^16, 2^20 and few rounds"
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=None,
        help="elements, e.g. 4096 2^20 2**26 (default: 2^12..2^24 on CPU, 2^12..2^26 on GPU)",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=RunConfig.classes,
        help="labels per example C; shape is (N // C, C), or (1, N) for N < C",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="directory for JSON and PNG (default: runs/bench/, which git ignores)",
    )
    where.add_argument(
        "--save",
        action="store_true",
        help="write into benchmarks/results/, next to the committed results; never replaces "
        "the files of another kind of run (quick, full, custom sizes, linear only, ...)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed rounds per size (default 25, quick 2)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=RunConfig.retries,
        help="re-time a size up to this many times while other processes used more than "
        "--max-foreign of the CPU during its rounds, keeping the quietest attempt",
    )
    parser.add_argument(
        "--max-foreign", type=float, default=RunConfig.max_foreign, help="see --retries"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch contender")
    parser.add_argument(
        "--dump-hlo",
        default=None,
        metavar="DIR",
        help="write each JAX function's optimized HLO text into DIR",
    )
    parser.add_argument("--seed", type=int, default=RunConfig.seed, help="NumPy seed of the inputs")
    parser.add_argument(
        "--linear",
        action="store_true",
        help="also benchmark the fused linear loss (linear_sigmoid_binary_cross_entropy) "
        "against the unfused h @ W + b and BCE (minutes on CPU, so not part of the default run)",
    )
    parser.add_argument(
        "--linear-only",
        action="store_true",
        help="only the fused linear benchmark; writes <backend>-linear[-quick|-custom]-<date>.json",
    )
    parser.add_argument(
        "--linear-sizes",
        nargs="+",
        type=parse_size,
        default=None,
        metavar="L",
        help="label counts L of the fused linear benchmark (default 2^14 2^16 2^17), "
        f"with B={LINEAR_BATCH}, d={LINEAR_IN_FEATURES}",
    )
    parser.add_argument(
        "--summarize",
        default=None,
        metavar="JSON",
        help="print the Markdown summary of a results file (for the README) and exit",
    )
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses, before anything is measured, arguments that would fail or mean nothing later.

    Args:
      parser: The parser, whose ``error`` exits with status 2 and the message.
      args: The parsed command line.
    """
    if args.classes < 1:
        parser.error(f"--classes: expected a whole number >= 1, got {args.classes}")
    if args.budget is not None and not (math.isfinite(args.budget) and args.budget > 0):
        parser.error(f"--budget: expected a number of seconds > 0, got {args.budget}")
    if args.retries < 0:
        parser.error(f"--retries: expected a whole number >= 0, got {args.retries}")
    if not 0 <= args.max_foreign <= 1:  # also refuses NaN
        parser.error(f"--max-foreign: expected a fraction in [0, 1], got {args.max_foreign}")
    if args.linear_sizes and not (args.linear or args.linear_only):
        parser.error(
            "--linear-sizes: the fused linear benchmark runs only with --linear or "
            "--linear-only; add one of them"
        )


def summarize(parser: argparse.ArgumentParser, path: Path) -> str:
    """The Markdown summary of the results file ``path``, or a one-line refusal.

    Args:
      parser: The parser, whose ``error`` exits with status 2 and the message.
      path: A results JSON written by this script.

    Returns:
      The summary (:func:`bench.report.markdown_summary`).
    """
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        parser.error(f"--summarize {str(path)!r}: cannot read a results JSON: {err}")
    try:
        return markdown_summary(result)
    except (KeyError, TypeError, AttributeError) as err:  # a JSON of something else
        parser.error(
            f"--summarize {str(path)!r}: not a results file of benchmarks/run.py "
            f"({type(err).__name__}: {err})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark, or summarizes a results file with ``--summarize``.

    Args:
      argv: Command-line words (default ``sys.argv[1:]``).

    Returns:
      Exit status 0.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(parser, Path(args.summarize)), end="")
        return 0
    check_arguments(parser, args)
    config = RunConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)})
    out = output_dir(args.out, args.save)
    if out.exists() and not out.is_dir():  # before the run: mkdir failed after it
        parser.error(f"--out {str(out)!r}: expected a folder, got a file")
    stem = file_stem(jax.default_backend(), config.kind, today_utc())
    try:  # Before the run, not after minutes of it; writing checks again.
        check_replaceable(out, stem, config.kind)
    except FileExistsError as err:
        parser.error(str(err))
    result = run_benchmark(config)
    words = sys.argv[1:] if argv is None else list(argv)
    result["command"] = " ".join(["python", "benchmarks/run.py", *words])
    write_results(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
