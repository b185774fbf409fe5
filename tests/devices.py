"""Running a script in a fresh Python that reports its results as one ``RESULTS <json>`` line:
for the tests that need 8 simulated CPU devices (the device count is fixed when JAX starts),
each script running all its cases in one process."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def script_results(script: str, *args: str, timeout: float) -> Any:
    """Runs ``python -c script *args`` and returns the JSON of its last ``RESULTS`` line; the
    script's exit status must be 0."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULTS "))
