"""A whole benchmark run: from a :class:`~bench.config.RunConfig` to the printed tables and
targets and the JSON result.

Every size is compiled, warmed up and timed round by round (:mod:`bench.elementwise`),
re-timed while other processes load the machine if the config asks for retries, then the
fused linear section runs when asked for, and the targets are checked.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from typing import Any

import jax

from bench.config import RunConfig
from bench.contenders import import_jaxbce, jax_contenders, load_torch
from bench.elementwise import bench_size
from bench.linear import run_linear
from bench.machine import git_state, host_memcpy_gbps, machine_info, source_digest
from bench.modes import FLOOR
from bench.report import format_linear_table, format_table
from bench.targets import evaluate_targets
from bench.timing import Schedule


def make_schedule(config: RunConfig) -> Schedule:
    """The rounds for a full or a quick run.

    Args:
      config: The run's settings.

    Returns:
      The schedule.
    """
    if config.quick:
        return Schedule(
            budget_s=config.budget or 2.0, min_rounds=3, max_rounds=15, min_sample_s=1e-3
        )
    return Schedule(budget_s=config.budget or 25.0, min_rounds=5, max_rounds=50, min_sample_s=5e-3)


def default_sizes(config: RunConfig, backend: str) -> list[int]:
    """The sizes to run: ``config.sizes``, the quick ones, or 2^12..2^24 (CPU) / 2^26 (GPU).

    Args:
      config: The run's settings.
      backend: JAX's default backend.

    Returns:
      Sorted sizes.
    """
    if config.sizes:
        return sorted(set(config.sizes))
    if config.quick:
        return [2**12, 2**16, 2**20]
    return [2**k for k in range(12, 27 if backend == "gpu" else 25)]


def run_benchmark(config: RunConfig) -> dict[str, Any]:
    """Runs every size, prints the tables and the targets, and returns the JSON result.

    Args:
      config: The run's settings.

    Returns:
      The result written to the JSON file.
    """
    backend = jax.default_backend()
    sizes = [] if config.linear_only else default_sizes(config, backend)
    schedule = make_schedule(config)
    jaxbce = import_jaxbce()
    contenders = jax_contenders(jaxbce)
    notes = []
    torch, device = None, None
    if config.linear_only:
        notes.append("Fused linear benchmark only (--linear-only).")
    elif config.no_torch:
        notes.append("PyTorch contender skipped: --no-torch.")
    else:
        torch, device, note = load_torch(backend)
        notes.append(note)
    info = machine_info(backend)
    info["jaxbce"] = str(getattr(jaxbce, "__version__", "unknown"))
    info["jaxbce_source_sha256"] = source_digest(jaxbce)
    info["git"] = git_state()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    if backend == "cpu":
        info["numpy_memcpy_gbps"] = host_memcpy_gbps()
    print(
        f"jaxbce benchmark on {backend} ({info['device_kind']}; CPU {info['cpu_model']}, "
        f"{info['cpu_cores']} cores); " + (f"sizes {sizes}" if sizes else "fused linear loss only")
    )
    for note in notes:
        print(note)

    rows: list[dict] = []
    started = time.perf_counter()
    for n in sizes:
        size_rows = bench_size(n, config, contenders, (torch, device), schedule)
        for attempt in range(config.retries):
            foreign = size_rows[0]["foreign_cpu"]
            if foreign is None or foreign <= config.max_foreign:
                break
            print(f"N = {n}: other processes used {foreign:.0%} of the CPU; retry {attempt + 1}")
            again = bench_size(n, config, contenders, (torch, device), schedule)
            if again[0]["foreign_cpu"] < foreign:
                size_rows = again
        rows += size_rows
        print()
        print(format_table(size_rows), flush=True)
    linear = None
    if config.linear or config.linear_only:
        linear = run_linear(jaxbce, schedule, config.linear_sizes, config.seed)
        print()
        print(format_linear_table(linear), flush=True)
    elapsed = time.perf_counter() - started
    busiest = max((r["foreign_cpu"] or 0.0 for r in rows), default=0.0)
    if busiest > 0.05:
        notes.append(
            f"Warning: other processes used up to {busiest:.0%} of the CPU during the rounds "
            "of one size; those timings are inflated and scattered (see foreign_cpu)."
        )
        print(notes[-1])

    targets = evaluate_targets(rows, backend, linear)
    print("\nTargets")
    for target in targets:
        print(f"  [{target['status'].upper():>16}] {target['target']}: {target['detail']}")
    print(f"\n{elapsed:.0f} s of measurement.")
    result = {
        "schema": 1,
        "backend": backend,
        "kind": config.kind,
        "timestamp_utc": datetime.datetime.now(datetime.UTC).isoformat("T", "seconds"),
        "machine": info,
        "method": {
            "sizes": sizes,
            "classes": config.classes,
            "schedule": dataclasses.asdict(schedule),
            "floor": "XLA bitwise NOT of uint32 words, reading and writing half the ideal "
            "bytes each; ratios are medians of per-round ratios",
        },
        "notes": notes,
        "contenders": sorted({r["contender"] for r in rows if r["mode"] != FLOOR}),
        "targets": targets,
        "results": rows,
        "elapsed_s": elapsed,
    }
    if linear is not None:
        result["fused_linear"] = linear
    return result
