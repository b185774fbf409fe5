"""The loops the losses compile to on CPU (jaxbce._layout, and the options fixed at compile
time): the focal loss at a short last dimension runs over the flattened array in one
conditional, with the same numbers; eager calls at odd sizes fold their scalar options.

Found 2026-11-27 (``benchmarks/inner_dims.py``, ``benchmarks/vectorized_loops.py``):
``value_and_grad`` of the focal mean took 105.0 ns per element at (2097152, 2) against 20.6
flat, and an eager call at 2^22 - 1 elements 8.6 times as long per element as at 2^22 (the
cross-entropy with label smoothing 10.9 times; ``benchmarks/eager_odd_sizes.py``): XLA:CPU
left those loops scalar.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loss_cases import BCE, FOCAL

from jaxbce._layout import short_innermost


@pytest.mark.parametrize(
    "shape, short",
    [
        ((8192, 2), True),
        ((2341, 7), True),
        ((5462, 3, 1), True),  # a trailing 1 is dropped: the loop's innermost dimension is 3
        ((1639, 2, 5), True),
        ((4096, 2), False),  # below MIN_SIZE elements
        ((4096, 8), False),
        ((16384,), False),
        ((16384, 1), False),
        ((1, 16383, 1), False),  # no loop around the innermost one
        ((0, 2), False),
        ((4096, 33), False),
    ],
)
def test_which_shapes_run_flat(shape, short):
    assert short_innermost(shape) is short


def _random(shape, seed=0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(shape) * 8).astype(np.float32)
    z.flat[:4] = [0.0, 90.0, -90.0, 1e-30]
    y = rng.choice(np.float32([0.0, 1.0, 0.3]), shape)
    return jnp.asarray(z), jnp.asarray(y)


#: Every option kind once, each reduction and short dimension at least once (each case
#: compiles two programs of the focal loss and its gradient, seconds each).
CASES = [
    ((8193, 2), {}, "mean"),
    ((8193, 2), {"gamma": 0.5, "alpha": None}, "none"),
    ((5462, 3), {"gamma": 2.7, "alpha": 0.6, "weights": "rows"}, "sum"),
    ((3279, 5), {"gamma": 2.0, "where": "mask"}, "none"),
]


@pytest.mark.parametrize("shape, options, reduction", CASES, ids=str)
def test_short_last_dimension_gives_the_numbers_of_the_flat_call(shape, options, reduction):
    """Values and both gradients bit for bit those of the same elements as one dimension
    (same kernel, same blocks summed in the same order), with weights that broadcast from
    (B, 1) and a mask."""
    z, y = _random(shape)
    kw = dict(options)
    rng = np.random.default_rng(1)
    if kw.get("weights") == "rows":
        kw["weights"] = jnp.asarray(rng.uniform(0, 2, (shape[0], 1)).astype(np.float32))
    if kw.get("where") == "mask":
        kw["where"] = jnp.asarray(rng.uniform(size=shape) < 0.8)
    flat_kw = {
        k: (jnp.broadcast_to(v, shape).reshape(-1) if k in ("weights", "where") else v)
        for k, v in kw.items()
    }

    def run(z, y, kw):
        f = lambda z, y: FOCAL(z, y, reduction=reduction, **kw)
        g = lambda z, y: jnp.sum(f(z, y)) if reduction == "none" else f(z, y)
        return jax.jit(lambda z, y: (f(z, y), jax.grad(g, (0, 1))(z, y)))(z, y)

    got = run(z, y, kw)
    want = run(z.reshape(-1), y.reshape(-1), flat_kw)
    names = ("value", "d/dz", "d/dy")
    for name, g, w in zip(names, jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g).reshape(-1), np.asarray(w).reshape(-1), name)


def _compiled(f, *args):
    return jax.jit(f).lower(*args).compile()


@pytest.mark.parametrize("last", [2, 3, 4, 7])
def test_a_short_last_dimension_is_one_flat_loop_in_a_conditional(last):
    """XLA:CPU's program: the focal kernel in a conditional whose loop is over the flattened
    elements, the caller's shape given outside it; in reverse mode one temporary of the
    input's size (the coefficient the gradient needs leaves the conditional), no more."""
    n = 8192 * last
    z = jnp.zeros((8192, last), jnp.float32)
    none = _compiled(lambda z, y: FOCAL(z, y), z, z)
    text = none.as_text()
    assert " conditional(" in text
    assert f"f32[{n}]{{0}} fusion(" in text  # the kernel's loop, flat
    assert none.memory_analysis().temp_size_in_bytes <= 1024
    vg = _compiled(jax.value_and_grad(lambda z, y: FOCAL(z, y, reduction="mean")), z, z)
    assert " conditional(" in vg.as_text()
    assert vg.memory_analysis().temp_size_in_bytes <= 4 * n + 1024


@pytest.mark.parametrize("shape", [(4096, 8), (32768,), (32775,), (32768, 1), (4096, 2)])
def test_other_shapes_keep_the_fused_loop(shape):
    z = jnp.zeros(shape, jnp.float32)
    vg = _compiled(jax.value_and_grad(lambda z, y: FOCAL(z, y, reduction="mean")), z, z)
    assert " conditional(" not in vg.as_text()
    assert vg.memory_analysis().temp_size_in_bytes <= 2 * 4 * z.size // 512 + 1024


def test_under_vmap_a_short_last_dimension_still_gives_the_same_numbers():
    # The predicate is batched: JAX computes both branches and selects the computed one.
    z, y = _random((4, 8192, 2))
    per_example = jax.vmap(jax.value_and_grad(lambda z, y: FOCAL(z, y, reduction="mean")))
    value, grad = jax.jit(per_example)(z, y)
    one = jax.value_and_grad(lambda z, y: FOCAL(z, y, reduction="mean"))
    for i in range(4):
        v, g = one(z[i].reshape(-1), y[i].reshape(-1))
        np.testing.assert_allclose(value[i], v, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(grad[i]).reshape(-1), g, rtol=1e-6, atol=1e-12)


def _seconds(f, *args):
    start = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - start


def _median_ratio(slow, fast, rounds=7):
    for f in (slow, fast):
        f()  # compiled and warm
    return float(np.median([slow() / fast() for _ in range(rounds)]))


def test_a_short_last_dimension_is_as_fast_as_one_dimension():
    # Was 5.1 at (2^21, 2) against (2^22,) (value_and_grad of the mean, this machine).
    def timed(shape):
        z, y = _random(shape)
        f = _compiled(jax.value_and_grad(lambda z, y: FOCAL(z, y, reduction="mean")), z, y)
        return lambda: _seconds(f, z, y)

    ratio = _median_ratio(timed((2**19, 2)), timed((2**20,)))
    assert ratio < 2.0, ratio


@pytest.mark.parametrize(
    "loss",
    [
        lambda z, y: FOCAL(z, y),
        jax.grad(lambda z, y: FOCAL(z, y, gamma=0.5, alpha=None, reduction="mean")),
        lambda z, y: BCE(z, y, label_smoothing=0.1),
        lambda z, y: BCE(z, y, pos_weight=2.0),
    ],
    ids=["focal", "focal-grad", "bce-smoothing", "bce-pos_weight"],
)
def test_eager_calls_at_an_odd_size_are_as_fast_as_at_an_aligned_one(loss):
    """An eager call compiles its scalar options into its program (``_fixed_or_traced``,
    ``_fix_weights``):
    read at run time, they had left the loop scalar at an odd size (the time per element at
    2^22 - 1 was 8.6 times that at 2^22, the focal gradient's 4.9, the cross-entropy's with
    label smoothing 10.9 and with a scalar ``pos_weight`` 8.5;
    ``benchmarks/results/eager-odd-sizes-cpu-2026-11-27-67d6083.txt``)."""

    def timed(n):
        z, y = _random((n,))
        return lambda: _seconds(loss, z, y) / n

    ratio = _median_ratio(timed(2**20 - 1), timed(2**20))
    assert ratio < 2.5, ratio


@pytest.mark.parametrize(
    "options", [{"gamma": 2.0, "alpha": 0.6}, {"gamma": 0.5, "alpha": None}], ids=str
)
def test_an_eager_call_gives_the_numbers_of_a_jitted_one(options):
    """Eager and under ``jit`` (a Python float is a constant there too): one program, the
    same numbers bit for bit; before the options were fixed, an eager call read them at
    run time and XLA folded them only under jit (last-bit differences in float32 d/dy at
    alpha 0.6, in float64 at every gamma)."""
    z, y = _random((4099,))
    f = lambda z, y: jax.value_and_grad(lambda z, y: FOCAL(z, y, **options).sum(), (0, 1))(z, y)
    eager, jitted = f(z, y), jax.jit(f)(z, y)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(a, b)


# The sharded and exported calls of tests/test_sharded.py are too small to take the flat
# loop (fewer than MIN_SIZE elements per device); these take it, on this process's device.


@pytest.mark.parametrize("where", ["none", "sharded", "replicated"])
def test_flat_loop_under_shard_map_and_pmap_with_axis_name(where):
    """The conditional's never-taken branch gives zeros of the computed results' types,
    varying over the mapped axis where they do (JAX refuses branches of different types):
    with a mask split like the data, a replicated one, or none; on a mesh of this process's
    one device."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    z, y = _random((8192, 2))
    rows = jnp.asarray(np.random.default_rng(2).uniform(size=(8192, 2)) < 0.8)
    m = {"none": rows, "sharded": rows, "replicated": jnp.asarray([True, False])}[where]
    kw = {} if where == "none" else {"where": m}
    value, grad = jax.value_and_grad(lambda z: FOCAL(z, y, reduction="mean", **kw))(z)

    def per_device(z, y, m):
        kw = {} if where == "none" else {"where": m}
        return FOCAL(z, y, reduction="mean", axis_name="data", **kw)

    replicated = where == "replicated"
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    specs = (P("data"), P("data"), P() if replicated else P("data"))
    sm = jax.jit(
        jax.value_and_grad(jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=P()))
    )
    assert " conditional(" in sm.lower(z, y, m).compile().as_text()
    pm = jax.pmap(per_device, axis_name="data", in_axes=(0, 0, None if replicated else 0))
    m_pm = m if replicated else m[None]
    by_pmap = jax.value_and_grad(lambda z: pm(z, y[None], m_pm)[0])(z[None])
    for name, (v, g) in (("shard_map", sm(z, y, m)), ("pmap", by_pmap)):
        np.testing.assert_allclose(v, value, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(
            np.asarray(g).reshape(grad.shape), grad, rtol=1e-6, atol=1e-12, err_msg=name
        )


def test_flat_loop_exports_for_cpu_and_gpu():
    """Exported for CPU and CUDA at a static short last dimension: the conditional is in the
    CPU branch of the platform switch only, and the CPU program runs as the jitted one."""
    z, y = _random((8192, 2))
    f = jax.value_and_grad(lambda z, y: FOCAL(z, y, reduction="mean"))
    exported = jax.export.export(jax.jit(f), platforms=["cpu", "cuda"])(z, y)
    value, grad = exported.call(z, y)
    want = jax.jit(f)(z, y)
    np.testing.assert_array_equal(value, want[0])
    np.testing.assert_array_equal(grad, want[1])
