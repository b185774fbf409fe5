"""The pairwise sigmoid loss on rings of 1, 2, 4 and 8 simulated CPU devices (``shard_map``
and ``pmap``), against the float64 reference of tests/test_pairwise.py (its tolerances),
every case in one fresh Python with 8 devices (a module fixture); and the ring's memory."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from devices import script_results
from test_pairwise import LABELS, REDUCTIONS

# --------------------------------------------------------------- rings of devices

#: Global batch 24 on 1, 2, 4 and 8 devices: 24, 12, 6 and 3 local rows; block 5 leaves a
#: partial last block on every ring but the last, where it is clamped to 3.
DEVICES = (1, 2, 4, 8)
#: Every label kind and every reduction on every ring (each label kind once, the reductions
#: and block sizes rotating), every (label kind, reduction) pair on some ring.
RING_CASES = [
    f"{n}-{labels}-{REDUCTIONS[(k + i) % 3]}-{('None', '5')[(k + i) % 2]}"
    for i, n in enumerate(DEVICES)
    for k, labels in enumerate(LABELS)
]
EXTRA_CASES = (
    *("float32", "pmap", "grad_of_grad", "forward_mode", "mesh_2d", "memory"),
    *("replicated_refused", "empty_batch"),
)

_RING_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import numpy as np, jax, jax.numpy as jnp
    from jax import lax
    from jax.sharding import Mesh, PartitionSpec as P
    jax.config.update("jax_enable_x64", True)
    import jaxbce
    sys.path.insert(0, sys.argv[1])
    from test_pairwise import B, cotangent, check_against_reference, kwargs_of, problem
    from test_pairwise_ring import RING_CASES

    a, b, ids, where = problem()
    SCALE, BIAS = 2.5, -3.0
    results = {}

    def ring_loss(mesh, labels, red, block, dtype=np.float64):
        # The global loss of global arrays: shard_map splits the rows over "x".
        kw = kwargs_of(labels, ids, where)
        names = [k for k in ("pair_ids", "where") if kw[k] is not None]

        def per_device(a, b, scale, bias, *rows):
            return jaxbce.pairwise_sigmoid_loss(
                a, b, scale=scale, bias=bias, reduction=red, block_size=block,
                axis_name="x", **dict(zip(names, rows)))

        sm = jax.shard_map(per_device, mesh=mesh,
                           in_specs=(P("x"), P("x"), P(), P(), *(P("x") for _ in names)),
                           out_specs=P("x") if red == "none" else P())
        rows = tuple(kw[k] for k in names)
        return (lambda a, b, scale, bias: sm(a, b, scale, bias, *rows)), kw

    def record(case, fn):
        try:
            fn()
            results[case] = "ok"
        except Exception as err:
            results[case] = f"{type(err).__name__}: {err}"[:3000]

    # Every case of one ring in one program: four compilations, not 16.
    for n in (1, 2, 4, 8):
        mesh = Mesh(np.array(jax.devices()[:n]), ("x",))
        cases = [c for c in RING_CASES if c.startswith(f"{n}-")]
        made = {}
        for case in cases:
            _, labels, red, block = case.split("-")
            made[case] = ring_loss(mesh, labels, red, None if block == "None" else int(block))

        @jax.jit
        def run(a, b, scale, bias):
            out = {}
            for case, (f, _) in made.items():
                value, pullback = jax.vjp(f, a, b, scale, bias)
                out[case] = value, pullback(jnp.asarray(cotangent(case.split("-")[2])))
            return out

        out = run(a, b, SCALE, BIAS)
        for case, (_, kw) in made.items():
            red = case.split("-")[2]
            record(case, lambda: check_against_reference(
                *out[case], a, b, SCALE, BIAS, kw, red, rtol=1e-12))

    mesh8 = Mesh(np.array(jax.devices()), ("x",))

    def float32_case():
        f, kw = ring_loss(mesh8, "both", "sum", None)
        f32 = [np.float32(v) for v in (a, b, SCALE, BIAS)]
        value, pullback = jax.jit(lambda *x: jax.vjp(f, *x))(*f32)
        grads = pullback(jnp.float32(1.3))
        assert value.dtype == jnp.float32 and grads[1].dtype == jnp.float32
        check_against_reference(value, grads, *[np.float64(v) for v in f32], kw, "sum",
                                rtol=1e-5, size=True)

    record("float32", float32_case)

    def pmap_case():
        # pmap transposes psum to psum: every device differentiates its copy of the global
        # loss, so each gets 8 times its slice of the global gradient (as for any psum),
        # and 8 times its own anchors' part of the scale and bias gradients.
        def per_device(a, b, ids, where):
            f = lambda a, b, s, t: jaxbce.pairwise_sigmoid_loss(
                a, b, scale=s, bias=t, pair_ids=ids, where=where, axis_name="x")
            return jax.value_and_grad(f, argnums=(0, 1, 2, 3))(a, b, SCALE, BIAS)

        sh = lambda v: v.reshape(8, -1, *v.shape[1:])
        value, grads = jax.pmap(per_device, axis_name="x")(sh(a), sh(b), sh(ids), sh(where))
        kw = kwargs_of("both", ids, where)
        got = (grads[0].reshape(B, -1) / 8, grads[1].reshape(B, -1) / 8,
               grads[2].sum() / 8, grads[3].sum() / 8)
        np.testing.assert_allclose(value, np.full(8, value[0]))
        check_against_reference(value[0], [g * 1.3 for g in got], a, b, SCALE, BIAS,
                                kw, "mean", rtol=1e-12)

    record("pmap", pmap_case)

    def grad_of_grad_case():
        # Reverse over reverse through the ring (ppermute transposed) against the dense
        # one-device loss, whose order-2 gradients check_grads verifies in the main tests.
        mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
        ring, kw = ring_loss(mesh, "both", "mean", 5)
        dense = lambda a, b, s, t: jaxbce.pairwise_sigmoid_loss(a, b, scale=s, bias=t, **kw)
        v = np.random.default_rng(2).normal(size=a.shape)

        def hvp(f):
            inner = lambda a, b, s, t: jnp.vdot(jax.grad(f, argnums=1)(a, b, s, t), v)
            return jax.jit(jax.grad(inner, argnums=(0, 1, 2, 3)))(a, b, SCALE, BIAS)

        for got, want in zip(hvp(ring), hvp(dense)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())

    record("grad_of_grad", grad_of_grad_case)

    def forward_mode_case():
        # jvp of the ring's loss, and forward over reverse (a Hessian-vector product), against
        # the dense one-device loss: the "sum"/"mean" ring is a custom_jvp.
        mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
        ring, kw = ring_loss(mesh, "both", "sum", 5)
        dense = lambda a, b, s, t: jaxbce.pairwise_sigmoid_loss(
            a, b, scale=s, bias=t, reduction="sum", **kw)
        rng = np.random.default_rng(3)
        primals = (a, b, SCALE, BIAS)
        tangents = (rng.normal(size=a.shape), rng.normal(size=b.shape), 0.7, -1.1)

        def both(f):
            def run(primals, tangents):
                jvp = jax.jvp(f, primals, tangents)
                grad = lambda *x: jax.grad(f, argnums=(0, 1, 2, 3))(*x)
                return jvp, jax.jvp(grad, primals, tangents)[1]

            return jax.jit(run)(primals, tangents)

        got, want = both(ring), both(dense)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12 * np.abs(y).max())

    record("forward_mode", forward_mode_case)

    def mesh_2d_case():
        # A ring over two mesh axes at once, axis_name=("x", "y"): devices in row-major order.
        mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("x", "y"))
        kw = kwargs_of("pair_ids", ids, where)
        loss = lambda a, b, s, t, ids: jaxbce.pairwise_sigmoid_loss(
            a, b, scale=s, bias=t, pair_ids=ids, block_size=2, axis_name=("x", "y"))
        xy = P(("x", "y"))
        sm = jax.shard_map(loss, mesh=mesh, in_specs=(xy, xy, P(), P(), xy), out_specs=P())
        f = lambda a, b, s, t: sm(a, b, s, t, ids)
        value, pullback = jax.jit(lambda *x: jax.vjp(f, *x))(a, b, SCALE, BIAS)
        grads = pullback(jnp.asarray(1.3))
        check_against_reference(value, grads, a, b, SCALE, BIAS, kw, "mean", rtol=1e-12)

    record("mesh_2d", mesh_2d_case)

    def replicated_refused_case():
        # a and b replicated (in_specs P()) under axis_name: each device would take the whole
        # batch for its own shard, counting the copies as negatives (27.14 where the loss of
        # the batch is 6.98); refused, naming the argument, where shard_map tracks varying
        # axes (check_vma, its default).
        loss = lambda a, b: jaxbce.pairwise_sigmoid_loss(a, b, scale=1.0, bias=0.0,
                                                          axis_name="x")
        # b: each device's own a against one replicated (local-sized) b.
        for specs, args, name in (((P(), P()), (a, b), "a"), ((P("x"), P()), (a, b[:3]), "b")):
            sm = jax.shard_map(loss, mesh=mesh8, in_specs=specs, out_specs=P())
            try:
                jax.jit(sm)(*args)
            except ValueError as err:
                assert str(err).startswith(f"{name} is the same on every device"), err
            else:
                raise AssertionError(f"in_specs {specs}: not refused")

    record("replicated_refused", replicated_refused_case)

    def empty_batch_case():
        # A batch of 0 rows on every device: no pair, loss 0 ("none": an empty array), as on
        # one device (it was a TypeError, or a ZeroDivisionError with block_size).
        e = np.zeros((0, 3))
        for kw in ({}, {"block_size": 4}, {"reduction": "sum"}, {"reduction": "none"}):
            red = kw.get("reduction", "mean")
            loss = lambda a, b: jaxbce.pairwise_sigmoid_loss(
                a, b, scale=SCALE, bias=BIAS, axis_name="x", **kw)
            sm = jax.shard_map(loss, mesh=mesh8, in_specs=(P("x"), P("x")),
                               out_specs=P("x") if red == "none" else P())
            got = np.asarray(jax.jit(sm)(e, e))
            assert got.shape == ((0,) if red == "none" else ()) and not got.any(), (kw, got)
            if red != "none":
                grads = jax.jit(jax.grad(sm, argnums=(0, 1)))(e, e)
                assert all(g.shape == (0, 3) for g in grads), kw

    record("empty_batch", empty_batch_case)

    def temp_bytes(fn, n, local_b, dim):
        mesh = Mesh(np.array(jax.devices()[:n]), ("x",))
        vg = jax.value_and_grad(fn, argnums=(0, 1, 2, 3))
        sm = jax.shard_map(vg, mesh=mesh, in_specs=(P("x"), P("x"), P(), P()),
                           out_specs=(P(), (P("x"), P("x"), P(), P())))
        x = jax.ShapeDtypeStruct((n * local_b, dim), jnp.float32)
        s = jax.ShapeDtypeStruct((), jnp.float32)
        compiled = jax.jit(sm).lower(x, x, s, s).compile()
        if fn is ring_fn:  # candidates only ever move by collective-permute
            assert "all-gather" not in compiled.as_text()
        return compiled.memory_analysis().temp_size_in_bytes

    def ring_fn(a, b, s, t):
        return jaxbce.pairwise_sigmoid_loss(a, b, scale=s, bias=t, axis_name="x")

    def dense_fn(a, b, s, t):
        # big_vision-style: every device gathers all candidates, (Bl, B) logits.
        b_all = lax.all_gather(b, "x", tiled=True)
        k, n = lax.axis_index("x"), a.shape[0]
        labels = (k * n + jnp.arange(n))[:, None] == jnp.arange(b_all.shape[0])[None, :]
        z = s * a @ b_all.T + t
        loss = jaxbce.sigmoid_binary_cross_entropy(z, labels, reduction="sum")
        return lax.psum(loss, "x") / (n * lax.axis_size("x"))

    def memory_case():
        local_b, dim = 256, 64
        ring = {n: temp_bytes(ring_fn, n, local_b, dim) for n in (2, 4, 8)}
        dense = {n: temp_bytes(dense_fn, n, local_b, dim) for n in (2, 8)}
        print("MEMORY " + json.dumps({"ring": ring, "dense": dense}))
        block, row = local_b * local_b * 4, local_b * dim * 4
        assert max(ring.values()) <= 1.1 * min(ring.values()), ring
        assert max(ring.values()) <= 4 * block + 4 * row, (ring, block, row)
        assert dense[8] >= local_b * 8 * local_b * 4, dense  # one (Bl, B) block at least

    record("memory", memory_case)
    print("RESULTS " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def ring_results():
    return script_results(_RING_SCRIPT, str(Path(__file__).parent), timeout=900)


@pytest.mark.xdist_group("ring")
@pytest.mark.parametrize("case", RING_CASES)
def test_ring_matches_reference_float64(ring_results, case):
    # jit(vjp(shard_map(...))) on a ring of n CPU devices against the one-device float64
    # reference of the global batch: value and the a, b, scale, bias cotangents at 1e-12.
    assert ring_results[case] == "ok", ring_results[case]


@pytest.mark.xdist_group("ring")
@pytest.mark.parametrize("case", EXTRA_CASES)
def test_ring_float32_pmap_grad_of_grad_and_memory(ring_results, case):
    # float32 within 1e-5 of each result's size; pmap's psum-transposed gradients; reverse
    # over reverse through the ring; forward mode (jvp, and jvp of grad) through the ring; a
    # ring over two mesh axes; temporaries of the ring at a
    # local batch of 256 flat in the number of devices (2, 4, 8: within 10%) and under 4
    # (Bl, Bl) float32 blocks plus 4 (Bl, d) buffers.
    assert ring_results[case] == "ok", ring_results[case]
