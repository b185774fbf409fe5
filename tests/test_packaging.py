"""The package as users get it: its types (``mypy --strict``; the package ships ``py.typed``)
and the sdist's contents."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


#: Build outputs, caches and environments (.gitignore's entries): a stale
#: jaxbce.egg-info/SOURCES.txt would put files into the sdist that MANIFEST.in does not.
_NOT_SOURCES = shutil.ignore_patterns(
    ".*", "__pycache__", "*.egg-info", "build", "dist", "venv", "runs", "out"
)


def _build(kind: str, tmp: Path) -> Path:
    """Builds the sdist or the wheel with this environment's setuptools, from a copy of the
    source tree without build outputs, into ``tmp / "dist"``."""
    src = shutil.copytree(ROOT, tmp / "src", ignore=_NOT_SOURCES)
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "build", f"--{kind}", "--no-isolation", "--outdir", str(out)]
    done = _run(cmd, src, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [path] = out.glob("*.tar.gz" if kind == "sdist" else "*.whl")
    return path


# ------------------------------------------------------------------------ types


def test_mypy_strict_reports_no_errors(tmp_path: Path) -> None:
    # The package ships py.typed: users' type checkers read these signatures.
    cmd = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), "jaxbce"]
    done = _run(cmd, ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Success: no issues found"), done.stdout


# ------------------------------------------------------------------------- sdist


def _source_files() -> set[str]:
    """What the sdist must hold: the package, its metadata, and everything the tests
    import or run (test helpers, the benchmark package and scripts, the examples)."""
    names = {"pyproject.toml", "README.md", "LICENSE", "jaxbce/py.typed"}
    for pattern in ("jaxbce/*.py", "tests/*.py", "benchmarks/**/*.py", "examples/**/*.py"):
        names |= {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern)}
    names -= {n for n in names if n.startswith("benchmarks/results/")}
    return names | {"benchmarks/README.md", "examples/README.md"}


def test_sdist_holds_what_its_tests_need(tmp_path: Path) -> None:
    sdist = _build("sdist", tmp_path)
    with tarfile.open(sdist) as tar:
        top = sdist.name.removesuffix(".tar.gz") + "/"
        names = {m.name.removeprefix(top) for m in tar.getmembers() if m.isfile()}
    needed = {"tests/conftest.py", "tests/reference.py", "tests/known_gaps.py"}
    assert needed <= names
    assert "benchmarks/bench/__init__.py" in names  # pythonpath = ["benchmarks"]
    assert _source_files() - names == set()
    unwanted = [n for n in names if "__pycache__" in n or n.startswith("benchmarks/results/")]
    assert unwanted == []
