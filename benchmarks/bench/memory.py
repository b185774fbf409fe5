"""What a compiled JAX function holds and moves: XLA's memory analysis, the traffic of its
optimized HLO, and its peak device memory on a GPU.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
}


_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")


_NOT_WORK = ("parameter(", "constant(", "tuple(", "get-tuple-element(", "bitcast(")


def _shape_bytes(text: str) -> int:
    total = 0
    for dtype, dims in _SHAPE.findall(text):
        total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def entry_hlo_stats(hlo_text: str) -> dict[str, int]:
    """Counts the work of the entry computation of an optimized HLO module.

    Args:
      hlo_text: ``compiled.as_text()``.

    Returns:
      ``fusions`` (fusion instructions), ``ops`` (all instructions except parameters,
      constants, tuples and bitcasts) and ``traffic_bytes``: for each of those ops, the
      bytes of its operands plus its outputs. That is the memory traffic of the program if
      every op reads each operand once; compare it with the ideal bytes.
    """
    start = hlo_text.find("\nENTRY")
    body = hlo_text[start:].split("\n}\n", 1)[0] if start >= 0 else ""
    shapes: dict[str, int] = {}
    fusions = ops = traffic = 0
    for line in body.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT )?(%[\w.\-]+) = (.*)$", line)
        if not match:
            continue
        name, rest = match.groups()
        head = re.split(r"\s[\w\-]+\(", rest, maxsplit=1)[0]  # The output shape.
        shapes[name] = _shape_bytes(head)
        if any(word in rest for word in _NOT_WORK):
            continue
        ops += 1
        fusions += " fusion(" in rest
        call = rest[len(head) :].split("), ", 1)[0]
        operands = re.findall(r"%[\w.\-]+", call)
        traffic += shapes[name] + sum(shapes.get(o, 0) for o in operands)
    return {"fusions": fusions, "ops": ops, "traffic_bytes": traffic}


def memory_analysis(compiled: Any) -> dict[str, Any]:
    try:
        stats = compiled.memory_analysis()
    except Exception as err:  # Not every backend implements it.
        return {"error": repr(err)}
    if stats is None:
        return {}
    fields = ("temp_size_in_bytes", "output_size_in_bytes", "argument_size_in_bytes")
    return {name: int(getattr(stats, name)) for name in fields if hasattr(stats, name)}


def jax_peak_bytes(call: Callable[[], Any]) -> int | None:
    """Peak device memory allocated while ``call`` runs, above what was live before.

    ``peak_bytes_in_use`` only grows and cannot be reset, so a ballast buffer first
    fills the gap between the live bytes and the process's old peak: any allocation
    made by ``call`` then raises the peak, and the rise is its own peak.

    Args:
      call: Runs and blocks on one JAX computation.

    Returns:
      Bytes, or ``None`` where the device keeps no memory statistics (CPU).
    """
    device = jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # Backends without statistics raise or return None.
        stats = None
    if not stats or "peak_bytes_in_use" not in stats:
        call()
        return None
    gap = stats["peak_bytes_in_use"] - stats["bytes_in_use"] + (1 << 20)
    ballast = jax.block_until_ready(jnp.zeros((gap,), jnp.uint8))
    live = device.memory_stats()["bytes_in_use"]
    call()
    peak = device.memory_stats()["peak_bytes_in_use"]
    del ballast
    return max(0, int(peak - live))
