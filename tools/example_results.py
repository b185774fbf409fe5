"""Runs every example command whose results the docs quote, and records what each printed.

Each run is the documented command with its default flags (seed 0 unless the row says
otherwise), in its own process, timed as a user would time it (wall clock of the whole
command: imports and compilation included), into a fresh temporary ``--out``. The record is
one JSON file: for each run its command, environment, wall time, exit status and the
``metrics.json`` it wrote, with the machine and the commit.

Usage::

    python tools/example_results.py --out docs/results/examples.json
    python tools/example_results.py --out /tmp/examples.json --only contrastive

``--out`` must not exist yet: the tool never replaces a file (a committed record is replaced
on purpose, by deleting it first). The docs' tables of example results are read from the
committed record, ``docs/results/examples.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench.machine import git_state  # noqa: E402  (the benchmarks' record of the commit)

EIGHT_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}

#: (name, script, flags, extra environment); the name is the record's key.
RUNS: list[tuple[str, str, list[str], dict[str, str]]] = [
    ("binary", "binary_classifier.py", [], {}),
    ("binary --no-pos-weight", "binary_classifier.py", ["--no-pos-weight"], {}),
    ("binary, 8 devices", "binary_classifier.py", [], EIGHT_DEVICES),
    ("multilabel", "multilabel_classifier.py", [], {}),
    ("multilabel --loss focal", "multilabel_classifier.py", ["--loss", "focal"], {}),
    ("multilabel --hide-fraction 0.3", "multilabel_classifier.py", ["--hide-fraction", "0.3"], {}),
    (
        "multilabel --hide-fraction 0.3, 8 devices",
        "multilabel_classifier.py",
        ["--hide-fraction", "0.3"],
        EIGHT_DEVICES,
    ),
    ("extreme", "extreme_multilabel.py", [], {}),
    ("contrastive", "contrastive_pairs.py", [], {}),
    ("contrastive --pair-ids class", "contrastive_pairs.py", ["--pair-ids", "class"], {}),
    ("contrastive, 8 devices", "contrastive_pairs.py", [], EIGHT_DEVICES),
    ("contrastive --seed 1", "contrastive_pairs.py", ["--seed", "1"], {}),
    ("contrastive --seed 2", "contrastive_pairs.py", ["--seed", "2"], {}),
    (
        "contrastive --pair-ids class --seed 1",
        "contrastive_pairs.py",
        ["--pair-ids", "class", "--seed", "1"],
        {},
    ),
    (
        "contrastive --pair-ids class --seed 2",
        "contrastive_pairs.py",
        ["--pair-ids", "class", "--seed", "2"],
        {},
    ),
]


def run_one(script: str, flags: list[str], env: dict[str, str]) -> dict[str, object]:
    """Runs one example into a fresh temporary ``--out``; returns its record."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, str(ROOT / "examples" / script), *flags, "--out", str(out)]
        start = time.perf_counter()
        proc = subprocess.run(
            command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        metrics_path = out / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    record: dict[str, object] = {
        "command": " ".join(["python", f"examples/{script}", *flags, "--out", "DIR"]),
        "env": env,
        "wall_s": round(wall, 2),
        "returncode": proc.returncode,
        "metrics": metrics,
    }
    if proc.returncode != 0:
        record["stderr_tail"] = proc.stderr[-2000:]
    return record


def main(argv: list[str] | None = None) -> int:
    """Runs the chosen examples and writes the record; exit status 1 if any run failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON record (new file)")
    parser.add_argument("--only", default="", help="only runs whose name contains this")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"--out {str(args.out)!r} exists; this tool never replaces a file")
    if not args.out.parent.is_dir():
        parser.error(f"--out {str(args.out)!r}: no such folder {str(args.out.parent)!r}")
    chosen = [r for r in RUNS if args.only in r[0]]
    if not chosen:
        parser.error(f"--only {args.only!r}: no run of {[r[0] for r in RUNS]}")
    import jax  # after the checks: a refused command costs no import

    record: dict[str, object] = {
        "tool": "python tools/example_results.py",
        "date_utc": time.strftime("%Y-%m-%d", time.gmtime()),
        "git": git_state(paths=()),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_model": _cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
        },
        "runs": {},
    }
    runs: dict[str, object] = record["runs"]  # type: ignore[assignment]
    failed = False
    for name, script, flags, env in chosen:
        runs[name] = result = run_one(script, flags, env)
        failed |= result["returncode"] != 0
        print(f"{name:45} {result['wall_s']:7.1f} s  exit {result['returncode']}", flush=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(partial, args.out)
    print(f"Wrote {args.out}")
    return 1 if failed else 0


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
