"""Timing machinery: a timed task, the schedule of rounds, and the ratio of paired samples.

All tasks of one size run round by round in a fixed order (A B C D, A B C D, ...), so that
machine noise hits all of them alike; ratios are medians of per-round ratios.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


@dataclasses.dataclass
class Task:
    """One timed callable in the rounds.

    Attributes:
      key: Contender key (floors: ``floor_<ideal bytes>``).
      label: Printed name.
      mode: ``"forward"``, ``"value_and_grad"`` or ``"floor"``.
      run: Launches one call and returns what to block on.
      block: Waits for what ``run`` returned.
      ideal_bytes: Bytes an ideal implementation moves (reads plus writes).
      ref: Key of the contender dividing this one's time, in the same mode.
      group: Contender group.
      compile_s: Seconds to lower and compile (JAX only).
      memory: Memory analysis and peaks.
      inner: Calls per sample (small sizes: several calls, averaged).
      samples: Seconds per call, one per round.
    """

    key: str
    label: str
    mode: str
    run: Callable[[], Any]
    block: Callable[[Any], None]
    ideal_bytes: int
    ref: str | None = None
    group: str = "bce"
    compile_s: float | None = None
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)
    inner: int = 1
    samples: list[float] = dataclasses.field(default_factory=list)

    def sample(self) -> float:
        """Runs ``inner`` calls, blocks on all of them, and returns seconds per call."""
        start = time.perf_counter()
        outs = [self.run() for _ in range(self.inner)]
        self.block(outs)
        return (time.perf_counter() - start) / self.inner


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long to time each size.

    Attributes:
      budget_s: Seconds of timed rounds per size (rounds are capped by this).
      min_rounds: Rounds at least, even past the budget.
      max_rounds: Rounds at most.
      min_sample_s: Each sample repeats the call until it lasts about this long.
      warmup: Untimed calls per task before the rounds, at least.
      warmup_s: Untimed seconds per task before the rounds, at least (PyTorch's first
        few dozen calls in a process are far slower than the rest).
      settle: Make one untimed call of a task right before each of its samples, so that
        no task pays for the allocator state its predecessor left behind: on CPU, a
        function timed right after one that freed large temporaries would otherwise
        page-fault its fresh output in, and be charged for it.
    """

    budget_s: float
    min_rounds: int
    max_rounds: int
    min_sample_s: float
    warmup: int = 3
    warmup_s: float = 0.05
    settle: bool = True


def run_rounds(tasks: list[Task], schedule: Schedule) -> int:
    """Warms every task up, then times them round by round in a fixed order.

    Args:
      tasks: The tasks of one size; their ``samples`` are filled in.
      schedule: Rounds and warm-up.

    Returns:
      The number of rounds.
    """
    round_s = 0.0
    for task in tasks:
        times: list[float] = []
        while len(times) < schedule.warmup or (
            sum(times) < schedule.warmup_s and len(times) < 1000
        ):
            times.append(task.sample())
        best = min(times)
        task.inner = max(1, min(1000, math.ceil(schedule.min_sample_s / max(best, 1e-9))))
        round_s += best * (task.inner + schedule.settle)
    rounds = int(schedule.budget_s / max(round_s, 1e-9))
    rounds = max(schedule.min_rounds, min(schedule.max_rounds, rounds))
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for task in tasks:
                if schedule.settle:
                    task.block(task.run())
                task.samples.append(task.sample())
    finally:
        gc.enable()
    return rounds


def paired_median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a[r] / b[r]``.

    Args:
      a: Numerators, one per round.
      b: Denominators, same rounds.

    Returns:
      The median ratio.
    """
    return float(statistics.median(x / y for x, y in zip(a, b, strict=True)))
