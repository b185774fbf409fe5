"""Ring vs all-gathered (big_vision-style) pairwise sigmoid loss on simulated CPU devices.

One question: what does streaming the candidates round a ring of ``lax.ppermute`` steps
(``jaxbce.pairwise_sigmoid_loss(..., axis_name=...)``) cost in time, and save in memory,
against gathering every candidate on every device and forming the (Bl, B) logits whole?
Both use jaxbce's kernel for the per-pair term, so only the schedule differs.

    python benchmarks/pairwise.py [--devices 2 4 8] [--local-batch 1024] [--dim 256]
                                  [--repeats 7] [--out DIR | --save]

Each device count runs in a process of its own (``XLA_FLAGS`` counts only before JAX
starts). For each, the per-device temporaries of the compiled ``jit(value_and_grad)`` from
``compiled.memory_analysis()``, and its time: calls interleaved round by round (ring, then
dense), each round's ratio ring / dense, medians over rounds, and the CPU time other
processes took meanwhile (the cores may be shared). ``--repeats 0`` reports the memory only
(compilation, no run).

Targets (issue 12): the ring's temporaries do not grow with the device count (within 10%)
and stay under 4 (Bl, Bl) float32 blocks plus 4 (Bl, d) buffers; the ring takes at most 1.3
times the dense version's time.

Writes ``cpu-pairwise-<date>.json`` into ``runs/bench/`` (ignored by git), into ``--out
DIR``, or with ``--save`` into ``benchmarks/results/`` (committed results: only ``--save``
writes there, and never over a file of another kind of run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KIND = "pairwise"
MEMORY_FLAT = 1.10  # largest / smallest ring temporaries over the device counts
MEMORY_BLOCKS, MEMORY_ROWS = 4, 4  # bound: (Bl, Bl) float32 blocks + (Bl, d) buffers
SPEED_RATIO = 1.3  # ring time / dense time


def measure(devices: int, local_batch: int, dim: int, repeats: int) -> dict[str, Any]:
    """Compiles, times and measures both contenders on ``devices`` simulated CPU devices.

    Must run in a process whose JAX has not started: it sets ``XLA_FLAGS`` first.

    Returns:
      A JSON-ready dict: per contender the temporaries and the times of every round, and
      the per-round ratios ring / dense.
    """
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    import jax
    import jax.numpy as jnp
    import numpy as np
    from bench.machine import ForeignCpu, machine_info
    from jax import lax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxbce

    def ring(a, b, scale, bias):
        return jaxbce.pairwise_sigmoid_loss(a, b, scale=scale, bias=bias, axis_name="x")

    def dense(a, b, scale, bias):
        b_all = lax.all_gather(b, "x", tiled=True)
        n = a.shape[0]
        rows = lax.axis_index("x") * n + jnp.arange(n)
        labels = rows[:, None] == jnp.arange(b_all.shape[0])[None, :]
        z = scale * jnp.matmul(a, b_all.T) + bias
        loss = jaxbce.sigmoid_binary_cross_entropy(z, labels, reduction="sum")
        return lax.psum(loss, "x") / (n * lax.axis_size("x"))

    mesh = Mesh(np.array(jax.devices()), ("x",))
    n = devices * local_batch
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2, n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    shard = NamedSharding(mesh, P("x"))
    a, b = (jax.device_put(e, shard) for e in emb)
    scale, bias = jnp.float32(10.0), jnp.float32(-10.0)

    compiled, result = {}, {}
    for name, fn in {"ring": ring, "dense": dense}.items():
        vg = jax.value_and_grad(fn, argnums=(0, 1, 2, 3))
        sm = jax.shard_map(
            vg,
            mesh=mesh,
            in_specs=(P("x"), P("x"), P(), P()),
            out_specs=(P(), (P("x"), P("x"), P(), P())),
        )
        started = time.perf_counter()
        compiled[name] = jax.jit(sm).lower(a, b, scale, bias).compile()
        text = compiled[name].as_text()
        result[name] = {
            "compile_s": time.perf_counter() - started,
            "temp_bytes": int(compiled[name].memory_analysis().temp_size_in_bytes),
            "all_gather": "all-gather" in text,
            "collective_permute": "collective-permute" in text,
            "times_s": [],
        }
        if repeats:  # warm-up, and the value for the record
            loss = jax.block_until_ready(compiled[name](a, b, scale, bias))[0]
            result[name]["loss"] = float(loss)

    foreign = ForeignCpu()
    for _ in range(repeats):
        for name, fn in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(a, b, scale, bias))
            result[name]["times_s"].append(time.perf_counter() - t0)
    ratios = [
        r / d for r, d in zip(result["ring"]["times_s"], result["dense"]["times_s"], strict=True)
    ]
    for name in compiled:
        times = result[name]["times_s"]
        result[name]["median_s"] = float(np.median(times)) if times else None
    return {
        "devices": devices,
        "global_batch": n,
        **result,
        "ratio_ring_over_dense": ratios,
        "median_ratio": float(np.median(ratios)) if ratios else None,
        "foreign_cpu_fraction": foreign.fraction() if repeats else None,
        "machine": machine_info(jax.default_backend()),
    }


def run_child(devices: int, args: argparse.Namespace) -> dict[str, Any]:
    """Runs :func:`measure` for ``devices`` in a fresh Python process and returns its dict."""
    command = [
        sys.executable,
        __file__,
        "--child",
        str(devices),
        "--local-batch",
        str(args.local_batch),
        "--dim",
        str(args.dim),
        "--repeats",
        str(args.repeats),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{devices} devices failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def check_targets(runs: list[dict[str, Any]], local_batch: int, dim: int) -> dict[str, Any]:
    """The issue's memory and speed targets, evaluated on the measured runs."""
    block, row = local_batch * local_batch * 4, local_batch * dim * 4
    temps = [r["ring"]["temp_bytes"] for r in runs]
    bound = MEMORY_BLOCKS * block + MEMORY_ROWS * row
    targets: dict[str, Any] = {
        "ring_memory_flat": {
            "largest_over_smallest": max(temps) / min(temps),
            "limit": MEMORY_FLAT,
            "met": max(temps) <= MEMORY_FLAT * min(temps),
        },
        "ring_memory_bound": {
            "largest_bytes": max(temps),
            "bound_bytes": bound,
            "bound": f"{MEMORY_BLOCKS} (Bl, Bl) float32 blocks + {MEMORY_ROWS} (Bl, d) buffers",
            "met": max(temps) <= bound,
        },
        "ring_never_gathers": {"met": not any(r["ring"]["all_gather"] for r in runs)},
    }
    ratios = {r["devices"]: r["median_ratio"] for r in runs if r["median_ratio"] is not None}
    if ratios:
        targets["ring_speed"] = {
            "median_ratio_by_devices": ratios,
            "limit": SPEED_RATIO,
            "met": all(v <= SPEED_RATIO for v in ratios.values()),
        }
    return targets


def report(result: dict[str, Any]) -> str:
    """The measured table and the targets as text."""
    bl, dim = result["config"]["local_batch"], result["config"]["dim"]
    block, row = bl * bl * 4, bl * dim * 4
    lines = [
        f"local batch {bl}, dim {dim}, float32, jit(value_and_grad); times: medians over "
        f"{result['config']['repeats']} interleaved rounds",
        f"{'devices':>7} {'contender':<9} {'time (ms)':>10} {'ring/dense':>10} "
        f"{'temp (MiB)':>10} {'(Bl,Bl) blocks':>14} {'(Bl,d) rows':>11} {'other CPU':>9}",
    ]
    for r in result["runs"]:
        for name in ("ring", "dense"):
            c = r[name]
            ms = f"{1e3 * c['median_s']:.1f}" if c["median_s"] is not None else "-"
            ratio = f"{r['median_ratio']:.2f}" if name == "ring" and r["median_ratio"] else ""
            other = r["foreign_cpu_fraction"]
            other = f"{other:.0%}" if name == "ring" and other is not None else ""
            lines.append(
                f"{r['devices']:>7} {name:<9} {ms:>10} {ratio:>10} "
                f"{c['temp_bytes'] / 2**20:>10.2f} {c['temp_bytes'] / block:>14.2f} "
                f"{c['temp_bytes'] / row:>11.1f} {other:>9}"
            )
    for name, target in result["targets"].items():
        lines.append(f"target {name}: {'met' if target['met'] else 'NOT met'} {target}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--local-batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (0: memory only)")
    parser.add_argument("--out", help="output folder (default: runs/bench/)")
    parser.add_argument(
        "--save", action="store_true", help="write into benchmarks/results/ (to commit)"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for flag, values, least in (
        ("--devices", args.devices, 1),
        ("--local-batch", [args.local_batch], 1),
        ("--dim", [args.dim], 1),
        ("--repeats", [args.repeats], 0),
    ):
        if min(values) < least:  # before a child process fails in JAX, or times nothing
            parser.error(f"{flag}: expected whole numbers >= {least}, got {min(values)}")
    if args.child is not None:
        result = measure(args.child, args.local_batch, args.dim, args.repeats)
        print("RESULT " + json.dumps(result))
        return
    if args.save and args.out:
        parser.error("--save writes into benchmarks/results/; give --out or --save, not both")

    from bench.machine import git_state
    from bench.results import check_replaceable, file_stem, output_dir, today_utc

    date = today_utc()
    out = output_dir(args.out, args.save)
    stem = file_stem("cpu", KIND, date)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {str(out)!r}: expected a folder, got a file")
    try:  # before measuring: refuse at once, not after minutes
        check_replaceable(out, stem, KIND)
    except FileExistsError as e:
        parser.error(str(e))
    runs = []
    for devices in args.devices:
        runs.append(run_child(devices, args))
        print(f"{devices} devices done", file=sys.stderr)
    result = {
        "kind": KIND,
        "backend": "cpu",
        "timestamp_utc": date,
        "command": "python benchmarks/pairwise.py " + " ".join(sys.argv[1:]),
        "config": {"local_batch": args.local_batch, "dim": args.dim, "repeats": args.repeats},
        "git": git_state(),
        # The machine, less the device count, which each run records as "devices".
        "machine": {k: v for k, v in runs[0]["machine"].items() if k != "device_count"},
        "runs": [{k: v for k, v in r.items() if k != "machine"} for r in runs],
        "targets": check_targets(runs, args.local_batch, args.dim),
    }
    text = report(result)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    path = Path(out) / f"{stem}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
