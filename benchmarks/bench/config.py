"""The settings of one benchmark run, and the kind of run they make.

``benchmarks/run.py`` turns its command line into a :class:`RunConfig`; everything else
takes the config, never the parsed command line. The kind (full, quick, custom sizes,
linear only, ...) is written into the results and their file names, so that a run of one
kind never replaces the results of another.
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

    @property
    def kind(self) -> str:
        """The kind of run, as written into the results and their file names.

        ``full``, ``quick`` or ``custom`` (``sizes`` or ``classes`` given) for the
        elementwise benchmark, with ``-with-linear`` when the fused linear section is
        added; ``linear``, ``linear-quick`` or ``linear-custom`` (``linear_sizes`` given)
        for the fused linear benchmark alone.
        """
        if self.linear_only:
            if self.linear_sizes:
                return "linear-custom"
            return "linear-quick" if self.quick else "linear"
        if self.sizes or self.classes != RunConfig.classes:
            kind = "custom"
        else:
            kind = "quick" if self.quick else "full"
        return kind + ("-with-linear" if self.linear else "")
