"""Smoke test of an installed jaxbce: every public function, eagerly, jitted and differentiated.

Run as a script (``python tests/smoke.py``) against whatever jaxbce the interpreter imports;
``tests/test_packaging.py`` runs it in a fresh virtual environment with the oldest supported
jax. It needs only jaxbce's own dependencies (no pytest, no optax), and compares with numpy
float64 formulas at a loose tolerance: it checks that the code runs on this jax version and
gives sensible numbers, not the last ulp (``python -m jaxbce.check`` does that). Two
simulated CPU devices let it run the ``shard_map`` ring.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
)

import jax  # after XLA_FLAGS: it counts only before jax starts
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxbce

RTOL = 1e-5


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _close(name: str, got: object, want: object) -> None:
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL, atol=1e-6)
    print(f"ok  {name}")


def _shard_map(f: object, mesh: Mesh, in_specs: object, out_specs: object) -> object:
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    from jax.experimental.shard_map import shard_map

    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def main() -> None:
    print(f"jaxbce {jaxbce.__version__}, jax {jax.__version__}, {jax.device_count()} devices")
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(8, 5)) * 4).astype(np.float32)
    y = (rng.uniform(size=(8, 5)) > 0.5).astype(np.float32)
    z64, y64 = z.astype(np.float64), y.astype(np.float64)
    bce = y64 * _softplus(-z64) + (1 - y64) * _softplus(z64)

    _close("sigmoid_binary_cross_entropy", jaxbce.sigmoid_binary_cross_entropy(z, y), bce)
    loss, grad = jax.jit(
        jax.value_and_grad(
            lambda x: jaxbce.sigmoid_binary_cross_entropy(x, y > 0.5, reduction="mean")
        )
    )(z)
    _close("  jit(value_and_grad), mean, bool labels", loss, bce.mean())
    _close("  gradient", grad, (_sigmoid(z64) - y64) / z.size)
    hess = jax.hessian(lambda x: jaxbce.sigmoid_binary_cross_entropy(x[0], y[0, 0]))(z[0, :1])
    s = _sigmoid(z64[0, 0])
    _close("  hessian (forward over reverse)", hess, [[s * (1 - s)]])

    p = _sigmoid(z64).astype(np.float32)
    p64 = p.astype(np.float64)
    bce_p = -(y64 * np.log(p64) + (1 - y64) * np.log1p(-p64))
    _close("binary_cross_entropy", jaxbce.binary_cross_entropy(p, y), bce_p)

    pt = y64 * _sigmoid(z64) + (1 - y64) * (1 - _sigmoid(z64))
    alpha_t = 0.25 * y64 + 0.75 * (1 - y64)
    focal = alpha_t * (1 - pt) ** 2 * bce
    _close("sigmoid_focal_loss", jaxbce.sigmoid_focal_loss(z, y), focal)

    h = rng.normal(size=(8, 3)).astype(np.float32)
    w = rng.normal(size=(3, 5)).astype(np.float32)
    zl = h.astype(np.float64) @ w.astype(np.float64)
    bce_l = y64 * _softplus(-zl) + (1 - y64) * _softplus(zl)
    lin = jax.jit(
        jax.value_and_grad(
            lambda h, w: jaxbce.linear_sigmoid_binary_cross_entropy(h, w, y, chunk_size=2),
            argnums=(0, 1),
        )
    )
    value, (dh, dw) = lin(h, w)
    _close("linear_sigmoid_binary_cross_entropy (3 chunks)", value, bce_l.mean())
    dz = (_sigmoid(zl) - y64) / y.size
    _close("  features gradient", dh, dz @ w.astype(np.float64).T)
    _close("  kernel gradient", dw, h.astype(np.float64).T @ dz)
    sparse = jnp.array([[0, -1], [2, 4], [1, -1], [-1, -1], [3, 0], [4, -1], [2, 2], [0, 1]])
    dense = np.zeros((8, 5))
    for row, cols in enumerate(np.asarray(sparse)):
        dense[row, cols[cols >= 0]] = 1.0
    want = (dense * _softplus(-zl) + (1 - dense) * _softplus(zl)).sum()
    got = jaxbce.linear_sigmoid_binary_cross_entropy(h, w, sparse, reduction="sum")
    _close("  sparse labels", got, want)

    a = rng.normal(size=(4, 3)).astype(np.float32)
    b = rng.normal(size=(4, 3)).astype(np.float32)
    logits = 2.0 * a.astype(np.float64) @ b.astype(np.float64).T - 1.0
    sign = 2.0 * np.eye(4) - 1.0
    pairwise = _softplus(-sign * logits).sum(axis=1)
    for block in (None, 3):
        got = jaxbce.pairwise_sigmoid_loss(
            a, b, scale=2.0, bias=-1.0, reduction="none", block_size=block
        )
        _close(f"pairwise_sigmoid_loss, block_size={block}", got, pairwise)
    ring = jax.jit(
        _shard_map(
            lambda a, b: jaxbce.pairwise_sigmoid_loss(
                a, b, scale=2.0, bias=-1.0, reduction="sum", axis_name="d"
            ),
            Mesh(np.array(jax.devices()[:2]), ("d",)),
            (PartitionSpec("d"), PartitionSpec("d")),
            PartitionSpec(),
        )
    )
    _close("  shard_map ring over 2 devices", ring(a, b), pairwise.sum())

    # JAX's explicit sharding: the batch's split over devices is part of its type. The CPU
    # sum reshaped the loss into blocks across that split, a ShardingTypeError.
    mesh = jax.make_mesh((2,), ("d",), axis_types=(jax.sharding.AxisType.Explicit,))
    zb = (rng.normal(size=(8, 4096)) * 4).astype(np.float32)
    yb = (rng.uniform(size=(8, 4096)) > 0.5).astype(np.float32)
    zb64, yb64 = zb.astype(np.float64), yb.astype(np.float64)
    with jax.set_mesh(mesh):
        split = NamedSharding(mesh, PartitionSpec("d"))
        loss, grad = jax.jit(
            jax.value_and_grad(
                lambda x, t: jaxbce.sigmoid_binary_cross_entropy(x, t, reduction="mean")
            )
        )(jax.device_put(zb, split), jax.device_put(yb, split))
    want = (yb64 * _softplus(-zb64) + (1 - yb64) * _softplus(zb64)).mean()
    _close("  jit(value_and_grad), explicit sharding over 2 devices", loss, want)
    _close("  its gradient", grad, (_sigmoid(zb64) - yb64) / zb.size)

    checked = jax.jit(jaxbce.with_value_checks(jaxbce.sigmoid_binary_cross_entropy))
    err, _ = checked(z, y)
    err.throw()
    err, _ = checked(z, jnp.asarray(y).at[1, 2].set(2.0))
    assert err.get() is not None and "labels must lie in [0, 1]" in err.get(), err.get()
    print("ok  with_value_checks")
    print("smoke test passed")


if __name__ == "__main__":
    main()
