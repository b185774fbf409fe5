"""Smoke test of ``benchmarks/run.py``: the script runs and writes sane results where asked.

No timing is asserted: timings on a shared CI machine say nothing about correctness. The
``bench`` package and ``cpu_passes`` are imported from ``benchmarks/``, which pytest puts on
``sys.path`` (``pythonpath`` in ``pyproject.toml``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def _run_script(*args: str) -> subprocess.CompletedProcess:
    """Runs ``benchmarks/run.py`` with ``args`` and asserts that it succeeded."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def test_quick_run_writes_complete_finite_results(tmp_path: Path) -> None:
    proc = _run_script("--quick", "--sizes", "4096", "--out", str(tmp_path))
    assert "Targets" in proc.stdout

    (json_path,) = tmp_path.glob("*.json")
    (png_path,) = tmp_path.glob("*.png")
    assert json_path.stem == png_path.stem
    assert png_path.stat().st_size > 0
    result = json.loads(json_path.read_text())
    assert result["kind"] == "custom"
    assert json_path.stem == f"{result['backend']}-custom-{result['timestamp_utc'][:10]}"

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
    assert len(result["targets"]) == 8
    linear = [t for t in result["targets"] if "fused linear" in t["target"]]
    assert [t["status"] for t in linear] == ["not yet measured"]
    assert "fused_linear" not in result


def test_linear_only_run_writes_finite_fused_linear_results(tmp_path: Path) -> None:
    """The fused linear section at a tiny L: every contender compiled, run and reported."""
    proc = _run_script(
        "--linear-only", "--linear-sizes", "256", "512", "--quick", "--out", str(tmp_path)
    )
    assert "Fused linear + BCE" in proc.stdout
    (json_path,) = tmp_path.glob("*.json")
    assert not list(tmp_path.glob("*.png"))
    result = json.loads(json_path.read_text())
    assert result["kind"] == "linear-custom"
    assert json_path.stem.startswith(f"{result['backend']}-linear-custom-")
    assert result["results"] == []

    section = result["fused_linear"]
    assert section["sizes"] == [256, 512]
    rows = section["rows"]
    assert {(r["labels"], r["contender"]) for r in rows} == {
        (n, key) for n in (256, 512) for key in ("fused", "fused_sparse", "unfused")
    }
    for row in rows:
        assert "skipped" not in row, row
        for field in ("median_ms", "min_ms", "ratio_to_unfused", "compile_s", "value"):
            assert _finite(row[field]) and row[field] > 0, (row, field)
        assert row["samples_s"] and all(_finite(s) and s > 0 for s in row["samples_s"])
        assert _finite(row["memory"]["temp_size_in_bytes"]), row
        # Dense and sparse labels hold the same positives: the same loss as the unfused one.
        assert row["value_abs_diff_to_unfused"] < 1e-4, row
    by_key = {(r["labels"], r["contender"]): r for r in rows}
    assert by_key[256, "unfused"]["ratio_to_unfused"] == 1.0

    (target,) = result["targets"]
    assert target["target"] == "fused linear value_and_grad within 1.3x of unfused"
    assert target["status"] in {"pass", "fail"}
    assert _finite(target["value"])


def test_run_kinds_name_what_was_measured() -> None:
    from bench.config import RunConfig

    assert RunConfig().kind == "full"
    assert RunConfig(quick=True).kind == "quick"
    assert RunConfig(quick=True, sizes=[4096]).kind == "custom"
    assert RunConfig(classes=1024).kind == "custom"
    assert RunConfig(linear=True).kind == "full-with-linear"
    assert RunConfig(linear_only=True).kind == "linear"
    assert RunConfig(linear_only=True, quick=True).kind == "linear-quick"
    assert RunConfig(linear_only=True, linear_sizes=[256]).kind == "linear-custom"


def test_runs_write_where_git_ignores_them_unless_saved() -> None:
    from bench.results import RESULTS_DIR, RUNS_DIR, file_stem, output_dir

    assert output_dir(None, save=False) == RUNS_DIR
    assert output_dir("/tmp/x", save=False) == Path("/tmp/x")
    assert output_dir(None, save=True) == RESULTS_DIR == ROOT / "benchmarks" / "results"
    probe = RUNS_DIR / (file_stem("cpu", "quick", "2026-01-01") + ".json")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist): nothing to ask git")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"{probe} is not ignored by git"
    assert file_stem("cpu", "full", "2026-01-01") == "cpu-2026-01-01"


def test_results_are_never_replaced_outside_runs(tmp_path: Path) -> None:
    # Two runs of one kind on one day, the second with other settings, replaced the first
    # in any folder, benchmarks/results/ too (adversarial pass, 2026-11-27).
    from bench.results import check_replaceable

    check_replaceable(tmp_path, "cpu-2026-01-01", "full")  # Nothing there yet.
    (tmp_path / "cpu-2026-01-01.json").write_text(json.dumps({"kind": "full"}))
    with pytest.raises(FileExistsError, match="never replaced outside runs/bench/"):
        check_replaceable(tmp_path, "cpu-2026-01-01", "full")


def test_results_of_another_kind_are_never_replaced(tmp_path: Path, monkeypatch) -> None:
    import bench.results
    from bench.results import check_replaceable

    monkeypatch.setattr(bench.results, "RUNS_DIR", tmp_path)  # the scratch folder
    check_replaceable(tmp_path, "cpu-2026-01-01", "full")  # Nothing there yet.
    (tmp_path / "cpu-2026-01-01.json").write_text(json.dumps({"kind": "full"}))
    check_replaceable(tmp_path, "cpu-2026-01-01", "full")  # The same kind: a rerun.
    with pytest.raises(FileExistsError, match="holds a full run: a quick run"):
        check_replaceable(tmp_path, "cpu-2026-01-01", "quick")
    (tmp_path / "cpu-linear-2026-01-01.json").write_text(json.dumps({"backend": "cpu"}))
    with pytest.raises(FileExistsError, match="records no kind"):
        check_replaceable(tmp_path, "cpu-linear-2026-01-01", "linear")
    (tmp_path / "cpu-quick-2026-01-01.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match="no results JSON"):
        check_replaceable(tmp_path, "cpu-quick-2026-01-01", "quick")


def _refused(*args: str) -> subprocess.CompletedProcess:
    """Runs ``benchmarks/run.py`` with ``args``; it must refuse (exit 2) before measuring."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "jaxbce benchmark on" not in proc.stdout
    return proc


def test_script_refuses_before_running(tmp_path: Path) -> None:
    """The check comes before the measurement, so a refused run costs seconds."""
    from bench.results import file_stem, today_utc

    stem = file_stem("cpu", "quick", today_utc())
    (tmp_path / f"{stem}.json").write_text(json.dumps({"kind": "full"}))
    proc = _refused("--quick", "--out", str(tmp_path))
    assert "exists and is never replaced outside runs/bench/" in proc.stderr
    assert json.loads((tmp_path / f"{stem}.json").read_text()) == {"kind": "full"}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--out", "{file}"], "expected a folder, got a file"),
        (["--classes", "0", "--out", "{dir}"], "--classes: expected a whole number >= 1"),
    ],
)
def test_arguments_that_fail_only_after_measuring_are_refused_first(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    """An --out naming a file measured for minutes, then failed in mkdir (results lost);
    --classes 0 ended in a ZeroDivisionError."""
    (tmp_path / "file").write_text("mine")
    argv = [f.format(file=tmp_path / "file", dir=tmp_path / "dir") for f in flags]
    assert message in _refused("--quick", *argv).stderr
    assert (tmp_path / "file").read_text() == "mine"


def _refused_in_process(main, argv: list[str], capsys) -> str:
    """Calls a script's ``main(argv)``; it must exit 2 (argparse's error). Returns stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--budget", "-1"], "--budget: expected a number of seconds > 0, got -1.0"),
        (["--budget", "nan"], "--budget: expected a number of seconds > 0, got nan"),
        (["--retries", "-3"], "--retries: expected a whole number >= 0, got -3"),
        (["--max-foreign", "2"], "--max-foreign: expected a fraction in [0, 1], got 2.0"),
        (["--linear-sizes", "2^12"], "--linear-sizes: the fused linear benchmark runs only"),
        (["--summarize", "{missing}"], "cannot read a results JSON"),
        (["--summarize", "{text}"], "cannot read a results JSON"),
        (["--summarize", "{foreign}"], "not a results file of benchmarks/run.py (KeyError"),
        (["--summarize", "{rowless}"], "not a results file of benchmarks/run.py (KeyError"),
    ],
)
def test_arguments_that_mean_nothing_are_one_line_errors(
    tmp_path: Path, monkeypatch, capsys, flags: list[str], message: str
) -> None:
    """--budget -1 and --retries -3 were accepted, --linear-sizes without --linear ignored,
    and --summarize of a missing or foreign file ended in a traceback."""
    import run as script

    monkeypatch.setattr(script, "run_benchmark", lambda config: pytest.fail("measured"))
    (tmp_path / "text").write_text("not json")
    (tmp_path / "foreign").write_text(json.dumps({"kind": "full"}))
    (tmp_path / "rowless").write_text(json.dumps({"results": [{"n": 4096}]}))
    argv = [
        f.format_map({k: str(tmp_path / k) for k in ("missing", "text", "foreign", "rowless")})
        for f in flags
    ]
    err = _refused_in_process(script.main, ["--quick", "--out", str(tmp_path / "o"), *argv], capsys)
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--devices", "2", "0"], "--devices: expected whole numbers >= 1, got 0"),
        (["--local-batch", "0"], "--local-batch: expected whole numbers >= 1, got 0"),
        (["--dim", "0"], "--dim: expected whole numbers >= 1, got 0"),
        (["--repeats", "-2"], "--repeats: expected whole numbers >= 0, got -2"),
        (["--out", "{file}"], "expected a folder, got a file"),
    ],
)
def test_pairwise_refuses_arguments_that_mean_nothing(
    tmp_path: Path, monkeypatch, capsys, flags: list[str], message: str
) -> None:
    """--devices 0 and --local-batch 0 ended in a JAX traceback from the child process;
    --repeats -2 was accepted."""
    import pairwise as script

    monkeypatch.setattr(script, "run_child", lambda *args: pytest.fail("measured"))
    (tmp_path / "file").write_text("mine")
    argv = [f.format(file=tmp_path / "file") for f in flags]
    assert message in _refused_in_process(script.main, argv, capsys)
    assert (tmp_path / "file").read_text() == "mine"


PAIRWISE = ROOT / "benchmarks" / "pairwise.py"


def _run_pairwise(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PAIRWISE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def test_pairwise_writes_both_contenders_where_asked(tmp_path: Path) -> None:
    """``benchmarks/pairwise.py`` at a toy size on 2 devices: both contenders' memory, times
    and loss in the JSON; the ring moves candidates by collective-permute and never gathers,
    the dense one gathers; nothing is written into ``benchmarks/results/``."""
    results = ROOT / "benchmarks" / "results"
    before = sorted(results.iterdir())
    flags = "--devices 2 --local-batch 16 --dim 8 --repeats 2".split()
    proc = _run_pairwise(*flags, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (path,) = tmp_path.glob("cpu-pairwise-*.json")
    result = json.loads(path.read_text())
    assert result["kind"] == "pairwise" and result["config"]["local_batch"] == 16
    (run,) = result["runs"]
    assert run["devices"] == 2 and run["global_batch"] == 32
    assert run["ring"]["collective_permute"] and not run["ring"]["all_gather"]
    assert run["dense"]["all_gather"]
    for name in ("ring", "dense"):
        assert run[name]["temp_bytes"] > 0 and len(run[name]["times_s"]) == 2
        assert all(_finite(t) for t in run[name]["times_s"])
    assert run["ring"]["loss"] == pytest.approx(run["dense"]["loss"], rel=1e-5)
    assert len(run["ratio_ring_over_dense"]) == 2
    targets = {"ring_memory_flat", "ring_memory_bound", "ring_never_gathers", "ring_speed"}
    assert set(result["targets"]) == targets
    assert result["targets"]["ring_never_gathers"]["met"]
    assert "target ring_memory_bound" in proc.stdout
    assert sorted(results.iterdir()) == before


def test_pairwise_refuses_before_running(tmp_path: Path) -> None:
    from bench.results import file_stem, today_utc

    stem = file_stem("cpu", "pairwise", today_utc())
    (tmp_path / f"{stem}.json").write_text(json.dumps({"kind": "full"}))
    proc = _run_pairwise("--devices", "2", "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "exists and is never replaced outside runs/bench/" in proc.stderr
    assert "devices done" not in proc.stderr
    assert json.loads((tmp_path / f"{stem}.json").read_text()) == {"kind": "full"}


def test_linear_section_reports_what_it_cannot_run(monkeypatch) -> None:
    """Too large for RAM, or failing to compile: the row says so and the target waits."""
    import types

    from bench import linear, report, targets
    from bench.timing import Schedule

    import jaxbce

    schedule = Schedule(budget_s=0.1, min_rounds=1, max_rounds=2, min_sample_s=1e-3)

    def broken_bce(*args, **kwargs):
        raise OverflowError("too many elements")

    lib = types.SimpleNamespace(
        linear_sigmoid_binary_cross_entropy=jaxbce.linear_sigmoid_binary_cross_entropy,
        sigmoid_binary_cross_entropy=broken_bce,
    )
    section = linear.run_linear(lib, schedule, [256])
    rows = {r["contender"]: r for r in section["rows"]}
    assert "does not compile" in rows["unfused"]["skipped"]
    assert _finite(rows["fused"]["median_ms"]) and "ratio_to_unfused" not in rows["fused"]
    assert targets.linear_target(section)["status"] == "not yet measured"

    monkeypatch.setattr(linear, "LINEAR_MAX_RAM_FRACTION", 0.0)
    section = linear.run_linear(jaxbce, schedule, [256])
    assert all("temporaries" in r["skipped"] for r in section["rows"])
    assert targets.linear_target(section)["status"] == "not yet measured"
    assert "not run" in report.format_linear_table(section)
    assert "not run" in report.linear_markdown(section)


def test_cpu_passes_times_the_shipped_computation(capsys) -> None:
    """The diagnostic's loss is jaxbce's mean loss, and it runs end to end."""
    import cpu_passes as passes
    import jax.numpy as jnp
    import numpy as np

    import jaxbce

    rng = np.random.default_rng(1)
    z = jnp.asarray(3.0 * rng.standard_normal((4, 300)), jnp.float32)
    y = jnp.asarray(rng.random((4, 300)) < 0.3, jnp.float32)
    value = passes.mean_loss(z, y)
    assert float(jaxbce.sigmoid_binary_cross_entropy(z, y, reduction="mean")) == float(value)

    assert passes.main(["--log2n", "12", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "jaxbce value_and_grad" in out
    assert "gradient pass: fresh output" in out
    assert "two-pass floor (the two floors added)" in out
    assert "optax / 3:" in out


def test_cpu_passes_never_replaces_a_file(tmp_path: Path, capsys) -> None:
    import cpu_passes as passes

    existing = tmp_path / "passes.txt"
    existing.write_text("kept")
    with pytest.raises(SystemExit):
        passes.main(["--log2n", "12", "--rounds", "1", "--out", str(existing)])
    assert "it is never replaced" in capsys.readouterr().err
    assert existing.read_text() == "kept"
    new = tmp_path / "new.txt"
    assert passes.main(["--log2n", "12", "--rounds", "1", "--out", str(new)]) == 0
    assert new.read_text().startswith("N = 2^12, 1 rounds")


@pytest.mark.parametrize(
    "script_name",
    ["unaligned_sizes", "inner_dims", "vectorized_loops", "eager_odd_sizes", "runtime_scalars"],
)
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--out", "{file}"], "exists or its folder does not; it is never replaced"),
        (["--out", "{missing}/table.txt"], "exists or its folder does not"),
    ],
)
def test_table_benchmarks_refuse_before_measuring(
    tmp_path: Path, capsys, script_name: str, flags: list[str], message: str
) -> None:
    """The stand-alone table benchmarks never replace a file (a committed result)."""
    import importlib

    script = importlib.import_module(script_name)
    (tmp_path / "file").write_text("mine")
    argv = [f.format(file=tmp_path / "file", missing=tmp_path / "missing") for f in flags]
    assert message in _refused_in_process(script.main, argv, capsys)
    assert (tmp_path / "file").read_text() == "mine"


def test_a_commit_named_by_the_environment_is_recorded(monkeypatch):
    # On the device machine the copy of the tree carries the session's first commit in its
    # git data: both GPU runs of 2026-11-27 recorded e6b9ac0 (their source digests are
    # 8b1cf69's and 2942cd3's). tools/device_checks.sh names the commit instead.
    from bench.machine import git_state

    monkeypatch.delenv("JAXBCE_COMMIT", raising=False)
    assert git_state() != "abc1234"
    monkeypatch.setenv("JAXBCE_COMMIT", "abc1234")
    assert git_state() == "abc1234"
