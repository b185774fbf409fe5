"""The fused linear layer + BCE benchmark.

``jax.value_and_grad`` in the features, kernel and bias of
``jaxbce.linear_sigmoid_binary_cross_entropy`` (dense bool labels, and sparse (B, K)
positive indices) against the unfused ``sigmoid_binary_cross_entropy(features @ kernel +
bias, labels)``, for B = 1024, d = 256 and several label counts L, timed round by round
like the elementwise benchmark. The unfused loss is compiled at every L but run only where
its XLA temporaries fit in a fraction of the machine's RAM; a loss that does not compile is
reported, not fatal. Its target is in :mod:`bench.targets`, its tables in
:mod:`bench.report`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bench.machine import ForeignCpu, machine_ram_bytes
from bench.memory import memory_analysis
from bench.modes import VALUE_AND_GRAD
from bench.timing import Schedule, Task, paired_median_ratio, run_rounds

#: Shape of the fused linear benchmark: features (B, d), kernel (d, L), sparse labels (B, K).
LINEAR_BATCH = 1024
LINEAR_IN_FEATURES = 256
LINEAR_POSITIVES = 8
LINEAR_SIZES = (2**14, 2**16, 2**17)
#: The speed target: fused value_and_grad time / unfused at most this, where the unfused runs.
LINEAR_TARGET_RATIO = 1.3
#: The unfused loss is compiled at every size but run only if its XLA temporaries fit in
#: this fraction of the machine's RAM.
LINEAR_MAX_RAM_FRACTION = 0.4
LINEAR_TARGET_NAME = "fused linear value_and_grad within 1.3x of unfused"


def linear_inputs(n_labels: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Host inputs of the fused linear benchmark for ``L = n_labels``.

    The logits ``features @ kernel + bias`` have a standard deviation of about 3, like the
    elementwise benchmark's. The sparse labels are ``LINEAR_POSITIVES`` random positive
    indices per row (duplicates count once) and the dense bool labels are the same
    positives scattered into a (B, L) matrix, so both formats give the same loss.

    Args:
      n_labels: L.
      seed: NumPy seed.

    Returns:
      ``features``, ``kernel``, ``bias``, ``dense`` and ``sparse`` arrays.
    """
    rng = np.random.default_rng(seed)
    b, d = LINEAR_BATCH, LINEAR_IN_FEATURES
    features = rng.standard_normal((b, d), dtype=np.float32)
    kernel = (3.0 / math.sqrt(d)) * rng.standard_normal((d, n_labels), dtype=np.float32)
    bias = 0.1 * rng.standard_normal((n_labels,), dtype=np.float32)
    sparse = rng.integers(0, n_labels, (b, LINEAR_POSITIVES), dtype=np.int32)
    dense = np.zeros((b, n_labels), dtype=bool)
    np.put_along_axis(dense, sparse, True, axis=1)
    return {
        "features": features,
        "kernel": kernel.astype(np.float32),
        "bias": bias,
        "dense": dense,
        "sparse": sparse,
    }


def linear_contenders(jaxbce: ModuleType) -> list[tuple[str, str, Callable[..., jax.Array], str]]:
    """The fused linear contenders: ``(key, label, loss(h, W, b, y), labels format)``.

    Args:
      jaxbce: The imported library.

    Returns:
      Fused with dense bool labels, fused with sparse (B, K) labels, and the unfused
      ``sigmoid_binary_cross_entropy(h @ W + b, dense)``, which divides the others' times.
    """
    fused = jaxbce.linear_sigmoid_binary_cross_entropy
    bce = jaxbce.sigmoid_binary_cross_entropy
    return [
        ("fused", "fused, dense bool labels", lambda h, w, b, y: fused(h, w, y, bias=b), "dense"),
        (
            "fused_sparse",
            f"fused, sparse (B, {LINEAR_POSITIVES}) labels",
            lambda h, w, b, y: fused(h, w, y, bias=b),
            "sparse",
        ),
        (
            "unfused",
            "unfused h @ W + b, BCE",
            lambda h, w, b, y: bce(h @ w + b, y, reduction="mean"),
            "dense",
        ),
    ]


def bench_linear_size(
    n_labels: int, jaxbce: ModuleType, schedule: Schedule, seed: int
) -> list[dict[str, Any]]:
    """Compiles and times ``value_and_grad`` of the fused and unfused losses at one L.

    Gradients are taken in the features, the kernel and the bias. The contenders run
    round by round with :func:`run_rounds` (warm-up, one untimed call before each
    sample); the ratio to the unfused loss is the median of the per-round ratios.

    Args:
      n_labels: L.
      jaxbce: The imported library.
      schedule: Rounds.
      seed: NumPy seed.

    Returns:
      One row per contender.
    """
    host = linear_inputs(n_labels, seed)
    ram = machine_ram_bytes()
    common = [jnp.asarray(host[k]) for k in ("features", "kernel", "bias")]
    tasks: list[Task] = []
    rows: dict[str, dict[str, Any]] = {}
    values: dict[str, float] = {}
    for key, label, loss, fmt in linear_contenders(jaxbce):
        args = jax.block_until_ready((*common, jnp.asarray(host[fmt])))
        row: dict[str, Any] = {
            "labels": n_labels,
            "contender": key,
            "label": label,
            "label_format": fmt,
            "compile_s": None,
            "memory": {},
        }
        rows[key] = row
        start = time.perf_counter()
        try:
            vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
            compiled = vg.lower(*args).compile()
        except Exception as err:  # E.g. too large to compile; reported, not fatal.
            row["skipped"] = f"not run: does not compile ({type(err).__name__}: {err})"[:300]
            continue
        row["compile_s"] = time.perf_counter() - start
        row["memory"] = memory_analysis(compiled)
        temp = row["memory"].get("temp_size_in_bytes")
        if ram is not None and temp is not None and temp > LINEAR_MAX_RAM_FRACTION * ram:
            row["skipped"] = (
                f"not run: XLA temporaries {temp / 2**30:.1f} GiB > "
                f"{LINEAR_MAX_RAM_FRACTION:.0%} of {ram / 2**30:.1f} GiB RAM"
            )
            continue
        value, _ = jax.block_until_ready(compiled(*args))  # First call: lazy initialisation.
        values[key] = float(value)
        row["value"] = float(value)
        tasks.append(
            Task(
                key=key,
                label=label,
                mode=VALUE_AND_GRAD,
                run=lambda c=compiled, a=args: c(*a),
                block=jax.block_until_ready,
                ideal_bytes=0,
                compile_s=row["compile_s"],
                memory=row["memory"],
            )
        )
    foreign = ForeignCpu()
    n_rounds = run_rounds(tasks, schedule) if tasks else 0
    busy = foreign.fraction()
    by_key = {t.key: t for t in tasks}
    ref = by_key.get("unfused")
    for task in tasks:
        row = rows[task.key]
        row.update(
            rounds=n_rounds,
            inner=task.inner,
            median_ms=float(statistics.median(task.samples)) * 1e3,
            min_ms=float(min(task.samples)) * 1e3,
            samples_s=[float(f"{s:.6g}") for s in task.samples],
        )
        if ref is not None:
            row["ratio_to_unfused"] = paired_median_ratio(task.samples, ref.samples)
        if "unfused" in values:
            row["value_abs_diff_to_unfused"] = abs(values[task.key] - values["unfused"])
    for row in rows.values():
        row["foreign_cpu"] = busy
    return list(rows.values())


def run_linear(
    jaxbce: ModuleType, schedule: Schedule, sizes: Sequence[int] | None = None, seed: int = 0
) -> dict:
    """Runs the fused linear benchmark at every size.

    Args:
      jaxbce: The imported library.
      schedule: The run's schedule; the linear section warms each function up with one
        call (they take up to seconds each).
      sizes: Label counts L (default :data:`LINEAR_SIZES`).
      seed: NumPy seed of the inputs.

    Returns:
      The ``fused_linear`` JSON section.
    """
    schedule = dataclasses.replace(schedule, warmup=1, warmup_s=0.0)
    sizes = sorted(set(sizes or LINEAR_SIZES))
    started = time.perf_counter()
    rows: list[dict] = []
    for n_labels in sizes:
        rows += bench_linear_size(n_labels, jaxbce, schedule, seed)
    default_chunk = getattr(jaxbce, "default_chunk_size", None)
    return {
        "batch": LINEAR_BATCH,
        "in_features": LINEAR_IN_FEATURES,
        "positives": LINEAR_POSITIVES,
        "sizes": sizes,
        "chunk_size": {
            str(n): default_chunk(LINEAR_BATCH, n) for n in sizes if default_chunk is not None
        },
        "ram_bytes": machine_ram_bytes(),
        "schedule": dataclasses.asdict(schedule),
        "rows": rows,
        "elapsed_s": time.perf_counter() - started,
    }
