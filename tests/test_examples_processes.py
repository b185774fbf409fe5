"""End-to-end tests of the training examples as separate processes: eight simulated devices
(``XLA_FLAGS`` counts only before JAX starts) and two processes with ``--multi-host``
against one device, and runs interrupted (killed with SIGKILL, or stopped) that resume
exactly. The in-process runs and the helpers are tests/test_examples.py's."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_examples import ENV, EXAMPLES, ROOT, history, params

sys.path.insert(0, str(EXAMPLES))

import binary_classifier
import contrastive_pairs

# --------------------------------------------------------------------------------------------
# Subprocesses: eight devices, two hosts, and a killed run
# --------------------------------------------------------------------------------------------


#: The flags of the multi-device runs, and the single-device runs they are compared with:
#: each runs once (:func:`one_device`), for the 8-device and the two-process test alike.
#: The multi-label example shards its batch with the same code (``common/sharding.py``) as
#: the binary one; the library's masked reductions under ``shard_map`` are
#: tests/test_sharded.py's.
DEVICE_RUNS = {
    binary_classifier: ["--steps", "20", "--eval-every", "5", "--checkpoint-every", "20"],
    # The pairwise loss round a ring of devices (8: local batch 32) against one device.
    contrastive_pairs: [
        *("--steps", "20", "--eval-every", "5", "--checkpoint-every", "20"),
        *("--pair-ids", "class"),
    ],
}


@pytest.fixture(scope="module")
def one_device(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``one_device(module)``: the output folder of ``module``'s run with
    ``DEVICE_RUNS[module]`` on one device, run on first use and shared."""
    root, done = tmp_path_factory.mktemp("one_device"), {}

    def get(module: Any) -> Path:
        if module not in done:
            module.main([*DEVICE_RUNS[module], "--out", str(root / module.__name__)])
            done[module] = root / module.__name__
        return done[module]

    return get


@pytest.mark.xdist_group("devices")
def test_eight_devices_match_one_device(tmp_path: Path, one_device: Any) -> None:
    """The batch sharded over 8 simulated CPU devices gives the single-device losses and
    params: the contrastive example, whose batch is sharded with the binary one's code and
    whose pairwise loss goes round the ring (the binary one: the two-process test)."""
    runs = {contrastive_pairs: DEVICE_RUNS[contrastive_pairs]}
    # A fresh process: XLA_FLAGS only counts before JAX starts.
    driver = f"import sys; sys.path.insert(0, {str(EXAMPLES)!r}); "
    driver += f"import {', '.join(m.__name__ for m in runs)}; "
    # ... and the arrays really are spread: a batch in 8 slices, parameters copied to all 8.
    driver += (
        "from common import sharding; import numpy as np; mesh = sharding.make_mesh(False); "
        "b = sharding.shard_batch(mesh, {'x': np.zeros((16, 3))})['x']; "
        "assert sorted(s.data.shape for s in b.addressable_shards) == [(2, 3)] * 8; "
        "r = sharding.put_replicated(mesh, np.zeros((4, 3))); "
        "assert sorted(s.data.shape for s in r.addressable_shards) == [(4, 3)] * 8; "
    )
    driver += "; ".join(
        f"{m.__name__}.main({[*argv, '--out', str(tmp_path / 'eight' / m.__name__)]!r})"
        for m, argv in runs.items()
    )
    done = subprocess.run(
        [sys.executable, "-c", driver],
        cwd=ROOT,
        env={**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for module in runs:
        one, eight = one_device(module), tmp_path / "eight" / module.__name__
        assert json.loads((eight / "metrics.json").read_text())["devices"] == 8
        rows_one, rows_eight = history(one), history(eight)
        assert len(rows_one) == len(rows_eight) == 4
        for a, b in zip(rows_one, rows_eight, strict=True):
            for key in a:
                if "loss" in key:
                    np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=key)
        p_one, p_eight = params(one), params(eight)
        for key in p_one:
            np.testing.assert_allclose(p_eight[key], p_one[key], rtol=1e-5, atol=1e-6, err_msg=key)
        if module is contrastive_pairs:
            m_one, m_eight = (json.loads((o / "metrics.json").read_text()) for o in (one, eight))
            for key in ("temperature", "bias", *(k for k in m_one if k.startswith("test_"))):
                np.testing.assert_allclose(m_eight[key], m_one[key], rtol=1e-5, err_msg=key)


@pytest.mark.xdist_group("devices")
def test_multi_host_two_processes_match_one(tmp_path: Path, one_device: Any) -> None:
    """--multi-host with two CPU processes (two devices each) trains like one process: the
    binary classifier, and the contrastive example, whose pairwise loss goes round a ring of
    four devices in two processes.

    A cluster launcher would tell ``jax.distributed.initialize()`` where the coordinator is;
    here the driver passes it (once per process), and Gloo does the cross-process
    collectives.
    """
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    runs = {m: DEVICE_RUNS[m] for m in (binary_classifier, contrastive_pairs)}
    driver = "\n".join(
        [
            "import sys, jax",
            "init, started = jax.distributed.initialize, []",
            "def initialize():",
            "    if not started:",
            f"        init('localhost:{port}', 2, int(sys.argv[1]))",
            "        started.append(True)",
            "jax.distributed.initialize = initialize",
            "jax.config.update('jax_cpu_collectives_implementation', 'gloo')",
            f"sys.path.insert(0, {str(EXAMPLES)!r})",
            *(
                f"import {m.__name__}; {m.__name__}.main("
                f"{[*flags, '--multi-host', '--out', str(tmp_path / 'two' / m.__name__)]!r})"
                for m, flags in runs.items()
            ),
        ]
    )
    env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", driver, str(i)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for process in processes:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out[-3000:]
    for module in runs:
        one, two = one_device(module), tmp_path / "two" / module.__name__
        assert json.loads((two / "metrics.json").read_text())["devices"] == 4
        for a, b in zip(history(one), history(two), strict=True):
            np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5)
        p_one, p_two = params(one), params(two)
        for key in p_one:
            np.testing.assert_allclose(p_two[key], p_one[key], rtol=1e-5, atol=1e-6, err_msg=key)


# Runs binary_classifier.main(FLAGS --out OUT) and, after step 50, once the checkpoint saved at
# step 40 is on disk (Orbax renames a finished checkpoint into place), kills the process with
# SIGKILL: no clean-up, no further files, as a crash or a pre-empted machine would end it.
CRASH_AT_STEP_50 = """
import os, signal, sys, time
from pathlib import Path

sys.path.insert(0, {examples!r})
import binary_classifier

out = Path(sys.argv[1])


def crash(done):
    if done == 50:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "40").is_dir() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)


binary_classifier.main([*sys.argv[2:], "--out", str(out)], after_step=crash)
"""


def test_killed_run_resumes_exactly_and_survives_a_corrupt_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--steps", "60", "--eval-every", "10", "--checkpoint-every", "20"]
    whole = tmp_path / "whole"
    binary_classifier.main([*flags, "--out", str(whole)])

    killed = tmp_path / "killed"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASH_AT_STEP_50.format(examples=str(EXAMPLES)),
            str(killed),
            *flags,
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["20", "40"]
    assert not (killed / "metrics.json").exists()
    assert [row["step"] for row in history(killed)] == [10, 20, 30, 40, 50]

    corrupt = tmp_path / "corrupt"
    shutil.copytree(killed, corrupt)
    for path in (corrupt / "checkpoints" / "40" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")

    capsys.readouterr()
    binary_classifier.main([*flags, "--out", str(killed)])
    assert "resuming from checkpoint at step 40" in capsys.readouterr().err
    binary_classifier.main([*flags, "--out", str(corrupt)])
    err = capsys.readouterr().err
    assert "checkpoint" in err and "40 is unreadable" in err, err
    assert "resuming from checkpoint at step 20" in err, err
    assert (corrupt / "checkpoints" / "40.corrupt").is_dir()  # kept, not deleted

    expected = params(whole)
    for out in (killed, corrupt):
        got = params(out)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{out.name} {key}")
        assert history(out) == history(whole)
        assert (out / "metrics.json").exists()


def test_contrastive_interrupted_run_resumes_exactly(tmp_path: Path) -> None:
    """A run stopped after step 15 resumes from its step-10 checkpoint (the learned scalars
    ``log_scale`` and ``bias`` included) and ends bit for bit as an uninterrupted one."""
    flags = ["--steps", "20", "--eval-every", "5", "--checkpoint-every", "10"]
    contrastive_pairs.main([*flags, "--out", str(tmp_path / "whole")])

    class Stop(Exception):
        pass

    def stop(done: int) -> None:
        if done == 15:
            raise Stop

    with pytest.raises(Stop):
        contrastive_pairs.main([*flags, "--out", str(tmp_path / "cut")], after_step=stop)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["10"]
    contrastive_pairs.main([*flags, "--out", str(tmp_path / "cut")])

    whole, cut = params(tmp_path / "whole"), params(tmp_path / "cut")
    assert {"log_scale", "bias"} <= set(whole)
    for key in whole:
        np.testing.assert_array_equal(cut[key], whole[key], err_msg=key)
    assert history(tmp_path / "cut") == history(tmp_path / "whole")
