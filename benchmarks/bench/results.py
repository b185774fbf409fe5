"""Where a run's JSON and PNG go, and what they may never replace.

A run writes into ``runs/bench/`` (ignored by git) unless given another folder; only an
explicit save writes into ``benchmarks/results/``, where the committed results live. File
names carry the kind of run (:attr:`bench.config.RunConfig.kind`): ``cpu-quick-<date>``,
``cpu-linear-<date>``, ...; a full run keeps the plain ``cpu-<date>``. Outside ``runs/bench/``
no file is ever replaced (two runs of one kind on one day, the second with other settings,
replaced the first, committed or not); inside it a rerun replaces a run of its own kind.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.report import plot

#: Committed results: written only by an explicit save.
RESULTS_DIR = ROOT / "benchmarks" / "results"
#: Where a run writes by default; ``/runs/`` is in ``.gitignore``.
RUNS_DIR = ROOT / "runs" / "bench"


def output_dir(out: str | None, save: bool) -> Path:
    """The folder a run writes into.

    Args:
      out: A folder named by the user, or ``None``.
      save: Write into :data:`RESULTS_DIR`, the committed results.

    Returns:
      :data:`RESULTS_DIR` when saving, else ``out``, else :data:`RUNS_DIR`.
    """
    if save:
        return RESULTS_DIR
    return Path(out) if out else RUNS_DIR


def today_utc() -> str:
    """Today's date in UTC, ``YYYY-MM-DD``, as in the results' ``timestamp_utc``."""
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def file_stem(backend: str, kind: str, date: str) -> str:
    """``<backend>-<kind>-<date>``, or ``<backend>-<date>`` for a full run."""
    return f"{backend}-{date}" if kind == "full" else f"{backend}-{kind}-{date}"


def check_replaceable(out: Path, stem: str, kind: str) -> None:
    """Refuses to let a run replace a file: any, outside :data:`RUNS_DIR`; there, one of
    another kind of run.

    Args:
      out: The output folder.
      stem: The file name, without ``.json`` or ``.png``.
      kind: The kind of the run about to write.

    Raises:
      FileExistsError: If ``<stem>.json`` or ``<stem>.png`` exists, outside
        :data:`RUNS_DIR` or where the JSON does not record a run of the same kind.
    """
    json_path, png_path = out / f"{stem}.json", out / f"{stem}.png"
    if out.resolve() != RUNS_DIR.resolve() and (json_path.exists() or png_path.exists()):
        raise FileExistsError(
            f"{json_path if json_path.exists() else png_path} exists and is never replaced "
            "outside runs/bench/. Write elsewhere with --out DIR, or move that file first."
        )
    if json_path.exists():
        try:
            found = json.loads(json_path.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            found = None
        if found == kind:
            return
        reason = (
            f"{json_path} holds a {found} run" if found else f"{json_path} records no kind of run"
        )
    elif png_path.exists():
        reason = f"{png_path} has no results JSON beside it to say its kind of run"
    else:
        return
    raise FileExistsError(
        f"{reason}: a {kind} run does not replace it. "
        "Write elsewhere with --out DIR, or move that file first."
    )


def write_results(result: dict[str, Any], out: Path) -> None:
    """Writes ``<stem>.json`` and, if there are elementwise rows, the ``<stem>.png`` plot.

    Args:
      result: The run's JSON result (``backend``, ``kind``, ``timestamp_utc``, ...).
      out: The output folder, created if missing.

    Raises:
      FileExistsError: See :func:`check_replaceable`.
    """
    stem = file_stem(result["backend"], result["kind"], result["timestamp_utc"][:10])
    check_replaceable(out, stem, result["kind"])
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    if not result["results"]:
        print(f"Wrote {json_path}")
        return
    png_path = out / f"{stem}.png"
    device = result["machine"]["device_kind"]
    plot(result["results"], png_path, f"jaxbce benchmark, {stem} ({device})")
    print(f"Wrote {json_path} and {png_path}")
