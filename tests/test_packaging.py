"""The package as users get it: its types (``mypy --strict``; the package ships ``py.typed``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


# ------------------------------------------------------------------------ types


def test_mypy_strict_reports_no_errors(tmp_path: Path) -> None:
    # The package ships py.typed: users' type checkers read these signatures.
    cmd = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), "jaxbce"]
    done = _run(cmd, ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Success: no issues found"), done.stdout
