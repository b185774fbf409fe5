"""The pairwise sigmoid loss against an independent float64 formula on one device (rings of
1, 2, 4 and 8 simulated devices: tests/test_pairwise_ring.py); its transformations, errors
and memory bound.

Reference: :func:`reference`, plain numpy in float64, ``np.logaddexp(0, -l z)`` for the value
and :math:`-l\\,\\sigma(-l z)` (``scipy.special.expit``) for the logit derivative, with the
chain rule written out. No jaxbce code is involved. Tolerances:

* float64: ``rtol=1e-12`` of the reference (and of the array's largest entry for gradient
  entries that are sums of terms of both signs). Both sides evaluate the same formula; only
  the order of the sums differs (blocks, devices), a few ulps of the sums (about 1e-15).
* float32: errors within ``1e-5`` of the *size* of each result, the sum of the absolute
  values of the terms it adds up (:func:`sizes`), about 80 float32 ulps of it: each logit is
  a d-term dot product and the sums have up to a few hundred terms. A gradient entry is a sum
  of terms of both signs, and with ``"none"``'s random cotangent it can cancel to a small
  fraction of its terms (the bias gradient of seed 0 with ``pair_ids`` is 0.048 out of terms
  summing to 97.6 in absolute value), where an error relative to the result itself measures
  the cancellation, not the sum: rounding each term once makes an error of about one ulp of
  the terms' size, whatever the result (measured: at most 2.5e-7 of the size over 20 seeds,
  every label kind, reduction and block size; 2.5e-5 and 1.9e-5 relative to the results
  themselves for the scale and bias gradients with ``"none"``). The values are sums of
  non-negative terms, so their size is themselves. The sums do not drift with the batch
  either: at B = 4096 (16.8 million terms, blocks of 256 and the default ones) the float32
  bias and scale gradients of ``"sum"`` were within 1.2e-7 of themselves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.special import expit

import jaxbce

B, DIM = 24, 5
LABELS = ("identity", "pair_ids", "where", "both")
REDUCTIONS = ("mean", "sum", "none")


def problem(seed: int = 0, batch: int = B, dim: int = DIM):
    """Embeddings, pair ids with repeats (several captions per image) and a mask."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(batch, dim))
    b = rng.normal(size=(batch, dim))
    ids = rng.integers(0, batch // 2, size=batch)
    where = rng.uniform(size=batch) > 0.25
    return a, b, ids, where


def cotangent(reduction: str, batch: int = B) -> np.ndarray:
    """The output cotangent of a case: a random vector for "none", 1.3 otherwise."""
    if reduction == "none":
        return np.random.default_rng(1).normal(size=batch)
    return np.asarray(1.3)


def reference(a, b, scale, bias, ids, where, reduction, ct):
    """Value and (a, b, scale, bias) cotangents, float64 numpy, written from the paper."""
    n = a.shape[0]
    dot = a @ b.T
    z = scale * dot + bias
    pos = np.eye(n, dtype=bool) if ids is None else ids[:, None] == ids[None, :]
    sign = np.where(pos, 1.0, -1.0)
    m = np.ones((n, n), bool) if where is None else where[:, None] & where[None, :]
    per_anchor = np.where(m, np.logaddexp(0.0, -sign * z), 0.0).sum(axis=1)
    count = n if where is None else int(where.sum())
    if reduction == "none":
        value, weight = per_anchor, ct
    elif reduction == "sum":
        value, weight = per_anchor.sum(), np.full(n, ct)
    else:
        value, weight = per_anchor.sum() / max(count, 1), np.full(n, ct / max(count, 1))
    dz = np.where(m, -sign * expit(-sign * z), 0.0) * weight[:, None]
    grads = (scale * dz @ b, scale * dz.T @ a, np.sum(dz * dot), np.sum(dz))
    return value, grads


def sizes(a, b, scale, bias, ids, where, reduction, ct):
    """The sum of the absolute values of the terms of the value and of each gradient entry:
    :func:`reference` with every term made non-negative, the scale of the rounding errors
    that summing those terms in float32 makes."""
    n = a.shape[0]
    dot = a @ b.T
    pos = np.eye(n, dtype=bool) if ids is None else ids[:, None] == ids[None, :]
    sign = np.where(pos, 1.0, -1.0)
    m = np.ones((n, n), bool) if where is None else where[:, None] & where[None, :]
    value, _ = reference(a, b, scale, bias, ids, where, reduction, ct)  # terms all >= 0
    count = n if where is None else int(where.sum())
    weight = np.abs(ct) if reduction == "none" else np.full(n, abs(ct))
    if reduction == "mean":
        weight = weight / max(count, 1)
    dz = np.where(m, expit(-sign * (scale * dot + bias)), 0.0) * weight[:, None]  # |dz|
    grads = (
        abs(scale) * dz @ np.abs(b),
        abs(scale) * dz.T @ np.abs(a),
        np.sum(dz * np.abs(dot)),
        np.sum(dz),
    )
    return np.abs(value), grads


def kwargs_of(labels: str, ids, where) -> dict:
    return {
        "pair_ids": ids if labels in ("pair_ids", "both") else None,
        "where": where if labels in ("where", "both") else None,
    }


def assert_close(got, want, rtol, what=""):
    got, want = np.asarray(got), np.asarray(want)
    atol = rtol * float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def assert_within_size(got, want, size, rtol, what=""):
    """``|got - want| <= rtol * size`` entry by entry, ``size`` from :func:`sizes`."""
    error = np.abs(np.asarray(got, np.float64) - want)
    assert np.all(error <= rtol * size), f"{what}: error {np.max(error / size):.3g} of the size"


def check_against_reference(value, grads, a, b, scale, bias, kw, reduction, rtol, size=False):
    """Value and gradients against :func:`reference`: relative errors within ``rtol``
    (:func:`assert_close`), or with ``size`` errors within ``rtol`` of each result's size
    (:func:`sizes`), the measure for float32."""
    ct = cotangent(reduction, a.shape[0])
    ids, where = kw.get("pair_ids"), kw.get("where")
    want_value, want_grads = reference(a, b, scale, bias, ids, where, reduction, ct)
    case = f"pair_ids={ids is not None}, where={where is not None}, {reduction}: "
    names = ("value", *(f"gradient of {v}" for v in ("a", "b", "scale", "bias")))
    got, want = (value, *grads), (want_value, *want_grads)
    if size:
        scales = (lambda v, g: (v, *g))(*sizes(a, b, scale, bias, ids, where, reduction, ct))
        for name, x, y, z in zip(names, got, want, scales, strict=True):
            assert_within_size(x, y, z, rtol, case + name)
    else:
        for name, x, y in zip(names, got, want, strict=True):
            assert_close(x, y, rtol, case + name)


# ------------------------------------------------------------------ one device

#: None: the dense (B, B) formula under plain autodiff; 5: blocks of 5 candidates in the
#: custom_vjp, the last one partial (24 = 4 * 5 + 4). One whole block through the
#: custom_vjp is the one-device ring's case (below).
BLOCKS = (None, 5)


CASES = [(labels, red) for labels in LABELS for red in REDUCTIONS]


#: float32: "none" (a random cotangent, gradients that cancel) for every label kind, and
#: the two scalar reductions once; float64 covers every case for exactness.
FLOAT32_CASES = [(labels, "none") for labels in LABELS] + [("both", "sum"), ("both", "mean")]


def every_case(ids, where, block_size, cases=CASES):
    """Value and vjp of each case in one jitted program (one compilation, not twelve):
    ``{(labels, reduction): (value, cotangents)}``."""

    @jax.jit
    def run(a, b, scale, bias):
        out = {}
        for labels, red in cases:
            kw = kwargs_of(labels, ids, where)

            def loss(a, b, scale, bias, red=red, kw=kw):
                return jaxbce.pairwise_sigmoid_loss(
                    a, b, scale=scale, bias=bias, reduction=red, block_size=block_size, **kw
                )

            value, pullback = jax.vjp(loss, a, b, scale, bias)
            out[labels, red] = value, pullback(jnp.asarray(cotangent(red), a.dtype))
        return out

    return run


@pytest.mark.parametrize("block_size", BLOCKS)
def test_matches_reference_float64(x64, block_size):
    a, b, ids, where = problem()
    scale, bias = 2.5, -3.0
    out = every_case(ids, where, block_size)(a, b, scale, bias)
    for labels, red in CASES:
        kw = kwargs_of(labels, ids, where)
        check_against_reference(*out[labels, red], a, b, scale, bias, kw, red, rtol=1e-12)


@pytest.mark.parametrize("block_size", BLOCKS)
def test_matches_reference_float32(block_size):
    # Errors within 1e-5 of each result's size (module docstring).
    a, b, ids, where = problem()
    f32 = [np.float32(v) for v in (a, b, 2.5, -3.0)]
    out = every_case(ids, where, block_size, FLOAT32_CASES)(*f32)
    args = [np.float64(v) for v in f32]  # the reference sees the same rounded inputs
    for labels, red in FLOAT32_CASES:
        value, grads = out[labels, red]
        assert value.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in grads)
        kw = kwargs_of(labels, ids, where)
        check_against_reference(value, grads, *args, kw, red, rtol=1e-5, size=True)


def test_extreme_logits_stay_finite_and_exact(x64):
    # scale 1e4: logits of about +-1e4, where exp overflows; the loss is |z| for a wrong
    # sign and exp(-|z|)-small for a right one, and every gradient is finite.
    a, b, ids, _ = problem(seed=3)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    for block_size in (None, 5):

        def loss(a, b, scale, bias, block_size=block_size):
            return jaxbce.pairwise_sigmoid_loss(
                a, b, scale=scale, bias=bias, pair_ids=ids, block_size=block_size
            )

        value, pullback = jax.jit(lambda *x, loss=loss: jax.vjp(loss, *x))(a, b, 1e4, 2.0)
        grads = pullback(cotangent("mean"))
        assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
        check_against_reference(value, grads, a, b, 1e4, 2.0, {"pair_ids": ids}, "mean", 1e-12)


def test_excluded_rows_take_no_part_even_as_nan(x64):
    # A False row of `where` may hold anything (padding): NaN there changes nothing.
    a, b, _, where = problem()
    a_nan, b_nan = a.copy(), b.copy()
    a_nan[~where], b_nan[~where] = np.nan, np.inf
    for block_size in (None, 5):

        def loss(a, b, block_size=block_size):
            return jaxbce.pairwise_sigmoid_loss(
                a, b, scale=2.0, bias=-1.0, where=where, block_size=block_size
            )

        vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        v, (da, db) = vg(a_nan, b_nan)
        v_ref, (da_ref, db_ref) = vg(a, b)
        np.testing.assert_array_equal(v, v_ref)
        np.testing.assert_array_equal(da, da_ref)
        np.testing.assert_array_equal(db, db_ref)
        assert not np.any(da[~where]) and not np.any(db[~where])


def test_integer_scale_and_bias_are_floats():
    a, b, _, _ = problem()
    a, b = np.float32(a), np.float32(b)
    got = jaxbce.pairwise_sigmoid_loss(a, b, scale=2, bias=0)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, jaxbce.pairwise_sigmoid_loss(a, b, scale=2.0, bias=0.0))


def test_all_excluded_mean_is_zero(x64):
    a, b, _, _ = problem()
    none = np.zeros(B, bool)
    for block_size in (None, 5):
        v = jax.jit(jaxbce.pairwise_sigmoid_loss, static_argnames="block_size")(
            a, b, scale=1.0, bias=0.0, where=none, block_size=block_size
        )
        assert v == 0.0


# --------------------------------------------------------------- transformations


def _loss(block_size):
    def loss(a, b, scale, bias):
        _, _, ids, where = problem()
        return jaxbce.pairwise_sigmoid_loss(
            a, b, scale=scale, bias=bias, pair_ids=ids, where=where, block_size=block_size
        )

    return loss


def test_check_grads_order_2(x64):
    # The dense loss is JAX autodiff through the kernel's custom_jvp (whose derivatives of
    # every order test_curvature checks).
    a, b, _, _ = problem(batch=6, dim=3)
    ids = np.array([0, 1, 1, 2, 3, 3])
    where = np.array([True, True, False, True, True, True])

    def make(block_size):
        def loss(a, b, scale, bias):
            return jaxbce.pairwise_sigmoid_loss(
                a, b, scale=scale, bias=bias, pair_ids=ids, where=where, block_size=block_size
            )

        return jax.jit(loss)  # check_grads calls it many times: compiled once, not eagerly

    args = (a, b, 1.5, -0.5)
    # The blocked "mean" is a custom_jvp: forward and reverse mode to order 2.
    check_grads(make(4), args, order=2)
    # "none" rests on a custom_vjp (per-anchor sums, recomputed in the backward).
    weights = np.linspace(-1.0, 2.0, 6)

    def per_anchor(a, b, scale, bias):
        losses = jaxbce.pairwise_sigmoid_loss(
            a, b, scale=scale, bias=bias, pair_ids=ids, where=where, block_size=4, reduction="none"
        )
        return jnp.vdot(losses, weights)

    check_grads(jax.jit(per_anchor), args, order=2, modes=["rev"])
    check_grads(make(None), args, order=2)


def test_forward_mode_of_blocked_per_anchor_losses_is_refused():
    # "none" keeps a custom_vjp: a JVP rule for the (B,) output would make reverse mode
    # keep every (B, C) block of derivatives as a residual (B x B in all).
    a, b, _, _ = problem()

    def per_anchor(a):
        return jaxbce.pairwise_sigmoid_loss(
            a, b, scale=1.0, bias=0.0, reduction="none", block_size=5
        )

    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(per_anchor, (a,), (a,))


def test_vmap_checkpoint_and_jit_agree(x64):
    a, b, _, _ = problem()
    stack_a = np.stack([a, 2 * a, -a])
    for block_size in (None, 5):
        loss = _loss(block_size)
        vg = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))
        each = [jax.jit(vg)(x, b, 2.0, -1.0) for x in stack_a]
        batched = jax.jit(jax.vmap(vg, in_axes=(0, None, None, None)))(stack_a, b, 2.0, -1.0)
        ckpt = jax.jit(jax.value_and_grad(jax.checkpoint(loss), argnums=(0, 1, 2, 3)))
        for k, single in enumerate(each):
            got = jax.tree.map(lambda v, k=k: v[k], batched)
            for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(single), strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-13)
        for x, y in zip(
            jax.tree.leaves(ckpt(a, b, 2.0, -1.0)), jax.tree.leaves(each[0]), strict=True
        ):
            np.testing.assert_allclose(x, y, rtol=1e-13)


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"b": np.zeros((5, 4))}, ValueError, r"b must have the shape of a.*\(4, 4\).*\(5, 4\)"),
        ({"a": np.zeros(4)}, ValueError, r"a must have shape \(batch, dim\), got shape \(4,\)"),
        ({"scale": np.ones(3)}, ValueError, r"scale must be a scalar.*got shape \(3,\)"),
        ({"bias": np.ones((1,))}, ValueError, r"bias must be a scalar.*got shape \(1,\)"),
        ({"pair_ids": np.arange(3)}, ValueError, r"pair_ids must have shape \(B,\) = \(4,\)"),
        ({"pair_ids": np.ones(4)}, TypeError, "pair_ids must be an integer array.*float"),
        ({"where": np.ones(4, int)}, TypeError, "where must be a boolean mask.*int"),
        ({"where": np.ones(5, bool)}, ValueError, r"where must have shape \(B,\) = \(4,\)"),
        ({"a": np.zeros((4, 4), int)}, TypeError, "a must have a real floating dtype"),
        ({"reduction": "max"}, ValueError, "reduction must be one of"),
        ({"block_size": 0}, ValueError, "block_size must be a positive int"),
        ({"block_size": 2.0}, TypeError, "block_size must be a positive int"),
        ({"axis_name": "data"}, ValueError, "axis_name='data' is not a mapped axis here"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    args = {"a": np.zeros((4, 4)), "b": np.zeros((4, 4)), "scale": 1.0, "bias": 0.0}
    args.update(kwargs)
    a, b = args.pop("a"), args.pop("b")
    with pytest.raises(error, match=message):
        jaxbce.pairwise_sigmoid_loss(a, b, **args)


def test_a_symbolic_batch_is_refused_naming_it():
    # The blocks and the ring are planned for a known batch: jax.export with a symbolic one
    # raised JAX's InconclusiveDimensionOperation ('b^2 <= 4194304'), naming no argument.
    b = jax.export.symbolic_shape("b")[0]
    spec = jax.ShapeDtypeStruct((b, 4), jnp.float32)
    loss = jax.jit(lambda a, c: jaxbce.pairwise_sigmoid_loss(a, c, scale=1.0, bias=0.0))
    with pytest.raises(ValueError, match=r"a and b must have a static batch size.*symbolic"):
        jax.export.export(loss)(spec, spec)
