"""Ring vs all-gathered (big_vision-style) pairwise sigmoid loss on simulated CPU devices.

One question: what does streaming the candidates round a ring of ``lax.ppermute`` steps
(``jaxbce.pairwise_sigmoid_loss(..., axis_name=...)``) cost in time, and save in memory,
against gathering every candidate on every device and forming the (Bl, B) logits whole?
Both use jaxbce's kernel for the per-pair term, so only the schedule differs.

    python benchmarks/pairwise.py [--devices 8] [--local-batch 256] [--dim 256] [--repeats 7]

``--repeats 0`` reports the memory only (compilation, no run).

Prints, per contender, the median time of ``jit(value_and_grad)`` (calls interleaved,
ring then dense, so that both see the same machine load) and the per-device temporaries
from ``compiled.memory_analysis()``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--local-batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

    import jax
    import jax.numpy as jnp
    import numpy as np
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
    n = args.devices * args.local_batch
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2, n, args.dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    shard = NamedSharding(mesh, P("x"))
    a, b = (jax.device_put(e, shard) for e in emb)
    scale, bias = jnp.float32(10.0), jnp.float32(-10.0)

    compiled, values = {}, {}
    for name, fn in {"ring": ring, "dense (all_gather)": dense}.items():
        vg = jax.value_and_grad(fn, argnums=(0, 1, 2, 3))
        sm = jax.shard_map(
            vg,
            mesh=mesh,
            in_specs=(P("x"), P("x"), P(), P()),
            out_specs=(P(), (P("x"), P("x"), P(), P())),
        )
        compiled[name] = jax.jit(sm).lower(a, b, scale, bias).compile()
        if args.repeats:
            values[name] = jax.block_until_ready(compiled[name](a, b, scale, bias))

    times: dict[str, list[float]] = {name: [] for name in compiled}
    for _ in range(args.repeats):
        for name, fn in compiled.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(a, b, scale, bias))
            times[name].append(time.perf_counter() - t0)

    bl = args.local_batch
    block = bl * bl * 4
    print(
        f"{args.devices} CPU devices, local batch {bl}, global {n}, dim {args.dim}, "
        f"float32, jit(value_and_grad), median of {args.repeats} interleaved calls"
    )
    head = ("contender", "time (ms)", "/ dense", "temp (MiB)", "(Bl,Bl) blocks")
    print(f"{head[0]:<20} {head[1]:>10} {head[2]:>8} {head[3]:>11} {head[4]:>15}")
    dense_t = float(np.median(times["dense (all_gather)"] or [np.nan]))
    for name, fn in compiled.items():
        t = float(np.median(times[name] or [np.nan]))
        temp = fn.memory_analysis().temp_size_in_bytes
        row = f"{1e3 * t:>10.1f} {t / dense_t:>8.2f} {temp / 2**20:>11.2f} {temp / block:>15.2f}"
        print(f"{name:<20} {row}")
    if values:
        v_ring, v_dense = (float(values[k][0]) for k in compiled)
        print(f"value: ring {v_ring:.7g}, dense {v_dense:.7g}", file=sys.stderr)


if __name__ == "__main__":
    main()
