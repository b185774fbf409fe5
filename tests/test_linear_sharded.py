"""The fused linear loss sharded over 8 simulated CPU devices: the label axis, the batch
axis and both of a two-axis mesh under ``shard_map``, against the single-device unfused loss
(float64, ``rtol=1e-12``: see test_linear.py), and the integer labels that sharding makes
ambiguous. Each case runs in a fresh Python (the device count is fixed at JAX's start) that
imports ``test_linear._problem`` for its inputs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

_SHARDED_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jaxbce
from jaxbce._linear import linear_sigmoid_binary_cross_entropy as fused
jax.config.update("jax_enable_x64", True)
assert jax.device_count() == 8, jax.devices()
sys_path_problem = __import__("test_linear")._problem
h, w, b, idx, dense = sys_path_problem(seed=13, batch=8, n_labels=8 * 12, k=6)
pw = np.random.default_rng(14).uniform(0.5, 2.0, w.shape[1])
mesh = jax.make_mesh((8,), ("x",))
put = lambda a, spec: jax.device_put(jnp.asarray(a), NamedSharding(mesh, spec))

def reference(h, w, b, pw):
    return jaxbce.sigmoid_binary_cross_entropy(
        h @ w + b, dense, pos_weight=pw, reduction="mean")

v0, g0 = jax.value_and_grad(reference, argnums=(0, 1, 2, 3))(h, w, b, pw)

def check(v1, g1, g0=g0):
    np.testing.assert_allclose(v1, v0, rtol=1e-12)
    for a, c in zip(g1, g0, strict=True):
        np.testing.assert_allclose(np.asarray(a), c, rtol=1e-12, atol=1e-15)

# The label axis sharded: each device its 12 kernel columns (chunks of 5: not dividing).
for labels, spec in [(idx, P()), (dense, P(None, "x"))]:
    local = lambda h, w, b, pw, y: fused(
        h, w, y, bias=b, pos_weight=pw, chunk_size=5, axis_name="x")
    sm = jax.shard_map(local, mesh=mesh, out_specs=P(),
                       in_specs=(P(), P(None, "x"), P("x"), P("x"), spec))
    args = (put(h, P()), put(w, P(None, "x")), put(b, P("x")), put(pw, P("x")),
            put(labels, spec))
    v1, g1 = jax.jit(jax.value_and_grad(sm, argnums=(0, 1, 2, 3)))(*args)
    check(v1, g1)
    assert g1[1].sharding.spec == P(None, "x")

# The label axis sharded without axis_name, the user's own psum of the local sums (a scan
# carry type error inside the kernel's loop before: the features replicated, the kernel not).
def local_sum(h, w, b, pw, y):
    total = jax.lax.psum(fused(h, w, y, bias=b, pos_weight=pw, chunk_size=5, reduction="sum"), "x")
    return total / dense.size

sm = jax.shard_map(local_sum, mesh=mesh, out_specs=P(),
                   in_specs=(P(), P(None, "x"), P("x"), P("x"), P(None, "x")))
args = (put(h, P()), put(w, P(None, "x")), put(b, P("x")), put(pw, P("x")),
        put(dense, P(None, "x")))
v1, g1 = jax.jit(jax.value_and_grad(sm, argnums=(0, 1, 2, 3)))(*args)
check(v1, g1)

# Data parallel: the batch sharded, the kernel replicated.
local = lambda h, w, b, pw, y: fused(h, w, y, bias=b, pos_weight=pw, axis_name="x")
sm = jax.shard_map(local, mesh=mesh, out_specs=P(), in_specs=(P("x"), P(), P(), P(), P("x")))
args = (put(h, P("x")), put(w, P()), put(b, P()), put(pw, P()), put(idx, P("x")))
v1, g1 = jax.jit(jax.value_and_grad(sm, argnums=(0, 1, 2, 3)))(*args)
check(v1, g1)
print("OK")
"""


def _run_on_eight_devices(script: str) -> None:
    """Runs ``script`` in a fresh Python with 8 simulated CPU devices; it must print OK."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), str(Path(__file__).parents[1])]
            + [p for p in [os.environ.get("PYTHONPATH")] if p]
        ),
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("OK")


def test_sharded_label_axis_on_eight_devices():
    """shard_map over 8 simulated CPU devices: label-sharded (sparse and dense labels; and
    without axis_name, followed by the user's psum) and data-parallel, value and every
    gradient equal to the single-device unfused loss."""
    _run_on_eight_devices(_SHARDED_SCRIPT)


_SHARDED_LABEL_ERRORS_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np, pytest
from jax.sharding import NamedSharding, PartitionSpec as P
import jaxbce
from jaxbce._linear import linear_sigmoid_binary_cross_entropy as fused
assert jax.device_count() == 8, jax.devices()
rng = np.random.default_rng(18)
mesh = jax.make_mesh((8,), ("x",))
put = lambda a, spec: jax.device_put(jnp.asarray(a), NamedSharding(mesh, spec))
h = np.float32(rng.normal(size=(4, 3)))

def loss(w, y, spec):
    local = lambda h, w, y: fused(h, w, y, chunk_size=2, axis_name="x")
    sm = jax.jit(jax.shard_map(local, mesh=mesh, out_specs=P(),
                               in_specs=(P(), P(None, "x"), spec)))
    return sm(put(h, P()), put(w, P(None, "x")), put(y, spec))

# Integer 0/1 labels as wide as the local L (8 labels: 1 per device; 24: 3 per device),
# split like the kernel, or as wide as the global L, replicated: ambiguous, never a number.
for n_labels, spec, width in [(8, P(None, "x"), 8), (24, P(None, "x"), 24), (24, P(), 24),
                              (24, P(), 3)]:
    w = np.float32(rng.normal(size=(3, n_labels)))
    y01 = rng.integers(0, 2, (4, width)).astype(np.int32)
    with pytest.raises(ValueError, match=r"ambiguous.*bool or float"):
        loss(w, y01, spec)
# Sparse indices split over the label axis: each device would see a third of them.
idx = np.int32(np.stack([rng.choice(24, 16, replace=False) for _ in range(4)]))
with pytest.raises(ValueError, match=r"global label indices .* vary over \\('x',\\)"):
    loss(w, idx, P(None, "x"))
# Replicated sparse indices with K = L_local = 3, padded with -1: the dense loss.
idx = idx[:, :3]
dense = np.zeros((4, 24), bool)
np.put_along_axis(dense, np.int64(idx), True, axis=1)
padded = np.pad(idx, ((0, 0), (0, 1)), constant_values=-1)
ref = jaxbce.sigmoid_binary_cross_entropy(h @ w, dense, reduction="mean")
np.testing.assert_allclose(loss(w, padded, P()), ref, rtol=1e-6)
# check_vma=False: nothing tells whether the kernel is split, and the indices were read as
# local ones (0.842 for 0.930): refused; dense labels, split with the kernel, need no offset.
def loss_untracked(w, y, spec):
    local = lambda h, w, y: fused(h, w, y, chunk_size=2, axis_name="x")
    sm = jax.jit(jax.shard_map(local, mesh=mesh, out_specs=P(), check_vma=False,
                               in_specs=(P(), P(None, "x"), spec)))
    return sm(put(h, P()), put(w, P(None, "x")), put(y, spec))
with pytest.raises(ValueError, match=r"does not track .*check_vma=True.*dense"):
    loss_untracked(w, padded, P())
np.testing.assert_allclose(loss_untracked(w, dense, P(None, "x")), ref, rtol=1e-6)
print("OK")
"""


def test_sharded_ambiguous_or_split_integer_labels_are_refused():
    """Label-sharded over 8 devices: integer labels as wide as the local L (L_local = 1 or
    3) or the global L are refused, and so are sparse indices split over the label axis
    (each device counted only its own slice's positives); padded, replicated indices give
    the unsharded dense loss; under check_vma=False sparse labels are refused (a split
    kernel took them for local indices, silently) and dense ones give the loss."""
    _run_on_eight_devices(_SHARDED_LABEL_ERRORS_SCRIPT)


_TWO_AXIS_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jaxbce
from jaxbce._linear import linear_sigmoid_binary_cross_entropy as fused
jax.config.update("jax_enable_x64", True)
assert jax.device_count() == 8, jax.devices()
h, w, b, idx, dense = __import__("test_linear")._problem(seed=19, batch=8, n_labels=4 * 6)
mesh = jax.make_mesh((2, 4), ("data", "model"))
put = lambda a, spec: jax.device_put(jnp.asarray(a), NamedSharding(mesh, spec))
reference = lambda h, w, b: jaxbce.sigmoid_binary_cross_entropy(
    h @ w + b, dense, reduction="mean")
v0, g0 = jax.value_and_grad(reference, argnums=(0, 1, 2))(h, w, b)
for labels, spec in [(idx, P("data")), (dense, P("data", "model"))]:
    local = lambda h, w, b, y: fused(h, w, y, bias=b, chunk_size=4, axis_name=("data", "model"))
    sm = jax.shard_map(local, mesh=mesh, out_specs=P(),
                       in_specs=(P("data"), P(None, "model"), P("model"), spec))
    args = (put(h, P("data")), put(w, P(None, "model")), put(b, P("model")), put(labels, spec))
    v1, g1 = jax.jit(jax.value_and_grad(sm, argnums=(0, 1, 2)))(*args)
    np.testing.assert_allclose(v1, v0, rtol=1e-12)
    for a, c in zip(g1, g0, strict=True):
        np.testing.assert_allclose(np.asarray(a), c, rtol=1e-12, atol=1e-15)
# A mask broadcast over the batch (split with the kernel) or over the labels (split with
# the batch): its count varies along one axis only, and psum refused the mixed pair.
rng = np.random.default_rng(20)
for mask, spec in [(rng.random((1, 24)) < 0.7, P(None, "model")),
                   (rng.random((8, 1)) < 0.7, P("data"))]:
    for red in ("mean", "sum"):
        ref = lambda h, w, b: jaxbce.sigmoid_binary_cross_entropy(
            h @ w + b, dense, where=np.broadcast_to(mask, dense.shape), reduction=red)
        v0, g0 = jax.value_and_grad(ref, argnums=(0, 1, 2))(h, w, b)
        local = lambda h, w, b, y, m: fused(h, w, y, bias=b, where=m, chunk_size=4,
                                            reduction=red, axis_name=("data", "model"))
        sm = jax.shard_map(local, mesh=mesh, out_specs=P(),
                           in_specs=(P("data"), P(None, "model"), P("model"),
                                     P("data", "model"), spec))
        args = (put(h, P("data")), put(w, P(None, "model")), put(b, P("model")),
                put(dense, P("data", "model")), put(mask, spec))
        v1, g1 = jax.jit(jax.value_and_grad(sm, argnums=(0, 1, 2)))(*args)
        np.testing.assert_allclose(v1, v0, rtol=1e-12)
        for a, c in zip(g1, g0, strict=True):
            np.testing.assert_allclose(np.asarray(a), c, rtol=1e-12, atol=1e-15)
# axis_name names the label axis only, the caller sums over the batch axis itself: the
# kernel's and bias' gradients raised a loop-carry type error (varying over "model" in,
# over both axes out).
ref = lambda h, w, b: jaxbce.sigmoid_binary_cross_entropy(h @ w + b, dense, reduction="sum")
v0, g0 = jax.value_and_grad(ref, argnums=(0, 1, 2))(h, w, b)
local = lambda h, w, b, y: jax.lax.psum(
    fused(h, w, y, bias=b, chunk_size=4, reduction="sum", axis_name="model"), "data")
sm = jax.shard_map(local, mesh=mesh, out_specs=P(),
                   in_specs=(P("data"), P(None, "model"), P("model"), P("data", "model")))
args = (put(h, P("data")), put(w, P(None, "model")), put(b, P("model")),
        put(dense, P("data", "model")))
v1, g1 = jax.jit(jax.value_and_grad(sm, argnums=(0, 1, 2)))(*args)
np.testing.assert_allclose(v1, v0, rtol=1e-12)
for a, c in zip(g1, g0, strict=True):
    np.testing.assert_allclose(np.asarray(a), c, rtol=1e-12, atol=1e-15)
print("OK")
"""


def test_batch_and_label_axes_of_a_two_axis_mesh():
    """A (2, 4) mesh, the batch split over "data" and the kernel's columns over "model",
    axis_name=("data", "model"): sparse indices are offset along "model" only (they were
    read as local column indices, silently wrong), and value and gradients equal the
    unsharded loss, for sparse and dense labels; and for masks broadcast over the batch or
    over the labels (JAX's psum refused their count, which varied along one axis only), and
    with axis_name the label axis only and the caller's own psum over the batch axis."""
    _run_on_eight_devices(_TWO_AXIS_SCRIPT)
