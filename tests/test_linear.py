"""The fused linear loss against the unfused one, its memory bound, and its transforms.

Reference: ``sigmoid_binary_cross_entropy(features @ kernel + bias, dense_labels, ...)`` and
its autodiff gradients, evaluated in float64. Tolerances:

* float64 against float64: ``rtol=1e-12``. Both evaluate the same formula on the same logits;
  only the order of the sums differs (chunk by chunk here, one reduction there), which moves
  the result by a few ulps of the sum (about 1e-15 relative for these sizes).
* float32 against the float64 reference: ``rtol=2e-5``. Each float32 logit is a dot product
  of d terms (error up to about d ulps, d <= 16 here) and the sums are of up to a few
  hundred terms; 2e-5 is about 170 float32 ulps, ample for both and far below a real bug.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxbce
from jaxbce._linear import default_chunk_size, linear_sigmoid_binary_cross_entropy

B, D, L, K = 8, 6, 30, 5


def _problem(seed: int = 0, batch: int = B, d: int = D, n_labels: int = L, k: int = K):
    """Features, kernel, bias and labels as sparse indices and as the equivalent dense bools.

    Row 0 has duplicate indices, row 1 has none at all (all -1), the rest random positives
    padded with -1.
    """
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(batch, d))
    w = rng.normal(size=(d, n_labels)) / np.sqrt(d) * 3
    b = rng.normal(size=(n_labels,))
    idx = np.full((batch, k), -1, np.int64)
    for r in range(batch):
        n = int(rng.integers(1, k + 1))
        idx[r, :n] = rng.choice(n_labels, n, replace=False)
    idx[0, :2] = idx[0, 2]  # duplicates count once
    idx[1, :] = -1  # a row with no positive label
    dense = np.zeros((batch, n_labels), bool)
    for r in range(batch):
        dense[r, idx[r][idx[r] >= 0]] = True
    return h, w, b, idx, dense


def _option_arrays(options: dict, rng: np.random.Generator, dtype) -> dict:
    """Turns option names in ``options`` into arrays of the shapes they name."""
    shapes = {"L": (L,), "1L": (1, L), "B1": (B, 1), "BL": (B, L), "scalar": ()}
    out = {}
    for name, shape in options.items():
        if name == "label_smoothing":
            out[name] = shape
        elif name == "where":
            out[name] = jnp.asarray(rng.random(shapes[shape]) < 0.7)
        else:
            out[name] = jnp.asarray(rng.uniform(0.3, 3.0, shapes[shape]), dtype)
    return out


def _unfused(h, w, b, labels_dense, reduction, **opts):
    logits = h @ w if b is None else h @ w + b
    return jaxbce.sigmoid_binary_cross_entropy(logits, labels_dense, reduction=reduction, **opts)


def _max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


OPTION_CASES = [
    {},
    {"pos_weight": "L"},
    {"weights": "BL", "where": "BL"},
    {"pos_weight": "B1", "weights": "1L", "label_smoothing": 0.1},
    {"pos_weight": "scalar", "weights": "B1", "where": "1L", "label_smoothing": 0.2},
    {"where": "B1"},
]


#: (chunk_size, reduction, with_bias): C=7 does not divide L=30, C=10 does, C=L is one
#: chunk, None is the automatic size (here clamped to L).
LOOP_CASES = [(7, "mean", True), (10, "sum", True), (30, "mean", False), (None, "sum", True)]

#: Every option set with dense and with sparse labels, each under a different loop case, so
#: that every option, label format and chunking meets (without the full cross product).
MATRIX = [
    (options, sparse, *LOOP_CASES[(i + sparse) % len(LOOP_CASES)])
    for i, options in enumerate(OPTION_CASES)
    for sparse in (False, True)
]


@pytest.mark.parametrize(
    ("options", "sparse", "chunk_size", "reduction", "with_bias"),
    MATRIX,
    ids=[
        f"{'-'.join(o) or 'plain'}-{'sparse' if sp else 'dense'}-C{c}-{r}{'-bias' * wb}"
        for o, sp, c, r, wb in MATRIX
    ],
)
def test_matches_unfused_float64(x64, options, sparse, chunk_size, reduction, with_bias):
    """Value and gradients of features, kernel, bias and float options: within 1e-12."""
    h, w, b, idx, dense = (jnp.asarray(a) for a in _problem())
    b = b if with_bias else None
    opts = _option_arrays(options, np.random.default_rng(1), jnp.float64)
    diff = sorted(k for k in opts if k in ("pos_weight", "weights"))
    labels = idx if sparse else dense

    def fused(h, w, b, *vals):
        return linear_sigmoid_binary_cross_entropy(
            h,
            w,
            labels,
            bias=b,
            reduction=reduction,
            chunk_size=chunk_size,
            **{**opts, **dict(zip(diff, vals, strict=True))},
        )

    def unfused(h, w, b, *vals):
        return _unfused(h, w, b, dense, reduction, **{**opts, **dict(zip(diff, vals, strict=True))})

    args = (h, w, b, *(opts[k] for k in diff))
    argnums = tuple(i for i, a in enumerate(args) if a is not None)
    v1, g1 = jax.jit(jax.value_and_grad(fused, argnums=argnums))(*args)
    v0, g0 = jax.jit(jax.value_and_grad(unfused, argnums=argnums))(*args)
    np.testing.assert_allclose(v1, v0, rtol=1e-12)
    for a, c in zip(g1, g0, strict=True):
        assert a.shape == c.shape
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-15 * float(np.max(np.abs(c))))


@pytest.mark.parametrize(
    "name, value",
    [
        ("pos_weight", 2.0),
        ("weights", 0.5),
        ("pos_weight", np.full((L,), 2.0, np.float32)[:1]),
        ("weights", np.ones((B, 1), np.float32)[:1]),
    ],
    ids=["pos_weight-float", "weights-float", "pos_weight-(1,)", "weights-(1,1)"],
)
def test_a_concrete_one_element_weight_eagerly_and_under_grad(name, value):
    """A one-element ``pos_weight`` or ``weights`` given as a value (the usual
    ``pos_weight=2.0``) raised ConcretizationTypeError from inside the chunk loop, eagerly
    and under an unjitted ``grad`` (adversarial pass, 2026-11-27); within float32 rounding
    of the float64 loss now."""
    h, w, _, _, dense = _problem()
    h32, w32 = h.astype(np.float32), w.astype(np.float32)
    z = h32.astype(np.float64) @ w32.astype(np.float64)
    c = float(np.asarray(value).reshape(()))
    pw, wt = (c, 1.0) if name == "pos_weight" else (1.0, c)
    ref = np.mean(wt * (pw * dense * np.logaddexp(0, -z) + (~dense) * np.logaddexp(0, z)))
    loss = lambda h: linear_sigmoid_binary_cross_entropy(h, w32, dense, **{name: value})
    assert float(loss(h32)) == pytest.approx(ref, rel=1e-6)
    assert np.all(np.isfinite(jax.grad(loss)(h32)))


@pytest.mark.parametrize("which", ["kernel", "features"])
def test_float16_mean_gradients_do_not_overflow_before_the_mean(which):
    """float16 inputs, ``"mean"``: the gradients of the sum were cast to float16 before the
    cotangent scaled them by 1/N, and were inf from 65504 on where the mean's are finite
    (adversarial pass, 2026-11-27). Against float64 on the same float16 inputs."""
    rng = np.random.default_rng(0)
    if which == "kernel":  # a sum over 2^18 rows of about 0.4 (labels 0: dz = 1/2)
        h = np.abs(rng.normal(size=(2**18, 2))).astype(np.float16)
        w = np.zeros((2, 3), np.float16)
    else:  # a sum over 64 labels of kernel entries near 3000
        h = rng.normal(size=(64, 4)).astype(np.float16)
        w = (3000 * rng.normal(size=(4, 64))).astype(np.float16)
    y = rng.random((h.shape[0], w.shape[1])) < (0.0 if which == "kernel" else 0.5)
    grads = jax.grad(lambda h, w: linear_sigmoid_binary_cross_entropy(h, w, y), argnums=(0, 1))(
        h, w
    )
    got = grads[1] if which == "kernel" else grads[0]
    h64, w64 = h.astype(np.float64), w.astype(np.float64)
    dz = (0.5 + 0.5 * np.tanh(0.5 * (h64 @ w64)) - y) / y.size
    ref = h64.T @ dz if which == "kernel" else dz @ w64.T
    assert got.dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=2e-3, atol=1e-6)


def test_a_concrete_pos_weight_closed_over_inside_a_users_scan():
    """The same failure in the elementwise loss inside the user's ``lax.scan``, with a
    concrete 0-d ``pos_weight`` created outside it."""
    z = jnp.asarray(np.random.default_rng(0).normal(size=(3, 11)), jnp.float32)
    pw = jnp.asarray(2.0, jnp.float32)

    def step(total, zz):
        loss = jaxbce.sigmoid_binary_cross_entropy(zz, zz > 0, pos_weight=pw, reduction="sum")
        return total + loss, None

    got = jax.lax.scan(step, jnp.float32(0.0), z)[0]
    zz = np.asarray(z, np.float64)
    ref = np.sum(2.0 * (zz > 0) * np.logaddexp(0, -zz) + (zz <= 0) * np.logaddexp(0, zz))
    assert float(got) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_float32_within_tolerance_of_float64(sparse):
    """float32 value and gradients within 2e-5 of the float64 unfused reference."""
    h, w, b, idx, dense = _problem(seed=3)
    pw = np.random.default_rng(4).uniform(0.5, 2.0, L)

    def fused(h, w, b):
        labels = jnp.asarray(idx, jnp.int32) if sparse else dense
        return linear_sigmoid_binary_cross_entropy(
            h, w, labels, bias=b, pos_weight=pw.astype(np.float32), chunk_size=8
        )

    v1, g1 = jax.value_and_grad(fused, argnums=(0, 1, 2))(
        *(jnp.asarray(a, jnp.float32) for a in (h, w, b))
    )
    with jax.enable_x64(True):
        v0, g0 = jax.value_and_grad(
            lambda h, w, b: _unfused(h, w, b, dense, "mean", pos_weight=pw), argnums=(0, 1, 2)
        )(*(jnp.asarray(a, jnp.float64) for a in (h, w, b)))
        v0, g0 = np.asarray(v0), [np.asarray(g) for g in g0]
    assert v1.dtype == jnp.float32
    np.testing.assert_allclose(v1, v0, rtol=2e-5)
    for a, c in zip(g1, g0, strict=True):
        assert a.dtype == jnp.float32
        assert _max_rel(a, c) < 2e-5


def test_gradients_of_soft_labels_and_traced_label_smoothing(x64):
    """Soft labels and a traced label_smoothing get the unfused gradients too."""
    h, w, b, _, _ = (jnp.asarray(a) for a in _problem(seed=5))
    rng = np.random.default_rng(6)
    y = jnp.asarray(rng.random((B, L)))
    eps = jnp.asarray(0.15)

    def fused(y, eps, h):
        return linear_sigmoid_binary_cross_entropy(
            h, w, y, bias=b, label_smoothing=eps, chunk_size=4, reduction="sum"
        )

    def unfused(y, eps, h):
        return _unfused(h, w, b, y, "sum", label_smoothing=eps)

    g1 = jax.jit(jax.grad(fused, argnums=(0, 1, 2)))(y, eps, h)
    g0 = jax.grad(unfused, argnums=(0, 1, 2))(y, eps, h)
    for a, c in zip(g1, g0, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-14)


def test_sparse_and_dense_labels_agree_exactly():
    """The same loss from (B, K) indices and from the dense matrix, to the bit."""
    h, w, b, idx, dense = _problem(seed=7)
    w, b = np.float32(w), np.float32(b)
    f = jax.jit(
        jax.value_and_grad(
            lambda h, y: linear_sigmoid_binary_cross_entropy(h, w, y, bias=b, chunk_size=9)
        )
    )
    v_sparse, g_sparse = f(np.float32(h), np.int32(idx))
    v_dense, g_dense = f(np.float32(h), dense)
    assert v_sparse == v_dense
    np.testing.assert_array_equal(g_sparse, g_dense)


@pytest.mark.parametrize(
    ("dtype", "batch", "n_labels"),
    [(np.int8, 200, 10), (np.int8, 4, 300), (np.uint8, 4, 300), (np.int16, 200, 300)],
)
def test_sparse_indices_of_narrow_integer_dtypes(dtype, batch, n_labels):
    """int8/uint8/int16 indices give the dense loss, eager and under jit, though the row
    numbers (200) or the label count and chunk starts (300, C = 64) do not fit their dtype:
    rows and chunk starts were computed in it (int8 row 200 failed to trace, a uint8 chunk
    start 256 wrapped to 0 and counted positives twice) and L = 300 was compared as 44."""
    rng = np.random.default_rng(20)
    h = np.float32(rng.normal(size=(batch, D)))
    w = np.float32(rng.normal(size=(D, n_labels)) / np.sqrt(D) * 3)
    top = min(n_labels, int(np.iinfo(dtype).max) + 1)
    idx = np.stack([rng.choice(top, 3, replace=False) for _ in range(batch)]).astype(dtype)
    dense = np.zeros((batch, n_labels), bool)
    np.put_along_axis(dense, idx.astype(np.int64), True, axis=1)
    fn = lambda y: linear_sigmoid_binary_cross_entropy(h, w, y, chunk_size=64)
    expected = fn(dense)
    np.testing.assert_allclose(jax.jit(fn)(idx), expected, rtol=1e-6)
    np.testing.assert_allclose(fn(idx), expected, rtol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 29, 30, 31, 1000])
def test_value_does_not_depend_on_chunk_size(chunk_size):
    """Every chunk size, dividing L or not, larger than L or 1, gives the C = L value."""
    h, w, b, idx, _ = _problem(seed=8)
    f = lambda c: linear_sigmoid_binary_cross_entropy(
        jnp.float32(h), jnp.float32(w), jnp.int32(idx), bias=jnp.float32(b), chunk_size=c
    )
    np.testing.assert_allclose(f(chunk_size), f(L), rtol=2e-6)  # summation order only


@pytest.mark.parametrize("padding", [np.nan, np.inf])
def test_excluded_elements_contribute_nothing_even_if_nan(padding):
    """NaN labels or weights where ``where`` is False, a padding row of NaN or infinite
    features excluded in every column, and a NaN or infinite kernel column and bias entry
    excluded in every row, reach neither value nor gradient (the padding row made the whole
    kernel gradient NaN, as 0 * NaN in features^T @ dlogits; the kernel column, found by an
    adversarial pass on 2026-11-27, the whole features gradient, in dlogits @ kernel^T)."""
    h, w, b, _, dense = _problem(seed=9)
    h, w, b = (jnp.asarray(a, jnp.float32) for a in (h, w, b))
    mask = np.random.default_rng(10).random((B, L)) < 0.5
    mask[0] = False
    mask[:, 3] = False
    padded = h.at[0].set(padding)
    w_padded, b_padded = w.at[:, 3].set(padding), b.at[3].set(padding)
    y = np.where(mask, dense, np.nan).astype(np.float32)
    wt = np.where(mask, 1.0, np.nan).astype(np.float32)
    fn = lambda h, w, b: linear_sigmoid_binary_cross_entropy(
        h, w, y, bias=b, weights=wt, where=mask, chunk_size=7
    )
    ref = lambda h, w, b: _unfused(h, w, b, dense.astype(np.float32), "mean", where=mask)
    v1, g1 = jax.value_and_grad(fn, argnums=(0, 1, 2))(padded, w_padded, b_padded)
    v0, g0 = jax.value_and_grad(ref, argnums=(0, 1, 2))(h, w, b)  # all finite
    np.testing.assert_allclose(v1, v0, rtol=2e-6)
    assert not np.any(g1[0][0]) and not np.any(g0[0][0])
    assert not np.any(g1[1][:, 3]) and not g1[2][3]
    for a, c in zip(g1, g0, strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, c, rtol=2e-5, atol=1e-7)


def test_all_excluded_gives_zero_and_zero_gradients():
    h, w, b, _, dense = (np.float32(a) if a.dtype != bool else a for a in _problem())
    nothing = np.zeros((1, L), bool)
    fn = lambda h, w, b: linear_sigmoid_binary_cross_entropy(h, w, dense, bias=b, where=nothing)
    v, grads = jax.value_and_grad(fn, argnums=(0, 1, 2))(h, w, b)
    assert v == 0.0
    for g in grads:
        assert not np.any(g)


def test_vmap_and_grad_of_shared_kernel(x64):
    """vmap over problems (features and labels) with one kernel, and the kernel's gradient."""
    h, w, b, idx, dense = (jnp.asarray(a) for a in _problem(seed=11))
    hs = jnp.stack([h, 0.5 * h, -h])
    idxs = jnp.stack([idx, idx[::-1], jnp.full_like(idx, -1)])
    denses = jnp.stack([dense, dense[::-1], jnp.zeros_like(dense)])

    def fused(w, hs):
        per = jax.vmap(
            lambda h, y: linear_sigmoid_binary_cross_entropy(h, w, y, bias=b, chunk_size=8)
        )(hs, idxs)
        return jnp.sum(per * jnp.arange(1.0, 4.0)), per

    def unfused(w, hs):
        per = jax.vmap(lambda h, y: _unfused(h, w, b, y, "mean"))(hs, denses)
        return jnp.sum(per * jnp.arange(1.0, 4.0)), per

    (_, per1), g1 = jax.jit(jax.value_and_grad(fused, argnums=(0, 1), has_aux=True))(w, hs)
    (_, per0), g0 = jax.value_and_grad(unfused, argnums=(0, 1), has_aux=True)(w, hs)
    np.testing.assert_allclose(per1, per0, rtol=1e-12)
    for a, c in zip(g1, g0, strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-15)


def test_second_derivatives(x64):
    """hessian (forward over reverse), grad of grad and forward mode (jvp, jacfwd) equal
    the unfused ones."""
    h, w, b, idx, dense = (jnp.asarray(a) for a in _problem(seed=15, batch=4, d=3, n_labels=10))
    fused = lambda h, w: linear_sigmoid_binary_cross_entropy(h, w, idx, bias=b, chunk_size=3)
    unfused = lambda h, w: _unfused(h, w, b, dense, "mean")
    hessian = lambda f: jax.jit(jax.hessian(f))(h, w)
    np.testing.assert_allclose(hessian(fused), hessian(unfused), rtol=1e-12, atol=1e-15)
    outer = lambda f: jax.jit(jax.grad(lambda w: jnp.sum(jax.grad(f)(h, w) ** 2)))(w)
    np.testing.assert_allclose(outer(fused), outer(unfused), rtol=1e-12, atol=1e-15)
    tangents = (jnp.cos(h), jnp.sin(w))
    jvp = lambda f: jax.jit(lambda h, w, th, tw: jax.jvp(f, (h, w), (th, tw)))(h, w, *tangents)
    np.testing.assert_allclose(jvp(fused), jvp(unfused), rtol=1e-12, atol=1e-15)
    jacfwd = lambda f: jax.jit(jax.jacfwd(f, argnums=(0, 1)))(h, w)
    for a, c in zip(jacfwd(fused), jacfwd(unfused), strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-15)


def test_bfloat16_inputs_keep_their_dtype():
    """bfloat16 in, bfloat16 value and gradients out; accumulated in float32."""
    h, w, b, _, dense = _problem(seed=12)
    h, w, b = (jnp.asarray(a, jnp.bfloat16) for a in (h, w, b))
    fn = lambda h, w, b: linear_sigmoid_binary_cross_entropy(h, w, dense, bias=b, chunk_size=8)
    v, grads = jax.value_and_grad(fn, argnums=(0, 1, 2))(h, w, b)
    v0 = _unfused(*(a.astype(jnp.float32) for a in (h, w, b)), dense, "mean")
    assert v.dtype == jnp.bfloat16
    assert [g.dtype for g in grads] == [jnp.bfloat16] * 3
    np.testing.assert_allclose(np.float32(v), v0, rtol=2**-7)  # one bfloat16 rounding


def test_temporary_memory_is_a_small_fraction_and_independent_of_labels():
    """B=1024, d=256, L=2**17: value_and_grad temporaries <= 10% of the unfused version's,
    the same at L=2**16 and L=2**17, and growing with chunk size (compiled, never run)."""
    batch, d = 1024, 256

    def temp_bytes(fn, n_labels):
        shapes = [
            jax.ShapeDtypeStruct(s, t)
            for s, t in [
                ((batch, d), jnp.float32),
                ((d, n_labels), jnp.float32),
                ((n_labels,), jnp.float32),
                ((batch, n_labels), jnp.bool_),
            ]
        ]
        compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2))).lower(*shapes).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    unfused = lambda h, w, b, y: jaxbce.sigmoid_binary_cross_entropy(h @ w + b, y, reduction="mean")

    def fused(chunk):
        return lambda h, w, b, y: linear_sigmoid_binary_cross_entropy(
            h, w, y, bias=b, chunk_size=chunk
        )

    big = 2**17
    base = temp_bytes(unfused, big)
    assert base >= batch * big * 4  # at least the float32 logits
    auto = temp_bytes(fused(None), big)
    assert auto <= 0.10 * base
    assert temp_bytes(fused(None), big // 2) == auto  # grows with the chunk, not with L
    small, large = temp_bytes(fused(512), big), temp_bytes(fused(2048), big)
    assert small < large <= 0.10 * base


def test_default_chunk_size():
    assert default_chunk_size(1024, 2**17) == 1024
    assert default_chunk_size(1, 2**20) == 4096  # capped
    assert default_chunk_size(2**16, 2**20) == 512  # floored
    assert default_chunk_size(1024, 100) == 100  # at most L


def test_runtime_checks_under_checkify():
    """Soft labels outside [0, 1] and sparse indices >= L are reported by with_value_checks."""
    h, w, _, idx, dense = _problem()
    h, w = np.float32(h), np.float32(w)
    fn = jax.jit(jaxbce.with_value_checks(linear_sigmoid_binary_cross_entropy))
    bad = np.where(dense, 1.5, 0.0).astype(np.float32)
    with pytest.raises(checkify.JaxRuntimeError, match=r"labels must lie in \[0, 1\]"):
        fn(h, w, bad)[0].throw()
    with pytest.raises(checkify.JaxRuntimeError, match="below the number of labels"):
        fn(h, w, np.int32(np.where(idx >= 0, idx + L, -1)))[0].throw()
    fn(h, w, np.int32(idx))[0].throw()  # valid: nothing raised
    # Concrete labels are checked at once; traced ones outside with_value_checks carry no effect.
    with pytest.raises(ValueError, match="below the number of labels"):
        linear_sigmoid_binary_cross_entropy(h, w, np.int32(np.where(idx >= 0, idx + L, -1)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        linear_sigmoid_binary_cross_entropy(h, w, bad)
    jaxpr = jax.make_jaxpr(linear_sigmoid_binary_cross_entropy)(h, w, np.int32(idx))
    assert jaxpr.effects == set()


@pytest.mark.parametrize("n_labels", [1, 3])
def test_integer_labels_as_wide_as_the_kernel_are_refused(n_labels):
    """Integer (B, L) labels could be indices or a dense 0/1 matrix: an error, eager and
    under jit, for every L. At L = 1, labels [[0], [1], [1], ...] read as indices made 0 the
    positive and dropped 1 (out of range) under jit: the inverted-label loss, silently.
    Padded with a column of -1 (K = L + 1) they are indices, and equal the dense loss."""
    rng = np.random.default_rng(16)
    h, w = np.float32(rng.normal(size=(B, D))), np.float32(rng.normal(size=(D, n_labels)))
    y01 = rng.integers(0, 2, (B, n_labels)).astype(np.int32)
    fn = lambda y: linear_sigmoid_binary_cross_entropy(h, w, y, chunk_size=2)
    match = rf"labels of shape \({B}, {n_labels}\) and dtype int32 are ambiguous.*bool or float"
    for f in (fn, jax.jit(fn)):
        for y in (y01, np.zeros_like(y01)):
            with pytest.raises(ValueError, match=match):
                f(y)
    idx = np.where(y01 == 1, np.arange(n_labels), -1)
    padded = np.pad(idx, ((0, 0), (0, 1)), constant_values=-1).astype(np.int32)
    np.testing.assert_allclose(jax.jit(fn)(padded), fn(y01.astype(bool)), rtol=1e-6)


#: (labels format, flat index of the bad entry): with C = 7 over L = 30 the dense ones fall
#: in the second chunk (13: flat index 6 within it), in the shifted last chunk (89: row 2,
#: column 29) and in a later row (220); the sparse ones index the (B, K) = (8, 5) indices.
BAD_LABEL_CASES = [(False, 13), (False, 89), (False, 220), (True, 13), (True, 39)]


@pytest.mark.parametrize(("sparse", "flat"), BAD_LABEL_CASES)
def test_value_checks_name_the_bad_label_as_eager_does(sparse, flat):
    """Under jit(with_value_checks(...)), of the loss and of its gradient, a label outside
    [0, 1] or a sparse index >= L is named by its flat index into ``labels`` and its value,
    in the very words of the eager ValueError, whichever chunk it falls in. An excluded bad
    label (flat index 3, where=False) comes first and is not reported."""
    h, w, _, idx, dense = _problem()
    h, w = np.float32(h), np.float32(w)
    where = np.ones((B, L), bool)
    if sparse:
        labels, where = np.int32(idx), None
        labels.flat[flat] = L + 3
    else:
        labels = dense.astype(np.float32)
        labels.flat[3], where.flat[3] = -1.0, False
        labels.flat[flat] = 2.0

    def fn(h, w, y):
        return linear_sigmoid_binary_cross_entropy(h, w, y, where=where, chunk_size=7)

    with pytest.raises(ValueError, match=rf"flat index {flat}, is") as eager:
        fn(h, w, labels)
    for f in (fn, jax.grad(fn)):
        err, _ = jax.jit(jaxbce.with_value_checks(f))(h, w, labels)
        with pytest.raises(checkify.JaxRuntimeError, match=re.escape(str(eager.value))):
            err.throw()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reduction": "none"}, ValueError, r'reduction="none" is not supported'),
        (
            {"reduction": "max"},
            ValueError,
            r"reduction must be one of \('sum', 'mean'\), got 'max'",
        ),
        ({"features": np.zeros((B, D, 1), np.float32)}, ValueError, r"features must have shape"),
        ({"features": np.zeros((B, D), np.int32)}, TypeError, "features must have a real"),
        ({"kernel": np.zeros((D + 1, L), np.float32)}, ValueError, r"kernel must have shape"),
        ({"bias": np.zeros((L + 1,), np.float32)}, ValueError, r"bias must have shape \(30,\)"),
        ({"labels": np.zeros((B, L + 1), bool)}, ValueError, "labels shape"),
        ({"labels": np.zeros((B + 1, K), np.int32)}, ValueError, r"sparse labels .* \(8, K\)"),
        ({"labels": np.zeros((B, L), np.int32)}, ValueError, "ambiguous"),
        ({"pos_weight": np.ones((L + 1,))}, ValueError, "pos_weight of shape"),
        ({"pos_weight": np.full((L,), np.inf)}, ValueError, "pos_weight must be finite"),
        ({"weights": np.full((B, 1), -np.inf)}, ValueError, "weights must be finite"),
        ({"where": np.ones((B, L))}, TypeError, "where must be a boolean mask"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing must be in"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive int"),
        ({"chunk_size": 2.5}, TypeError, "chunk_size must be a positive int"),
    ],
)
def test_argument_errors(kwargs, error, match):
    args = {
        "features": np.zeros((B, D), np.float32),
        "kernel": np.zeros((D, L), np.float32),
        "labels": np.zeros((B, K), np.int32),
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        linear_sigmoid_binary_cross_entropy(**args)


def test_example_trains_and_writes_metrics(tmp_path):
    """examples/extreme_multilabel.py: a few steps, the loss falls, fused == unfused."""
    spec = importlib.util.spec_from_file_location(
        "extreme_multilabel", Path(__file__).parents[1] / "examples" / "extreme_multilabel.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    metrics = example.main(
        [
            "--out",
            str(tmp_path),
            "--steps",
            "12",
            "--labels",
            "1000",
            "--batch-size",
            "64",
            "--train-examples",
            "512",
            "--test-examples",
            "128",
            "--scale-labels",
            "0",
        ]
    )
    assert json.loads((tmp_path / "metrics.json").read_text())["fused"]["p@1"] >= 0
    for name in ("fused", "unfused"):
        curve = metrics["loss_curves"][name]
        assert np.all(np.isfinite(curve))
        assert np.mean(curve[-3:]) < curve[0]
    # Against float64: the fused sum is a float32 tree over 64k elements (about 1e-7);
    # the unfused one over the same 64k also agrees with it to far better than 1e-3.
    assert metrics["fused"]["first_loss_relative_error"] < 1e-6
    assert metrics["max_relative_loss_difference"] < 1e-3
    assert metrics["fused"]["step_memory"]["temp_bytes"] > 0  # (a real ratio needs large L)
    # Another run with other settings into the same --out is refused before it trains; its
    # results replaced the first run's without a word (adversarial pass).
    written = (tmp_path / "metrics.json").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--out", str(tmp_path), "--seed", "7", "--steps", "12"])
    assert exit_info.value.code == 2
    assert (tmp_path / "metrics.json").read_bytes() == written
