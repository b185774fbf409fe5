"""The documentation site: it builds without a warning, every example on it runs, every
public name has a page, and the shell commands it shows name real files, flags and extras.

Sphinx runs in subprocesses (``python -m sphinx -W``) into temporary directories: the
doctests enable 8 simulated CPU devices and import Keras, which must not leak into this
process. ``docs/_ext/jaxbce_docs.py`` turns a public name without a page, and a code block
on a page that is not a doctest, into a warning, which ``-W`` makes an error. Sphinx is a
test dependency: without it these tests fail, they do not skip.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import jaxbce

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: The build and its checks share one HTML build (a module fixture) on one xdist worker.
pytestmark = pytest.mark.xdist_group("docs")

#: At least this many doctest examples run (the count when this was written: 168), so that
#: pages whose examples stopped being collected fail here rather than pass with fewer.
MIN_DOCTESTS = 150


def _sphinx(builder: str, out: Path) -> subprocess.CompletedProcess:
    """``python -m sphinx -W -b builder docs out``, offline (no intersphinx fetch)."""
    env = {k: v for k, v in os.environ.items() if k != "JAXBCE_DOCS_INTERSPHINX"}
    options = ["-W", "--keep-going", "-q", "-E", "-b", builder, "-d", str(out / ".doctrees")]
    return subprocess.run(
        [sys.executable, "-m", "sphinx", *options, str(DOCS), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("html")
    return _sphinx("html", out), out


def test_site_builds_without_a_warning(html: tuple[subprocess.CompletedProcess, Path]) -> None:
    proc, out = html
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    for page in DOCS.glob("*.rst"):
        assert (out / f"{page.stem}.html").is_file(), page.name
    # The figures the pages show were found and copied.
    images = {p.name for p in (out / "_images").iterdir()}
    assert {"ulp_vs_logit.png", "binary_roc_pr.png", "cpu-2026-11-25.png"} <= images


def test_every_public_name_and_check_option_has_a_page(
    html: tuple[subprocess.CompletedProcess, Path],
) -> None:
    from sphinx.util.inventory import InventoryFile

    proc, out = html
    assert proc.returncode == 0, proc.stderr[-6000:]
    with open(out / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", os.path.join)
    inv = inventory.data if hasattr(inventory, "data") else inventory
    functions = set(inv["py:function"])
    missing = [n for n in jaxbce.__all__ if f"jaxbce.{n}" not in functions]
    assert not missing, f"public names without an API entry: {missing}"
    # Every option of the self-check's command line is documented (``.. option::``).
    help_text = subprocess.run(
        [sys.executable, "-m", "jaxbce.check", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text)) - {"--help"}
    # Sphinx records an option as "<program, spaces as hyphens>.<option>".
    program = "python -m jaxbce.check".replace(" ", "-") + "."
    documented = {name[len(program) :] for name in inv["std:cmdoption"] if name.startswith(program)}
    assert options, help_text
    assert options <= documented, f"undocumented: {sorted(options - documented)}"


def test_every_example_in_the_docs_runs(tmp_path: Path) -> None:
    proc = _sphinx("doctest", tmp_path)
    report = (tmp_path / "output.txt").read_text() if (tmp_path / "output.txt").exists() else ""
    assert proc.returncode == 0, report[-8000:] + proc.stdout[-4000:] + proc.stderr[-4000:]
    ran = re.search(r"^\s*(\d+) tests$", report, re.MULTILINE)
    assert ran and int(ran.group(1)) >= MIN_DOCTESTS, report[-3000:]
    assert re.search(r"^\s*0 failures in tests$", report, re.MULTILINE), report[-3000:]


# ------------------------------------------------------------------ shell commands


def _console_commands() -> list[tuple[str, str]]:
    """``(page, command)`` for every line of every ``console`` block on the pages."""
    found = []
    for page in sorted(DOCS.glob("*.rst")):
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != ".. code-block:: console":
                continue
            for body in lines[i + 1 :]:
                if body and not body.startswith(" "):
                    break
                if body.strip():
                    found.append((page.name, body.strip().split("  #")[0].strip()))
    return found


def _flags_defined(flags: list[str], sources: list[Path]) -> list[str]:
    """The ``flags`` that appear as a quoted string in none of ``sources``."""
    text = "\n".join(p.read_text() for p in sources)
    return [f for f in flags if f'"{f}"' not in text and f"'{f}'" not in text]


def test_console_commands_name_real_files_flags_and_extras() -> None:
    """The shell commands on the pages are not run here (installs, training runs, the full
    test suite, benchmarks); each names a file, module, flag or extra that exists."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = set(re.findall(r"^([\w-]+) = \[", section, re.MULTILINE))
    assert {"examples", "test", "docs"} <= extras, extras
    commands = _console_commands()
    assert len(commands) >= 10, commands
    problems = []
    for page, command in commands:
        words = shlex.split(command)
        flags = [w.split("=")[0] for w in words if w.startswith("--")]
        if words[:2] == ["pip", "install"]:
            target = words[-1]
            extra = re.fullmatch(r"(?:-e )?\.(?:\[(\w+)\])?", target)
            if not extra:
                problems.append((page, command, "not an install of this checkout"))
            elif extra.group(1) and extra.group(1) not in extras:
                problems.append((page, command, f"no extra {extra.group(1)!r}"))
        elif words[:3] == ["python", "-m", "jaxbce.check"]:
            missing = _flags_defined(flags, [ROOT / "jaxbce" / "check.py"])
            if missing:
                problems.append((page, command, f"unknown flags {missing}"))
        elif words[:2] in (["python", "-m"],):
            if importlib.util.find_spec(words[2]) is None:
                problems.append((page, command, f"no module {words[2]}"))
        elif words[0] == "python":
            script = ROOT / words[1]
            if not script.is_file():
                problems.append((page, command, "no such script"))
                continue
            sources = sorted(script.parent.rglob("*.py"))
            missing = _flags_defined(flags, sources)
            if missing:
                problems.append((page, command, f"unknown flags {missing}"))
            for w in words[2:]:
                if w.endswith(".json") and not (ROOT / w).is_file():
                    problems.append((page, command, f"no file {w}"))
        else:
            problems.append((page, command, "not a command this test knows how to check"))
    assert not problems, problems


# ------------------------------------------------------------------ the ulp plot script


def _plot_script():
    spec = importlib.util.spec_from_file_location(
        "ulp_vs_logit", DOCS / "plots" / "ulp_vs_logit.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ulp_plot_script_writes_a_png_and_never_replaces_one_unasked(tmp_path: Path) -> None:
    assert (DOCS / "ulp_vs_logit.png").is_file()  # the committed figure the page shows
    script = _plot_script()
    out = tmp_path / "ulp.png"
    small = ["--out", str(out), "--points", "1025", "--bins", "64", "--mpmath", "4"]
    assert script.main(small) == 0
    assert out.stat().st_size > 0
    before = out.read_bytes()
    assert script.main(small) == 2  # exists: refused
    assert out.read_bytes() == before
    assert script.main([*small, "--overwrite"]) == 0
    # Its error measure: exact results score 0, one ulp of 1.0 scores 1.
    import numpy as np

    one = np.array([1.0])
    assert script.ulp_error(np.array([1.0], np.float32), one)[0] == 0.0
    assert script.ulp_error(np.array([1 + 2**-23], np.float32), one)[0] == 1.0
