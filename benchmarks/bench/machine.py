"""The machine a run measures on: hardware and versions, the exact code, and competing load.

:func:`machine_info`, :func:`source_digest` and :func:`git_state` go into every result,
so that a number names the machine and the code it came from; :class:`ForeignCpu` says
how much CPU other processes took while a size was timed.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import numpy as np
import optax

from bench import ROOT


def machine_info(backend: str) -> dict[str, Any]:
    """Describes the machine and the software versions.

    Args:
      backend: JAX's default backend.

    Returns:
      A JSON-ready dict.
    """
    cpu = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    device = jax.devices()[0]
    import jaxlib

    return {
        "backend": backend,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
    }


def source_digest(module: ModuleType) -> str | None:
    """SHA-256 of a package's ``.py`` files, so results name the exact code measured.

    Args:
      module: An imported package.

    Returns:
      The hex digest of the sorted files' names and contents, or ``None``.
    """
    paths = list(getattr(module, "__path__", []))
    if not paths:
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(paths[0]).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def git_state(paths: Sequence[str] = ("jaxbce",), where: Path = ROOT) -> str | None:
    """``<commit>`` of the checkout at ``where`` (this one by default), with ``+dirty`` when
    ``git status`` lists anything under ``paths`` (git pathspecs, relative to ``where``;
    ``()`` for the whole tree): a changed or an untracked file, which the run may have
    read. ``JAXBCE_COMMIT``, if set, is returned instead: a copy of the tree whose git
    metadata is not its own (the device machine's, where a run at 2942cd3 recorded the
    session's first commit) says which commit it is (``tools/device_checks.sh``)."""
    if os.environ.get("JAXBCE_COMMIT"):
        return os.environ["JAXBCE_COMMIT"]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths],
            cwd=where,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def host_memcpy_gbps(nbytes: int = 1 << 27) -> float:
    """NumPy copy into a preallocated buffer (reads plus writes), for context only.

    Args:
      nbytes: Bytes to copy.

    Returns:
      GB/s, the best of five.
    """
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best / 1e9


def machine_ram_bytes() -> int | None:
    """Physical memory of this machine in bytes, or ``None`` where unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


class ForeignCpu:
    """CPU time that other processes used on this machine while a block of code ran.

    Reads the busy time of all cores from ``/proc/stat`` and subtracts this process's own
    CPU time, so a benchmark can say whether something else competed for the cores.
    """

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(x) for x in fields]
        busy = sum(ticks) - ticks[3] - ticks[4]  # Everything but idle and iowait.
        hz = os.sysconf("SC_CLK_TCK")
        return busy / hz, time.process_time(), time.perf_counter()

    def fraction(self) -> float | None:
        """Other processes' CPU time as a fraction of all cores' time since creation."""
        end = self._now()
        if self.start is None or end is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self.start, strict=True))
        return round(max(0.0, busy - own) / (wall * (os.cpu_count() or 1)), 3)
