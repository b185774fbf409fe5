"""The pairwise sigmoid loss's ring across two processes (``jax.distributed``, gloo on CPU).

Starts two processes of 4 CPU devices each on this machine; they form one mesh of 8 devices
and run ``jit(value_and_grad(shard_map(pairwise_sigmoid_loss(..., axis_name="x"))))`` with
``pair_ids``, ``where`` and blocks of 2, so that the ring's ``ppermute`` crosses the process
boundary twice per step. Each process compares the value and the gathered gradients with the
float64 reference of tests/test_pairwise.py and prints its largest relative errors; the
exit status is non-zero unless both are within 1e-12.

    python tools/pairwise_multihost.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(process_id: int, port: int) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_x64", True)
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxbce

    sys.path.insert(0, str(ROOT / "tests"))
    from test_pairwise import problem, reference

    a, b, ids, where = problem(batch=24)
    mesh = Mesh(np.array(jax.devices()), ("x",))
    rows = NamedSharding(mesh, P("x"))

    def global_array(x: np.ndarray) -> jax.Array:
        return jax.make_array_from_callback(x.shape, rows, lambda index: x[index])

    def loss(a, b, scale, bias, ids, where):
        return jaxbce.pairwise_sigmoid_loss(
            a, b, scale=scale, bias=bias, pair_ids=ids, where=where, axis_name="x", block_size=2
        )

    specs = (P("x"), P("x"), P(), P(), P("x"), P("x"))
    sm = jax.shard_map(loss, mesh=mesh, in_specs=specs, out_specs=P())
    vg = jax.jit(jax.value_and_grad(sm, argnums=(0, 1, 2, 3)))
    value, grads = vg(global_array(a), global_array(b), 2.5, -3.0, *map(global_array, (ids, where)))
    grads = [multihost_utils.process_allgather(g, tiled=True) for g in grads]
    want_value, want_grads = reference(a, b, 2.5, -3.0, ids, where, "mean", 1.0)
    errors = [float(abs(value - want_value) / abs(want_value))]
    for got, want in zip(grads, want_grads, strict=True):
        errors.append(float(np.max(np.abs(got - want)) / np.max(np.abs(want))))
    print(
        f"process {process_id} of 2, {jax.device_count()} devices: relative errors of the "
        f"value and of the a, b, scale, bias gradients: {errors}"
    )
    sys.exit(0 if max(errors) <= 1e-12 else 1)


def main() -> None:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [
        subprocess.Popen([sys.executable, __file__, str(k), str(port)], env=env) for k in (0, 1)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    print("ok" if codes == [0, 0] else f"FAILED: exit codes {codes}")
    sys.exit(0 if codes == [0, 0] else 1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and all(a.isdigit() for a in sys.argv[1:]):  # a worker it started
        worker(int(sys.argv[1]), int(sys.argv[2]))
    elif len(sys.argv) > 1:  # it takes no arguments: --help printed this and ran nothing
        print(__doc__.strip())
        sys.exit(0 if sys.argv[1:] in (["-h"], ["--help"]) else 2)
    else:
        main()
