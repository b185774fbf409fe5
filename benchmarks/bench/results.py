"""A run's JSON and PNG: ``<out>/<backend>-<date>.json`` and ``.png``, or
``<out>/<backend>-linear-<date>.json`` for the fused linear benchmark alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.report import plot

#: The committed results, where a run writes by default.
RESULTS_DIR = ROOT / "benchmarks" / "results"


def write_results(result: dict[str, Any], out: Path, linear_only: bool) -> None:
    """Writes ``<stem>.json`` and, if there are elementwise rows, the ``<stem>.png`` plot.

    Args:
      result: The run's JSON result (``backend``, ``timestamp_utc``, ...).
      out: The output folder, created if missing.
      linear_only: The run measured the fused linear benchmark alone.
    """
    out.mkdir(parents=True, exist_ok=True)
    kind = "-linear" if linear_only else ""
    stem = f"{result['backend']}{kind}-{result['timestamp_utc'][:10]}"
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    if not result["results"]:
        print(f"Wrote {json_path}")
        return
    png_path = out / f"{stem}.png"
    device = result["machine"]["device_kind"]
    plot(result["results"], png_path, f"jaxbce benchmark, {stem} ({device})")
    print(f"Wrote {json_path} and {png_path}")
