"""Reduced losses wherever a user may put them: under ``shard_map`` and ``pmap`` on 8 devices,
under ``jit`` with inputs sharded over 8 devices, and exported with a symbolic batch size for
CPU, CUDA and TPU.

XLA:CPU simulates several devices only if told before JAX starts, so the data-parallel
cases all run in one subprocess (:data:`_PARALLEL_SCRIPT`) and each test reads the result
of its own case. Every case is compared with the same loss computed on one device.
"""

from __future__ import annotations

import itertools
import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from devices import script_results

import jaxbce

#: Every case reads one subprocess's results (a module fixture); the group keeps them on
#: one xdist worker, so the 8-device subprocess runs once, not once per worker.
pytestmark = pytest.mark.xdist_group("sharded")

LOSSES = {
    "bce": jaxbce.sigmoid_binary_cross_entropy,
    "probs": jaxbce.binary_cross_entropy,
    "focal": jaxbce.sigmoid_focal_loss,
}

# ------------------------------------------------------------------ data parallelism

#: where= as a (16, 6) mask sharded with the batch, as a (6,) per-class mask passed
#: replicated (in_specs P(), pmap in_axes None), or closed over as a constant. The last two
#: are device-invariant while the loss is not: the count and the sum must still agree.
WHERES = ("none", "sharded", "replicated", "closed")
#: "axis_name": the loss reduces globally itself; "local": it reduces locally and the user
#: adds lax.psum ("sum") or lax.pmean ("mean").
MODES = ("axis_name", "local")
REDUCTIONS = ("sum", "mean")
#: The cross-entropy of logits in every (reduction, where, mode); the other two losses, which
#: share its reduction code, in a quarter fraction: every mask kind once, each reduction and
#: each mode twice, every (reduction, mode) pair once (compile time follows the number of
#: focal kernels in the program).
CASES = ["-".join(("bce", *c)) for c in itertools.product(REDUCTIONS, WHERES, MODES)] + [
    "-".join((name, REDUCTIONS[j % 2], where, MODES[(j // 2 + j) % 2]))
    for name in ("probs", "focal")
    for j, where in enumerate(WHERES)
]

_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import numpy as np, jax, jax.numpy as jnp
    from jax import lax
    from jax.sharding import Mesh, PartitionSpec as P
    import jaxbce

    LOSSES = {"bce": jaxbce.sigmoid_binary_cross_entropy,
              "probs": jaxbce.binary_cross_entropy, "focal": jaxbce.sigmoid_focal_loss}
    D = jax.device_count()
    assert D == 8, D
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(16, 6)) * 3).astype(np.float32)
    y = rng.uniform(size=(16, 6)) > 0.5
    m_rows = rng.uniform(size=(16, 6)) > 0.2
    m_cols = np.array([True, False, True, True, False, True])
    mesh = Mesh(np.array(jax.devices()), ("data",))

    x_of = {"bce": z, "focal": z, "probs": 1 / (1 + np.exp(-z))}
    shards = lambda a: a.reshape(D, -1, *a.shape[1:])

    def make(case):
        # The per-device loss of a case and its arguments under shard_map and pmap.
        name, red, where, mode = case.split("-")
        fn = LOSSES[name]

        def per_device(x, y, m):
            kw = {} if where == "none" else {"where": m_cols if where == "closed" else m}
            if mode == "axis_name":
                return fn(x, y, reduction=red, axis_name="data", **kw)
            local = fn(x, y, reduction=red, **kw)
            return (lax.psum if red == "sum" else lax.pmean)(local, "data")

        replicated = where == "replicated"
        m_axis = None if replicated else 0
        sm = jax.shard_map(per_device, mesh=mesh, out_specs=P(),
                           in_specs=(P("data"), P("data"), P() if replicated else P("data")))
        m = m_cols if replicated else m_rows
        x = x_of[name]
        return {"shard_map": (jax.value_and_grad(sm), (x, y, m)),
                "pmap": (jax.value_and_grad(per_device), (shards(x), shards(y),
                         m if replicated else shards(m))),
                "m_axis": m_axis}

    # One device: every loss elementwise (value and derivative, one program), reduced here in
    # float64 as the case asks. "local": each shard's own sum or mean (0 with nothing
    # included), then summed or averaged over the shards.
    elementwise = jax.jit(lambda xs: {
        n: jax.vmap(jax.value_and_grad(lambda a, b, f=LOSSES[n]: f(a, b)))(
            xs[n].reshape(-1), y.reshape(-1)) for n in LOSSES})(x_of)

    def single(case):
        name, red, where, mode = case.split("-")
        loss, grad = (np.asarray(v, np.float64).reshape(y.shape) for v in elementwise[name])
        mask = np.ones(y.shape, bool) if where == "none" else np.broadcast_to(
            m_rows if where == "sharded" else m_cols, y.shape)
        if mode == "axis_name" or red == "sum":
            count = max(mask.sum(), 1) if red == "mean" else 1
            return (loss * mask).sum() / count, grad * mask / count
        counts = np.maximum(shards(mask).sum(axis=(1, 2)), 1)
        value = (shards(loss * mask).sum(axis=(1, 2)) / counts).mean()
        return value, (shards(grad * mask) / (D * counts[:, None, None])).reshape(y.shape)

    def run_all(made):
        # All cases in one program per transformation: three compilations, not 2 per case.
        out = {}
        out["shard_map"] = jax.jit(lambda a: {c: made[c]["shard_map"][0](*a[c]) for c in made})(
            {c: made[c]["shard_map"][1] for c in made})
        out["pmap"] = {}
        for m_axis in (0, None):  # one pmap per in_axes pattern
            cases = [c for c in made if made[c]["m_axis"] == m_axis]
            if not cases:
                continue
            pm = jax.pmap(lambda a: {c: made[c]["pmap"][0](*a[c]) for c in cases},
                          axis_name="data", in_axes=({c: (0, 0, m_axis) for c in cases},))
            out["pmap"].update(pm({c: made[c]["pmap"][1] for c in cases}))
        return out

    results, made = {}, {c: make(c) for c in json.loads(sys.argv[1])}
    try:
        out = run_all(made)
    except Exception:
        # Trace the cases one by one to name those that fail, and run the others.
        for case, fns in list(made.items()):
            try:
                jax.eval_shape(fns["shard_map"][0], *fns["shard_map"][1])
                jax.eval_shape(jax.pmap(fns["pmap"][0], axis_name="data",
                                        in_axes=(0, 0, fns["m_axis"])), *fns["pmap"][1])
            except Exception as err:
                results[case] = f"{type(err).__name__}: {err}"[:2000]
                del made[case]
        out = run_all(made)
    for case in made:
        try:
            v, g = single(case)
            (v_sm, g_sm), (v_pm, g_pm) = out["shard_map"][case], out["pmap"][case]
            np.testing.assert_allclose(v_sm, v, rtol=1e-6, err_msg="shard_map value")
            np.testing.assert_allclose(g_sm, g, rtol=1e-6, atol=1e-9, err_msg="shard_map grad")
            # pmap: the value on every device. pmap differentiates each device's copy of the
            # global loss and transposes psum to psum, so every device's gradient is D
            # times its block of the global one (plain JAX: lax.psum(jnp.sum(x ** 2)) too).
            np.testing.assert_allclose(v_pm, np.full(D, v), rtol=1e-6, err_msg="pmap value")
            np.testing.assert_allclose(g_pm, D * shards(np.asarray(g)), rtol=1e-6, atol=1e-9,
                                       err_msg="pmap grad")
            results[case] = "ok"
        except Exception as err:
            results[case] = f"{type(err).__name__}: {err}"[:2000]
    print("RESULTS " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def parallel_results():
    return script_results(_PARALLEL_SCRIPT, json.dumps(CASES), timeout=600)


@pytest.mark.parametrize("case", CASES)
def test_reduced_loss_under_shard_map_and_pmap_matches_one_device(parallel_results, case):
    # Each case: jit(value_and_grad(shard_map(...))) on a mesh of 8 CPU devices and
    # pmap(value_and_grad(...)), value and gradient within rtol 1e-6 of the elementwise loss
    # on one device, reduced in float64.
    assert parallel_results[case] == "ok", parallel_results[case]


# ------------------------------------------------------- replicated inputs, summed

_REPLICATED_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import numpy as np, jax, jax.numpy as jnp
    from jax.sharding import PartitionSpec as P
    import jaxbce

    rng = np.random.default_rng(0)
    z = (rng.normal(size=(16, 6)) * 3).astype(np.float32)
    y = (rng.uniform(size=(16, 6)) > 0.5).astype(np.float32)
    h, w = rng.normal(size=(16, 5)).astype(np.float32), rng.normal(size=(5, 6)).astype(np.float32)
    mesh1 = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    mesh2 = jax.make_mesh((2, 4), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    # Each loss of (x, y): x the logits, probabilities or (linear) the features.
    losses = {
        "bce": (z, lambda r, ax: lambda x, y: jaxbce.sigmoid_binary_cross_entropy(
            x, y, reduction=r, axis_name=ax)),
        "probs": (jax.nn.sigmoid(z), lambda r, ax: lambda x, y: jaxbce.binary_cross_entropy(
            x, y, reduction=r, axis_name=ax)),
        "focal": (z, lambda r, ax: lambda x, y: jaxbce.sigmoid_focal_loss(
            x, y, reduction=r, axis_name=ax)),
        "linear": (h, lambda r, ax: lambda x, y: jaxbce.linear_sigmoid_binary_cross_entropy(
            x, w, y, reduction=r, axis_name=ax)),
    }
    # (mesh, axis_name, in_specs of x and y): replicated everywhere, and on a 2-D mesh split
    # over "a" but replicated over "b" while the loss reduces over both.
    layouts = {"1d": (mesh1, "data", P()), "2d": (mesh2, ("a", "b"), P("a"))}
    results = {}
    for name, (x, make) in losses.items():
        for lay, (mesh, ax, spec) in layouts.items():
            for red in ("sum", "mean"):
                key = f"{name}-{lay}-{red}"
                one = jax.value_and_grad(make(red, None))(x, y)
                sm = jax.shard_map(make(red, ax), mesh=mesh, in_specs=(spec, spec),
                                   out_specs=P())
                try:
                    got = jax.jit(jax.value_and_grad(sm))(x, y)
                except ValueError as err:
                    results[key] = "refused: " + str(err)
                    continue
                ok = all(np.allclose(g, o, rtol=1e-6, atol=1e-7) for g, o in zip(got, one))
                results[key] = "ok" if ok else f"{got} against {one} on one device"
    # shard_map(check_vma=False), the batch split: every loss raised TracerBoolConversionError
    # from the checks of its concrete options (label_smoothing=0.0), whatever the reduction.
    for name, (x, make) in losses.items():
        for red in ("sum", "mean"):
            key = f"{name}-untracked-{red}"
            one = jax.value_and_grad(make(red, None))(x, y)
            sm = jax.shard_map(make(red, "data"), mesh=mesh1, in_specs=(P("data"), P("data")),
                               out_specs=P(), check_vma=False)
            try:  # not under jit: there the checks had met no shard_map tracer
                got = jax.value_and_grad(sm)(x, y)
            except Exception as err:
                results[key] = f"{type(err).__name__}: {err}"[:300]
                continue
            # Without the types, the gradient of a replicated-out loss is not summed by
            # shard_map: the value is compared, and the gradient's finiteness.
            ok = np.allclose(got[0], one[0], rtol=1e-6) and np.all(np.isfinite(got[1]))
            results[key] = "ok" if ok else f"{got[0]} against {one[0]} on one device"
    print("RESULTS " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def replicated_results():
    return script_results(_REPLICATED_SCRIPT, timeout=600)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("name", ["bce", "probs", "focal", "linear"])
def test_losses_run_inside_shard_map_without_varying_axis_types(
    replicated_results, name, reduction
):
    """``shard_map(..., check_vma=False)`` called outside ``jit``: every loss raised
    TracerBoolConversionError from checking its concrete options (``value_check``'s
    ``bool`` of a ``ShardMapTracer``, which ``ensure_compile_time_eval`` did not avoid
    there; found reviewing 2026-11-27's changes); the checks of concrete values run in
    NumPy on the host now. The value is the one-device loss."""
    assert replicated_results[f"{name}-untracked-{reduction}"] == "ok"


@pytest.mark.parametrize("layout", ["1d", "2d"])
@pytest.mark.parametrize("name", ["bce", "probs", "focal", "linear"])
def test_a_sum_over_devices_of_replicated_inputs_is_refused(replicated_results, name, layout):
    """``reduction="sum"`` with ``axis_name`` inside ``shard_map``, the inputs replicated
    along a summed axis: every device's sum is the same, and ``psum`` returned 8 times (2-D:
    4 times) the loss with no error (adversarial pass, 2026-11-27). Refused, naming the
    axis. ``"mean"`` divides by a count summed the same way, and is the loss of the batch,
    value and gradient (on the 2-D mesh JAX's ``psum`` had refused it: a sum varying along
    one of the axes and not the other)."""
    axis = "'data'" if layout == "1d" else "'b'"
    assert replicated_results[f"{name}-{layout}-sum"].startswith(
        f"refused: the loss is the same on every device along mesh axis {axis} "
    ), replicated_results[f"{name}-{layout}-sum"]
    assert replicated_results[f"{name}-{layout}-mean"] == "ok"


# ------------------------------------------------- jit over sharded inputs (GSPMD)

#: The fused linear loss (h @ W + b with dense or sparse labels of shape (B, L); its "where"
#: masks a label column): the batch split, W and b replicated, gradients in h, W and b.
LINEAR = ("linear-dense", "linear-sparse")
#: (loss, shape, masked, sharding mode): batches split over 8 devices whose size is not a
#: multiple of 512 (the CPU sum's largest block), under jit with the split left to XLA
#: ("auto": the inputs' NamedSharding) or part of the arrays' types ("explicit": JAX's
#: AxisType.Explicit under jax.set_mesh). The cross-entropy at every shape, masked and not;
#: the other two losses at two shapes; explicit mode at 2-D shapes, where the blocked
#: reshape was refused.
GSPMD_SHAPES = ((64, 1000), (1024, 3), (4000, 7), (8000,), (1000, 13))
GSPMD_CASES = (
    [("bce", shape, masked, "auto") for shape in GSPMD_SHAPES for masked in (False, True)]
    + [(name, shape, True, "auto") for name in ("probs", "focal") for shape in GSPMD_SHAPES[:2]]
    # Large enough (2^14 elements or more) for the focal loss's flat loop in a conditional
    # on CPU (jaxbce._layout): partitioned by XLA, it too must move no batch.
    + [("focal", (8192, 3), True, "auto")]
    + [(name, shape, True, "explicit") for name in LOSSES for shape in ((8, 4096), (64, 1000))]
    + [("bce", (1024, 3), False, "explicit")]
    + [(name, (64, 1000), True, mode) for name in LINEAR for mode in ("auto", "explicit")]
)

_GSPMD_SCRIPT = textwrap.dedent(
    r"""
    import json, os, re, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import numpy as np, jax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import jaxbce

    LOSSES = {"bce": jaxbce.sigmoid_binary_cross_entropy, "probs": jaxbce.binary_cross_entropy,
              "focal": jaxbce.sigmoid_focal_loss}
    MESHES = {mode: jax.make_mesh((8,), ("data",), axis_types=(kind,))
              for mode, kind in (("auto", AxisType.Auto), ("explicit", AxisType.Explicit))}
    COLLECTIVE = re.compile(r"= \w+\[([\d,]*)\][^ ]* (all-gather|all-to-all|collective-permute)")
    results = {}
    for name, shape, masked, mode in json.loads(sys.argv[1]):
        rng = np.random.default_rng(0)
        x = (rng.normal(size=shape) * 3).astype(np.float32)
        if name == "probs":
            x = 1 / (1 + np.exp(-x))
        y = (rng.uniform(size=shape) < 0.3).astype(np.float32)
        m = rng.uniform(size=shape) < 0.8
        def loss(x, y, m, fn=LOSSES.get(name), masked=masked):
            return fn(x, y, where=m if masked else None, reduction="mean")
        specs = (P("data"),) * 3
        if name.startswith("linear"):
            h = rng.normal(size=(shape[0], 16)).astype(np.float32)
            w = (rng.normal(size=(16, shape[1])) * 0.3).astype(np.float32)
            bias = rng.normal(size=shape[1]).astype(np.float32)
            if name == "linear-sparse":
                y = np.where(rng.uniform(size=(shape[0], 5)) < 0.6,
                             rng.integers(0, shape[1], (shape[0], 5)), -1)
            def linear(h, w, b, y):
                return jaxbce.linear_sigmoid_binary_cross_entropy(
                    h, w, y, bias=b, where=np.arange(shape[1]) % 7 > 0, chunk_size=384)
            f = jax.jit(jax.value_and_grad(linear, argnums=(0, 1, 2)))
            x, y, m, specs = (h, w, bias), y, None, (P("data"), P(), P(), P("data"))
        else:
            f = jax.jit(jax.value_and_grad(loss))
            x = (x,)
        args = (*x, y) if m is None else (*x, y, m)
        ref_value, ref_grad = f(*args)
        mesh = MESHES[mode]
        try:
            with jax.set_mesh(mesh):
                sharded = [jax.device_put(a, NamedSharding(mesh, sp)) for a, sp in zip(args, specs)]
                compiled = f.lower(*sharded).compile()
                value, grad = compiled(*sharded)
        except Exception as err:
            results[repr((name, tuple(shape), masked, mode))] = f"{type(err).__name__}: {err}"[:500]
            continue
        moved = [int(np.prod([int(d) for d in dims.split(",") if d]))
                 for dims, _ in COLLECTIVE.findall(compiled.as_text())]
        results[repr((name, tuple(shape), masked, mode))] = {
            "moved": max(moved, default=0),
            "value": abs(float(value) - float(ref_value)) / abs(float(ref_value)),
            "grad": max(float(np.max(np.abs(np.asarray(g) - np.asarray(r)) / (1 + np.abs(r))))
                        for g, r in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad))),
            "grad_sharding": [str(a) for a in jax.tree.leaves(grad)[0].sharding.spec],
        }
    # The pairwise loss pairs every row of a with every row of b: a batch split by its type
    # (explicit) needs axis_name (the ring); without it, a clear refusal.
    a = np.ones((64, 8), np.float32)
    try:
        with jax.set_mesh(MESHES["explicit"]):
            split = jax.device_put(a, NamedSharding(MESHES["explicit"], P("data")))
            jax.jit(lambda a, b: jaxbce.pairwise_sigmoid_loss(a, b, scale=1.0, bias=0.0))(split, a)
        results["pairwise"] = "no error"
    except Exception as err:
        results["pairwise"] = f"{type(err).__name__}: {err}"
    # The fused linear loss takes a split batch only: a kernel split over its labels
    # failed inside JAX (its gradient; the value too for a chunk not dividing L).
    try:
        with jax.set_mesh(MESHES["explicit"]):
            by_labels = NamedSharding(MESHES["explicit"], P(None, "data"))
            w = jax.device_put(np.ones((8, 64), np.float32), by_labels)
            jax.jit(jaxbce.linear_sigmoid_binary_cross_entropy)(a, w, np.ones((64, 64), bool))
        results["linear_kernel_split"] = "no error"
    except Exception as err:
        results["linear_kernel_split"] = f"{type(err).__name__}: {err}"
    print("RESULTS " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def gspmd_results():
    return script_results(_GSPMD_SCRIPT, json.dumps(GSPMD_CASES), timeout=600)


@pytest.mark.parametrize("name, shape, masked, mode", GSPMD_CASES)
def test_reduced_loss_under_jit_with_sharded_inputs_moves_no_batch(
    gspmd_results, name, shape, masked, mode
):
    # jit over inputs sharded on 8 devices, no shard_map: XLA partitions the program. The
    # CPU sum padded the loss to whole blocks of 512, and the partitioner then gathered the
    # whole loss onto every device (64000 elements at (64, 1000)); with explicit sharding its
    # reshape across the split was a ShardingTypeError, as were the fused linear loss' kernel
    # gradient (a product contracting the split batch) and sparse labels (a scatter). Now a
    # collective moves at most a few elements at a block's edge (for the linear loss, the
    # sparse labels' B x 5 indices; W's gradient is added over devices by an all-reduce);
    # value and gradient as on one device.
    got = gspmd_results[repr((name, shape, masked, mode))]
    assert isinstance(got, dict), got
    n = int(np.prod(shape))  # for the linear loss the (B, L) logits, never formed whole
    assert got["moved"] < n // 64, f"a collective moves {got['moved']} of {n} elements"
    assert got["value"] <= 1e-6 and got["grad"] <= 1e-6, got
    assert got["grad_sharding"][:1] == ["data"], got


def test_linear_loss_refuses_a_kernel_split_by_its_type(gspmd_results):
    got = gspmd_results["linear_kernel_split"]
    assert got.startswith("ValueError: kernel is split over mesh axis 'data' by its type"), got


def test_pairwise_loss_refuses_a_batch_split_by_its_type_without_axis_name(gspmd_results):
    # It failed deep inside with JAX's ShardingTypeError about a dot_general or a select.
    assert gspmd_results["pairwise"].startswith(
        "ValueError: a's rows are split over mesh axis 'data' by its type"
    ), gspmd_results["pairwise"]


# ------------------------------------------------------------- symbolic-batch export


def _batch(fn_name, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(batch, 10)) * 3).astype(np.float32)
    if fn_name == "probs":
        x = 1 / (1 + np.exp(-x))
    return x, rng.uniform(size=(batch, 10)) > 0.5, rng.uniform(size=(batch, 10)) > 0.3


#: (masked, reduction, loss): the cross-entropies in every cell; the focal loss, which shares
#: their reduction code and compiles 4x slower (11 s a cell), in half of them: each
#: reduction once, masked once and unmasked once.
EXPORT_CASES = [
    (masked, reduction, name)
    for masked in (False, True)
    for reduction in ("sum", "mean")
    for name in LOSSES
    if name != "focal" or masked == (reduction == "mean")
]


@pytest.mark.parametrize("masked, reduction, fn_name", EXPORT_CASES)
def test_exports_with_a_symbolic_batch_and_runs_at_any_batch(fn_name, reduction, masked):
    fn = LOSSES[fn_name]

    def loss(x, y, m):
        return fn(x, y, where=m if masked else None, reduction=reduction)

    b = jax.export.symbolic_shape("b")[0]
    specs = [jax.ShapeDtypeStruct((b, 10), dt) for dt in (jnp.float32, jnp.bool_, jnp.bool_)]
    value_and_grad = jax.value_and_grad(loss)
    # The value alone (a program of its own: no gradient pass) without a mask; its masked
    # reduction is the one value_and_grad exports.
    programs = {"value_and_grad": value_and_grad, **({} if masked else {"value": loss})}
    exported = {
        name: jax.export.export(jax.jit(g), platforms=["cpu", "cuda", "tpu"])(*specs)
        for name, g in programs.items()
    }
    # Batches of 70 and 3000 elements: neither a multiple of any block size (the value alone
    # at one of them: each call at a new batch compiles). The references at both batches
    # come from one program.
    batches = {batch: _batch(fn_name, batch) for batch in (7, 300)}
    references = jax.jit(lambda b: {n: value_and_grad(*a) for n, a in b.items()})(batches)
    for batch, args in batches.items():
        value, grad = references[batch]
        if batch == 300 and "value" in exported:
            np.testing.assert_allclose(exported["value"].call(*args), value, rtol=1e-6)
        got_value, got_grad = exported["value_and_grad"].call(*args)
        np.testing.assert_allclose(got_value, value, rtol=1e-6)
        np.testing.assert_allclose(got_grad, grad, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("classes", [1000, 7])
def test_a_symbolic_batch_is_summed_in_blocks_of_its_static_factor(classes):
    # (b, 1000): the CPU sum's blocks divide the static 1000 (blocks of 500, whatever b is);
    # (b, 7): no block from 32 up divides 7, the plain sum. Both at odd batches.
    b = jax.export.symbolic_shape("b")[0]
    spec = jax.ShapeDtypeStruct((b, classes), jnp.float32)
    f = jax.value_and_grad(lambda z, y: jaxbce.sigmoid_binary_cross_entropy(z, y, reduction="mean"))
    exported = jax.export.export(jax.jit(f), platforms=["cpu", "cuda"])(spec, spec)
    rng = np.random.default_rng(0)
    for batch in (37, 301):
        z = (rng.normal(size=(batch, classes)) * 3).astype(np.float32)
        y = (rng.uniform(size=(batch, classes)) < 0.3).astype(np.float32)
        z64, y64 = z.astype(np.float64), y.astype(np.float64)
        exact = np.mean(np.maximum(z64, 0) - z64 * y64 + np.log1p(np.exp(-np.abs(z64))))
        value, grad = exported.call(z, y)
        np.testing.assert_allclose(value, exact, rtol=1e-6)
        np.testing.assert_allclose(grad, (1 / (1 + np.exp(-z64)) - y64) / z.size, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_linear_loss_exports_with_a_symbolic_batch(reduction):
    def loss(h, w, y):
        return jaxbce.linear_sigmoid_binary_cross_entropy(h, w, y, reduction=reduction)

    g = jax.value_and_grad(loss, argnums=(0, 1))
    b = jax.export.symbolic_shape("b")[0]
    specs = (
        jax.ShapeDtypeStruct((b, 8), jnp.float32),
        jax.ShapeDtypeStruct((8, 10), jnp.float32),
        jax.ShapeDtypeStruct((b, 10), jnp.bool_),
    )
    exp = jax.export.export(jax.jit(g), platforms=["cpu", "cuda", "tpu"])(*specs)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 10)).astype(np.float32)
    for batch in (7, 300):
        h = rng.normal(size=(batch, 8)).astype(np.float32)
        y = rng.uniform(size=(batch, 10)) > 0.5
        for a, e in zip(
            jax.tree.leaves(exp.call(h, w, y)), jax.tree.leaves(jax.jit(g)(h, w, y)), strict=True
        ):
            np.testing.assert_allclose(a, e, rtol=1e-6, err_msg=f"batch {batch}")
