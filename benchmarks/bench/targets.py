"""The speed and memory targets, checked against measured rows.

A target names the backend and the size it is about; where those were not measured its
status is ``not yet measured``, never an estimate. Speed targets are medians of per-round
ratios of two timings from the same rounds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bench.linear import LINEAR_TARGET_NAME, LINEAR_TARGET_RATIO
from bench.modes import FLOOR, VALUE_AND_GRAD
from bench.timing import paired_median_ratio

#: The sizes the CPU and the GPU timing targets are stated at.
CPU_TARGET_N = 2**24
GPU_TARGET_N = 2**26


def _samples(rows: list[dict], n: int, mode: str, key: str) -> list[float] | None:
    for row in rows:
        if row["n"] == n and row["mode"] == mode and row["contender"] == key:
            return row["samples_s"]
    return None


@dataclasses.dataclass(frozen=True)
class RatioTarget:
    """A target on the median per-round ratio of two timings at one size.

    Attributes:
      name: The line printed.
      backend: Backend the target is about (``"cpu"`` or ``"gpu"``).
      n: Size the target is about.
      numerator: ``(mode, contender key)`` of the numerator's timings.
      denominator: ``(mode, contender key)`` of the denominator's timings.
      at_least: Pass when the ratio is at least this (else use ``at_most``).
      at_most: Pass when the ratio is at most this.
      what: How the ratio reads, e.g. ``"optax / jaxbce"``.
    """

    name: str
    backend: str
    n: int
    numerator: tuple[str, str]
    denominator: tuple[str, str]
    what: str
    at_least: float | None = None
    at_most: float | None = None

    def evaluate(self, rows: list[dict], backend: str) -> dict[str, Any]:
        """Returns the target's status, detail and value for the measured rows."""
        num = _samples(rows, self.n, *self.numerator)
        den = _samples(rows, self.n, *self.denominator)
        entry: dict[str, Any] = {"target": self.name, "status": "not yet measured"}
        if backend != self.backend or num is None or den is None:
            missing = "" if backend == self.backend else f"a {self.backend.upper()} run, "
            entry["detail"] = f"needs {missing}{self.what} at N=2^{int(math.log2(self.n))}"
            return entry
        ratio = paired_median_ratio(num, den)
        ok = ratio >= self.at_least if self.at_least is not None else ratio <= self.at_most
        entry.update(status="pass" if ok else "fail", value=ratio)
        entry["detail"] = f"{self.what} = {ratio:.3g}"
        return entry


def targets_for() -> list[RatioTarget]:
    """Returns the timing targets, in the order printed."""
    vg = VALUE_AND_GRAD
    cpu, gpu = CPU_TARGET_N, GPU_TARGET_N
    prefix_cpu = "CPU N=2^24 value_and_grad:"
    prefix_gpu = "GPU N=2^26 value_and_grad:"
    return [
        RatioTarget(
            f"{prefix_cpu} jaxbce >= 3x faster than optax",
            "cpu",
            cpu,
            (vg, "optax"),
            (vg, "jaxbce"),
            "optax / jaxbce",
            at_least=3.0,
        ),
        RatioTarget(
            f"{prefix_cpu} jaxbce >= 3x faster than PyTorch",
            "cpu",
            cpu,
            (vg, "torch"),
            (vg, "jaxbce"),
            "torch / jaxbce",
            at_least=3.0,
        ),
        RatioTarget(
            f"{prefix_cpu} jaxbce within 1.5x of a fused elementwise pass",
            "cpu",
            cpu,
            (vg, "jaxbce"),
            (vg, "fused_pass"),
            "jaxbce / fused pass",
            at_most=1.5,
        ),
        RatioTarget(
            f"{prefix_gpu} jaxbce >= 90% of the 12N-byte bandwidth floor",
            "gpu",
            gpu,
            (FLOOR, f"floor_{12 * gpu}"),
            (vg, "jaxbce"),
            "floor / jaxbce",
            at_least=0.9,
        ),
        RatioTarget(
            f"{prefix_gpu} jaxbce >= 1.5x faster than optax",
            "gpu",
            gpu,
            (vg, "optax"),
            (vg, "jaxbce"),
            "optax / jaxbce",
            at_least=1.5,
        ),
        RatioTarget(
            f"{prefix_gpu} bf16 logits + bool labels >= 2x faster than f32 + f32",
            "gpu",
            gpu,
            (vg, "jaxbce"),
            (vg, "jaxbce_bf16_bool"),
            "jaxbce f32 / jaxbce bf16+bool",
            at_least=2.0,
        ),
    ]


def memory_target(rows: list[dict], backend: str) -> dict[str, Any]:
    """No temporary N-sized buffer beyond the gradient, at the largest size measured.

    Args:
      rows: All result rows.
      backend: JAX's default backend.

    Returns:
      The target entry; the value is jaxbce's ``temp_size_in_bytes / 4N``. The detail adds
      optax's value and the other jaxbce BCE variants that do hold an N-element temporary.
    """
    name = f"Memory ({backend}) value_and_grad: jaxbce needs no N-sized temporary buffer"
    temps = {
        r["contender"]: (r["label"], r["memory"]["temp_size_in_bytes"])
        for r in rows
        if r["mode"] == VALUE_AND_GRAD
        and r["n"] == max(q["n"] for q in rows)
        and "temp_size_in_bytes" in r["memory"]
    }
    if "jaxbce" not in temps:
        return {
            "target": name,
            "status": "not yet measured",
            "detail": "no memory_analysis() on this backend",
        }
    n = max(r["n"] for r in rows)
    buffers = temps["jaxbce"][1] / (4 * n)
    detail = f"jaxbce temp = {buffers:.3g} x 4N bytes at N=2^{math.log2(n):g}"
    if "optax" in temps:
        detail += f" (optax: {temps['optax'][1] / (4 * n):.3g})"
    others = [
        f"{label}: {temp / (4 * n):.3g} x 4N"
        for key, (label, temp) in temps.items()
        if key.startswith("jaxbce_") and "focal" not in key and temp >= n
    ]
    if others:
        detail += "; jaxbce variants with an N-element temporary: " + ", ".join(others)
    return {
        "target": name,
        "status": "pass" if buffers < 1 else "fail",
        "value": buffers,
        "detail": detail,
    }


def linear_target(section: dict[str, Any] | None) -> dict[str, Any]:
    """The 1.3x target for the fused linear loss (dense labels, every L run).

    Args:
      section: The ``fused_linear`` JSON section, or ``None`` when it was not run.

    Returns:
      The target entry; its value is the worst (largest) fused / unfused ratio over the
      sizes where the unfused loss ran.
    """
    entry: dict[str, Any] = {"target": LINEAR_TARGET_NAME, "status": "not yet measured"}
    ratios = {
        r["labels"]: r["ratio_to_unfused"]
        for r in (section or {}).get("rows", [])
        if r["contender"] == "fused" and "ratio_to_unfused" in r
    }
    if not ratios:
        entry["detail"] = "needs a run with --linear (or --linear-only) where the unfused loss fits"
        return entry
    worst = max(ratios.values())
    entry.update(status="pass" if worst <= LINEAR_TARGET_RATIO else "fail", value=worst)
    entry["detail"] = "fused / unfused = " + ", ".join(
        f"{r:.3g} at L=2^{math.log2(n):g}" for n, r in sorted(ratios.items())
    )
    return entry


def evaluate_targets(
    rows: list[dict], backend: str, linear: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Checks every target against the measured rows.

    A target needs the backend and the size it names; where those were not measured its
    status is ``not yet measured``, never an estimate.

    Args:
      rows: All result rows.
      backend: JAX's default backend.
      linear: The ``fused_linear`` section, or ``None`` when it was not run.

    Returns:
      One entry per target line: ``target``, ``status`` (``pass``, ``fail`` or
      ``not yet measured``), ``detail`` and, when measured, ``value``.
    """
    if not rows:  # A --linear-only run.
        return [linear_target(linear)]
    return (
        [t.evaluate(rows, backend) for t in targets_for()]
        + [memory_target(rows, backend)]
        + [linear_target(linear)]
    )
