"""The package as users get it: its types, the sdist's contents, and the wheel at the floors.

``test_wheel_at_the_dependency_floors`` (marker ``floors``) builds the wheel, installs it
with exactly the oldest versions that ``pyproject.toml`` allows into a fresh virtual
environment, and runs ``python -m jaxbce.check`` and ``tests/smoke.py`` there. It takes
minutes (2.5 on 2 cores with a warm pip cache) and downloads from the package index, so
the default run deselects it and ``.ci/run`` runs it as a step of its own::

    python -m pytest -n 0 -m floors tests/test_packaging.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from known_gaps import KNOWN_GAPS
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _run(
    cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env
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


@pytest.mark.static
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
    names = {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "jaxbce/py.typed"}
    for pattern in ("jaxbce/*.py", "tests/*.py", "benchmarks/**/*.py", "examples/**/*.py"):
        names |= {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern)}
    names -= {n for n in names if n.startswith("benchmarks/results/")}
    return names | {"benchmarks/README.md", "examples/README.md"}


def test_sdist_holds_what_its_tests_need(tmp_path: Path) -> None:
    sdist = _build("sdist", tmp_path)
    with tarfile.open(sdist) as tar:
        top = sdist.name.removesuffix(".tar.gz") + "/"
        names = {m.name.removeprefix(top) for m in tar.getmembers() if m.isfile()}
    needed = {"tests/conftest.py", "tests/reference.py", "tests/known_gaps.py", "tests/smoke.py"}
    assert needed <= names
    assert "benchmarks/bench/__init__.py" in names  # pythonpath = ["benchmarks"]
    assert _source_files() - names == set()
    unwanted = [n for n in names if "__pycache__" in n or n.startswith("benchmarks/results/")]
    assert unwanted == []


# ------------------------------------------------------------------------ floors


def _floor_pins() -> list[str]:
    """``name==version`` for every run-time dependency, at the floor it declares."""
    pins = []
    for requirement in PYPROJECT["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        assert match, f"{requirement!r}: every dependency needs a tested floor, name>=version"
        pins.append(f"{match[1]}=={match[2]}")
    return pins


def _floor_python() -> str:
    """An interpreter of the oldest Python that ``requires-python`` allows."""
    match = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert match, PYPROJECT["project"]["requires-python"]
    version = (int(match[1]), int(match[2]))
    if sys.version_info[:2] == version:
        return sys.executable
    found = shutil.which(f"python{version[0]}.{version[1]}")
    if found is None:
        pytest.fail(f"no Python {version[0]}.{version[1]} interpreter to test the floor with")
    return found


def _self_check_failures(report: str) -> tuple[int, list[str]]:
    """The number of device-sweep rows in ``python -m jaxbce.check``'s report, and every
    line that fails other than a recorded gap within its recorded figures
    (``tests/known_gaps.py``, as ``tests/test_check.py`` judges the quick check)."""
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("function "))
    cols = [header.index(c) for c in ("options", "dtype", "labels", "inputs", "loss ulp")]
    rows, failures = 0, []
    for line in lines:
        fields = line.split()
        if fields and fields[-1] in ("yes", "NO") and not line.startswith(" "):
            rows += 1
            if fields[-1] == "NO":
                starts = (0, *cols[:3])  # function, options, dtype, labels
                key = tuple(line[a:b].strip() for a, b in zip(starts, cols[:4], strict=True))
                loss_ulp, _, _, grad_ulp = line[cols[4] - 1 :].split()[:4]
                limit = KNOWN_GAPS.get(key)
                if limit is None or float(loss_ulp) > limit[0] or float(grad_ulp) > limit[1]:
                    failures.append(line)
        elif line.startswith("  ") and fields and (fields[-1] == "NO" or "FAIL" in fields):
            failures.append(line)  # the float64 grid and check_grads
    return rows, failures


@pytest.mark.floors
def test_wheel_at_the_dependency_floors(tmp_path: Path) -> None:
    wheel = _build("wheel", tmp_path)
    venv = tmp_path / "venv"
    made = _run([_floor_python(), "-m", "venv", str(venv)], tmp_path, timeout=120)
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    # Only the venv's packages: no PYTHONPATH reaching into a source tree.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    pins = _floor_pins()
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    installed = _run([*pip, str(wheel), *pins], tmp_path, timeout=600, env=env)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]

    # The wheel's jaxbce, not the source tree's, with exactly the pinned versions.
    probe = (
        "import sys, importlib.metadata as m, jaxbce; print(jaxbce.__file__); "
        "print(*(m.version(name) for name in sys.argv[1:]))"
    )
    names = [pin.split("==")[0] for pin in pins]
    where = _run([python, "-c", probe, *names], tmp_path, timeout=120, env=env)
    assert where.returncode == 0, where.stderr
    path, versions = where.stdout.splitlines()
    assert Path(path).is_relative_to(venv), path
    for pin, got in zip(pins, versions.split(), strict=True):
        assert Version(got) == Version(pin.split("==")[1]), (pin, got)

    smoke = _run([python, str(ROOT / "tests" / "smoke.py")], tmp_path, timeout=300, env=env)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "smoke test passed" in smoke.stdout

    check = _run([python, "-m", "jaxbce.check", "--no-progress"], tmp_path, timeout=900, env=env)
    report = check.stdout
    assert check.returncode in (0, 1) and "\nresult: " in report, report + check.stderr
    rows, failures = _self_check_failures(report)
    assert rows >= 50, report  # every device sweep reported
    assert failures == [], "\n".join(failures)
