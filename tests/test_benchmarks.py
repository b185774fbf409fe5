"""Smoke test of ``benchmarks/run.py``: the script runs and writes sane results.

No timing is asserted: timings on a shared CI machine say nothing about correctness.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "run.py"

JAX_CONTENDERS = {
    "jaxbce",
    "optax",
    "naive",
    "jaxbce_bool",
    "jaxbce_bf16_bool",
    "jaxbce_where",
    "jaxbce_focal",
    "optax_focal",
}


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def test_quick_run_writes_complete_finite_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--sizes", "4096", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Targets" in proc.stdout

    (json_path,) = tmp_path.glob("*.json")
    (png_path,) = tmp_path.glob("*.png")
    assert json_path.stem == png_path.stem
    assert png_path.stat().st_size > 0
    result = json.loads(json_path.read_text())
    assert json_path.stem.startswith(result["backend"] + "-")

    rows = result["results"]
    assert {r["n"] for r in rows} == {4096}
    seen = {(r["contender"], r["mode"]) for r in rows}
    for key in JAX_CONTENDERS:
        assert (key, "forward") in seen, key
        assert (key, "value_and_grad") in seen, key
    assert ("fused_pass", "value_and_grad") in seen
    # PyTorch is optional (skipped with a note where it is missing or lacks CUDA).
    has_torch = ("torch", "value_and_grad") in seen
    assert has_torch or any("PyTorch contender skipped" in n for n in result["notes"])
    floors = {r["ideal_bytes"] for r in rows if r["mode"] == "floor"}
    assert 12 * 4096 in floors

    for row in rows:
        assert row["samples_s"] and all(_finite(s) and s > 0 for s in row["samples_s"]), row
        for field in ("median_s", "ns_per_element", "gbps"):
            assert _finite(row[field]) and row[field] > 0, (row["contender"], field)
        if row["mode"] == "floor":
            continue
        assert _finite(row["floor_multiple"]), row["contender"]
        assert _finite(row["ratio_to_ref"]), row["contender"]
        if row["contender"] != "torch":
            assert _finite(row["compile_s"]), row["contender"]
            memory = row["memory"]
            assert _finite(memory["temp_size_in_bytes"]), row["contender"]
            assert _finite(memory["output_size_in_bytes"]), row["contender"]

    by_key = {(r["contender"], r["mode"]): r for r in rows}
    # value_and_grad returns the scalar and a gradient the size of the logits.
    assert by_key["jaxbce", "value_and_grad"]["memory"]["output_size_in_bytes"] >= 4 * 4096
    assert by_key["jaxbce", "value_and_grad"]["ideal_bytes"] == 12 * 4096
    assert by_key["jaxbce_bool", "value_and_grad"]["ideal_bytes"] == 9 * 4096
    assert by_key["jaxbce_bf16_bool", "value_and_grad"]["ideal_bytes"] == 5 * 4096

    statuses = {t["status"] for t in result["targets"]}
    assert statuses <= {"pass", "fail", "not yet measured"}
    assert len(result["targets"]) == 7
