"""One size of the elementwise benchmark: every contender compiled into timed tasks, the
bandwidth floors, the rounds, and the result rows.

The bandwidth floor for B bytes is an XLA copy that reads B/2 bytes and writes B/2 bytes
into a freshly allocated output, timed in the same rounds as the contenders.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp

from bench.config import RunConfig
from bench.contenders import JaxContender
from bench.inputs import Batch, shape_for
from bench.machine import ForeignCpu
from bench.memory import entry_hlo_stats, jax_peak_bytes, memory_analysis
from bench.modes import FLOOR, FORWARD, VALUE_AND_GRAD, ideal_bytes
from bench.timing import Schedule, Task, paired_median_ratio, run_rounds


def jax_tasks(contender: JaxContender, batch: Batch, hlo_dir: Path | None) -> list[Task]:
    """Compiles one JAX contender's modes and returns its tasks.

    Args:
      contender: The contender.
      batch: Host inputs.
      hlo_dir: Where to write the optimized HLO text, or ``None``.

    Returns:
      One task per mode.
    """
    args = jax.block_until_ready(contender.make_args(batch))
    tasks = []
    for mode in contender.modes:
        as_is = contender.as_is or mode == FORWARD
        fn = contender.loss if as_is else jax.value_and_grad(contender.loss)
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        compile_s = time.perf_counter() - start
        text = compiled.as_text()
        memory = memory_analysis(compiled)
        memory.update({f"hlo_{k}": v for k, v in entry_hlo_stats(text).items()})
        if hlo_dir is not None:
            hlo_dir.mkdir(parents=True, exist_ok=True)
            (hlo_dir / f"{contender.key}-{mode}-{batch.n}.hlo.txt").write_text(text)
        jax.block_until_ready(compiled(*args))  # First call: lazy initialisation.
        memory["device_peak_bytes"] = jax_peak_bytes(
            lambda c=compiled: jax.block_until_ready(c(*args))
        )
        tasks.append(
            Task(
                key=contender.key,
                label=contender.label,
                mode=mode,
                run=lambda c=compiled: c(*args),
                block=jax.block_until_ready,
                ideal_bytes=ideal_bytes(args, mode),
                ref=contender.ref,
                group=contender.group,
                compile_s=compile_s,
                memory=memory,
            )
        )
    return tasks


def floor_task(nbytes: int) -> Task:
    """The bandwidth floor for ``nbytes`` of traffic: an XLA copy of ``nbytes / 2`` bytes.

    The copy is a bitwise NOT of uint32 words, so XLA can neither elide it nor alias its
    output to its input; like every contender it writes a freshly allocated output.

    Args:
      nbytes: Reads plus writes to match.

    Returns:
      The task.
    """
    words = max(1, math.ceil(nbytes / 8))
    x = jax.block_until_ready(jnp.arange(words, dtype=jnp.uint32))
    compiled = jax.jit(lambda a: ~a).lower(x).compile()
    jax.block_until_ready(compiled(x))
    return Task(
        key=f"floor_{nbytes}",
        label=f"copy {nbytes} B",
        mode=FLOOR,
        run=lambda: compiled(x),
        block=jax.block_until_ready,
        ideal_bytes=nbytes,
        group="floor",
    )


def torch_tasks(torch: ModuleType, device: str, batch: Batch) -> list[Task]:
    """PyTorch ``BCEWithLogitsLoss`` (mean): forward, and forward plus backward.

    Args:
      torch: The imported torch module.
      device: ``"cpu"`` or ``"cuda"``.
      batch: Host inputs.

    Returns:
      Two tasks.
    """
    criterion = torch.nn.BCEWithLogitsLoss(reduction="mean")
    logits = torch.from_numpy(batch.logits).to(device)
    labels = torch.from_numpy(batch.labels).to(device)
    leaf = logits.detach().clone().requires_grad_(True)
    cuda = device == "cuda"

    def block(_: Any) -> None:
        if cuda:
            torch.cuda.synchronize()

    def forward() -> Any:
        with torch.inference_mode():
            return criterion(logits, labels)

    def value_and_grad() -> Any:
        loss = criterion(leaf, labels)
        (grad,) = torch.autograd.grad(loss, leaf)
        return loss.detach(), grad

    tasks = []
    for mode, fn in ((FORWARD, forward), (VALUE_AND_GRAD, value_and_grad)):
        block(fn())
        memory: dict[str, Any] = {}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            live = torch.cuda.memory_allocated()
            result = fn()
            block(result)
            memory["device_peak_bytes"] = int(torch.cuda.max_memory_allocated() - live)
            del result
        nbytes = logits.numel() * 4 * (3 if mode == VALUE_AND_GRAD else 2)
        tasks.append(
            Task(
                key="torch",
                label=f"torch ({device})",
                mode=mode,
                run=fn,
                block=block,
                ideal_bytes=nbytes,
                ref="jaxbce",
                memory=memory,
            )
        )
    return tasks


def size_rows(tasks: list[Task], n: int, shape: tuple[int, int], rounds: int) -> list[dict]:
    """Turns the timed tasks of one size into result rows.

    Args:
      tasks: Timed tasks.
      n: Elements.
      shape: ``(B, C)``.
      rounds: Rounds run.

    Returns:
      One row per task, floors included.
    """
    floors = {t.ideal_bytes: t for t in tasks if t.mode == FLOOR}
    by_key = {(t.key, t.mode): t for t in tasks}
    rows = []
    for task in tasks:
        median = float(statistics.median(task.samples))
        row: dict[str, Any] = {
            "n": n,
            "shape": list(shape),
            "mode": task.mode,
            "contender": task.key,
            "label": task.label,
            "group": task.group,
            "rounds": rounds,
            "inner": task.inner,
            "median_s": median,
            "min_s": float(min(task.samples)),
            "ns_per_element": median / n * 1e9,
            "ideal_bytes": task.ideal_bytes,
            "gbps": task.ideal_bytes / median / 1e9,
            "compile_s": task.compile_s,
            "memory": task.memory,
            "samples_s": [float(f"{s:.6g}") for s in task.samples],
        }
        if task.mode != FLOOR:
            floor = floors[task.ideal_bytes]
            row["floor_s"] = float(statistics.median(floor.samples))
            row["floor_multiple"] = paired_median_ratio(task.samples, floor.samples)
            ref = by_key.get((task.ref or task.key, task.mode))
            row["ref"] = ref.key if ref else None
            row["ratio_to_ref"] = paired_median_ratio(task.samples, ref.samples) if ref else None
        rows.append(row)
    return rows


def bench_size(
    n: int,
    config: RunConfig,
    contenders: list[JaxContender],
    torch_env: tuple[ModuleType | None, str | None],
    schedule: Schedule,
) -> list[dict]:
    """Compiles, warms up and times every contender at one size.

    Args:
      n: Elements.
      config: The run's settings (``classes``, ``seed``, ``dump_hlo`` are used).
      contenders: JAX contenders.
      torch_env: ``(torch, device)`` or ``(None, None)``.
      schedule: Rounds.

    Returns:
      The result rows of this size.
    """
    shape = shape_for(n, config.classes)
    batch = Batch.make(shape, seed=config.seed)
    hlo_dir = Path(config.dump_hlo) if config.dump_hlo else None
    tasks: list[Task] = []
    for contender in contenders:
        tasks += jax_tasks(contender, batch, hlo_dir)
    torch, device = torch_env
    if torch is not None and device is not None:
        tasks += torch_tasks(torch, device, batch)
    tasks += [floor_task(b) for b in sorted({t.ideal_bytes for t in tasks})]
    foreign = ForeignCpu()
    rounds = run_rounds(tasks, schedule)
    rows = size_rows(tasks, n, shape, rounds)
    busy = foreign.fraction()
    for row in rows:
        row["foreign_cpu"] = busy
    return rows
