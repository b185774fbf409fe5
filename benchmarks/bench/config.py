"""The settings of one benchmark run.

``benchmarks/run.py`` turns its command line into a :class:`RunConfig`; everything else
takes the config, never the parsed command line.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What to measure and how long.

    Attributes:
      quick: Sizes 2^12, 2^16, 2^20 (unless ``sizes`` is given) and few rounds.
      sizes: Elements N of the elementwise benchmark (``None``: the default sizes).
      classes: Labels per example C; the shape is ``(N // C, C)``, or ``(1, N)`` for N < C.
      budget: Seconds of timed rounds per size (``None``: the schedule's default).
      retries: Re-time a size up to this many times while other processes used more than
        ``max_foreign`` of the CPU during its rounds, keeping the quietest attempt.
      max_foreign: See ``retries``.
      no_torch: Skip the PyTorch contender.
      dump_hlo: Folder for each JAX function's optimized HLO text, or ``None``.
      seed: NumPy seed of the inputs.
      linear: Also run the fused linear benchmark.
      linear_only: Run only the fused linear benchmark.
      linear_sizes: Label counts L of the fused linear benchmark (``None``: its default).
    """

    quick: bool = False
    sizes: list[int] | None = None
    classes: int = 16384
    budget: float | None = None
    retries: int = 0
    max_foreign: float = 0.05
    no_torch: bool = False
    dump_hlo: str | None = None
    seed: int = 0
    linear: bool = False
    linear_only: bool = False
    linear_sizes: list[int] | None = None
