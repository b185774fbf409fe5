"""Bad arguments get a clear error that names them, at trace time or under
``with_value_checks``; good ones trace without effects and reuse the compiled loss."""

from __future__ import annotations

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loss_cases import BCE, FOCAL, FUNCTIONS, PROBS
from loss_cases import inputs as _inputs

import jaxbce


def test_mismatched_shapes_name_both_and_refuse_to_broadcast():
    with pytest.raises(
        ValueError, match=re.escape("labels shape (8,) must equal logits shape (8, 1)")
    ):
        BCE(jnp.zeros((8, 1)), jnp.zeros((8,)))
    with pytest.raises(ValueError, match=re.escape("probs shape (2, 3)")):
        PROBS(jnp.zeros((2, 3)), jnp.zeros((3, 2)))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"weights": np.ones((3,))}, ValueError, r"weights of shape \(3,\) does not broadcast"),
        ({"pos_weight": np.ones((2, 2))}, ValueError, r"pos_weight of shape \(2, 2\)"),
        ({"where": np.ones((4, 1), bool)}, ValueError, r"where of shape \(4, 1\)"),
        ({"where": np.ones((2, 5))}, TypeError, "where must be a boolean mask, got dtype float"),
        ({"reduction": "avg"}, ValueError, r"reduction must be one of \('none', 'sum', 'mean'\)"),
        ({"label_smoothing": 1.5}, ValueError, r"label_smoothing must be in \[0.0, 1.0\], got 1.5"),
        ({"label_smoothing": -0.1}, ValueError, "label_smoothing must be in"),
        ({"weights": np.ones((2, 5), complex)}, TypeError, "weights must be a real"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        BCE(jnp.zeros((2, 5)), jnp.zeros((2, 5)), **kwargs)


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize(
    "which, value, seen",
    [
        ("predictions", None, "None"),
        ("labels", None, "None"),
        ("labels", "a", "str"),
        ("weights", [1.0, None], "list"),
    ],
)
def test_a_value_that_is_not_an_array_is_named(fn, which, value, seen):
    """``None`` (alone or in a list) raised JAX's own "None is not a valid value for
    jnp.array", naming no argument (adversarial pass, 2026-11-27)."""
    args = {"predictions": jnp.zeros((2,)), "labels": jnp.zeros((2,))}
    kwargs = {}
    if which == "weights":
        kwargs["weights"] = value
    else:
        args[which] = value
    name = fn.__code__.co_varnames[0] if which == "predictions" else which
    with pytest.raises(TypeError, match=rf"^{name} must be an array, got {seen} "):
        fn(args["predictions"], args["labels"], **kwargs)


@pytest.mark.parametrize("fn, name", [(fn, "weights") for fn in FUNCTIONS] + [(BCE, "pos_weight")])
def test_an_infinite_weight_of_an_included_element_is_refused(fn, name):
    """An infinite weight gave NaN from the cross-entropies (0 * inf where a label makes a
    term 0; PyTorch gives inf, the exact value is inf or undefined) and inf from the focal
    loss; it is refused now, eagerly and under ``with_value_checks``, unless ``where``
    excludes every element it weights (adversarial pass, 2026-11-27)."""
    x, y = _inputs(fn, (3, 4))
    w = np.ones(4, np.float32)
    w[2] = np.inf
    with pytest.raises(ValueError, match=rf"{name} must be finite in float32; .* index 2, is inf"):
        fn(x, y, **{name: w})
    mask = np.ones((3, 4), bool)
    mask[:, 2] = False
    assert np.all(np.isfinite(fn(x, y, **{name: w}, where=mask)))
    f = jax.jit(jaxbce.with_value_checks(lambda x, y, w: fn(x, y, **{name: w})))
    with pytest.raises(Exception, match=rf"{name} must be finite"):
        f(x, y, jnp.asarray(w))[0].throw()


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_non_real_floating_predictions_are_rejected(fn):
    with pytest.raises(TypeError, match=r"must have a real floating dtype.*int32"):
        fn(jnp.zeros((2,), jnp.int32), jnp.zeros((2,)))
    with pytest.raises(TypeError, match="complex dtype complex64"):
        fn(jnp.zeros((2,), jnp.complex64), jnp.zeros((2,)))
    with pytest.raises(TypeError, match="labels must be float, integer or bool"):
        fn(jnp.zeros((2,)), jnp.zeros((2,), jnp.complex64))


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_axis_name_without_a_sum_or_mean_is_refused(fn):
    # It was ignored: reduction="none" returned this device's losses, whatever the caller
    # meant by naming the axis.
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    spec = jax.sharding.PartitionSpec("data")

    def local(z, y):
        return fn(z, y, reduction="none", axis_name="data")

    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec, spec), out_specs=spec))
    with pytest.raises(ValueError, match="axis_name='data' sums over devices, which reduction"):
        sharded(jnp.zeros((4,)), jnp.zeros((4,)))
    with pytest.raises(ValueError, match="reduction='sum' or 'mean'"):
        fn(jnp.zeros((4,)), jnp.zeros((4,)), reduction="none", axis_name="data")


@pytest.mark.parametrize("gamma", [-0.5, float("inf"), float("nan")])
def test_focal_gamma_must_be_finite_and_non_negative(gamma):
    # gamma = inf passed the range check once and gave NaN at every element.
    with pytest.raises(ValueError, match=r"gamma must be a finite number >= 0.0, got"):
        FOCAL(jnp.zeros(2), jnp.zeros(2), gamma=gamma)


@pytest.mark.parametrize("alpha", [1.5, 2.0, float("nan"), float("inf"), -float("inf")])
def test_focal_alpha_above_one_or_not_finite_is_refused(alpha):
    # alpha was not checked: 1.5 gave a negative loss (-1.38 at z = 3, y = 0) and NaN turned
    # the weighting off silently (NaN >= 0 is false).
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], or negative for no"):
        FOCAL(jnp.array([3.0]), jnp.array([0.0]), alpha=alpha)


def test_focal_alpha_traced_above_one_is_caught_with_value_checks():
    f = jax.jit(jaxbce.with_value_checks(lambda z, y, a: FOCAL(z, y, alpha=a)))
    z, y = jnp.array([3.0, -1.0]), jnp.array([0.0, 1.0])
    for fine in (0.0, 0.25, 1.0, -1.0):
        f(z, y, fine)[0].throw()
    err, _ = f(z, y, 1.5)
    with pytest.raises(Exception, match="alpha must be in"):
        err.throw()


@pytest.mark.parametrize(
    "fn, option, value",
    [
        (BCE, "label_smoothing", None),
        (BCE, "label_smoothing", "0.1"),
        (BCE, "label_smoothing", True),
        (jaxbce.binary_cross_entropy, "label_smoothing", None),
        (FOCAL, "gamma", None),
        (FOCAL, "alpha", "0.25"),
    ],
)
def test_a_scalar_option_that_is_not_a_number_is_named(fn, option, value):
    # None or a string failed inside the range check with "'>=' not supported between
    # instances of 'NoneType' and 'float'", naming nothing; True was taken for 1.
    with pytest.raises(TypeError, match=f"^{option} must be a number, got {value!r}$"):
        fn(jnp.full(2, 0.5), jnp.zeros(2), **{option: value})


@pytest.mark.parametrize("shape", [(3,), (5,), (4, 5, 1)])
def test_focal_alpha_must_be_a_scalar(shape):
    # A (C,) alpha broadcast silently as a per-class weight; others gave JAX's bare
    # broadcasting error, which does not name alpha.
    with pytest.raises(ValueError, match=r"alpha must be a scalar, got shape"):
        FOCAL(jnp.zeros((4, 5)), jnp.zeros((4, 5)), alpha=jnp.full(shape, 0.25))


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_labels_outside_unit_interval_are_caught_under_jit_with_value_checks(fn):
    x, y = _inputs(fn, (3, 4))
    bad = y.copy()
    bad[1, 2] = 1.5
    f = jax.jit(jaxbce.with_value_checks(functools.partial(fn, reduction="mean")))
    err, _ = f(x, y)
    err.throw()  # no error for valid labels
    err, _ = f(x, bad)
    with pytest.raises(Exception, match=r"labels must lie in \[0, 1\].*flat index 6, is 1.5"):
        err.throw()
    # ...unless the offending element is masked out.
    mask = np.ones((3, 4), bool)
    mask[1, 2] = False
    g = jax.jit(jaxbce.with_value_checks(lambda x, y: fn(x, y, where=mask, reduction="mean")))
    g(x, bad)[0].throw()


def test_vmap_of_the_checked_loss_names_the_example_in_get():
    """As the docstring of ``with_value_checks`` says: ``err.get()`` names the mapped
    example, ``err.throw()`` does not (it said both did; adversarial pass, 2026-11-27)."""
    f = jaxbce.with_value_checks(BCE)
    y = jnp.zeros((4, 3)).at[2, 1].set(2.0)
    err, _ = jax.vmap(f)(jnp.zeros((4, 3)), y)
    assert err.get().startswith("at mapped index 2: labels must lie in [0, 1]")
    with pytest.raises(Exception, match=r"^labels must lie in \[0, 1\].*flat index 1, is 2.0"):
        err.throw()


def test_traced_label_smoothing_is_checked_under_checkify():
    f = jax.jit(
        jaxbce.with_value_checks(lambda z, y, e: BCE(z, y, label_smoothing=e, reduction="sum"))
    )
    f(jnp.zeros(3), jnp.zeros(3), 0.1)[0].throw()
    with pytest.raises(Exception, match="label_smoothing must be in"):
        f(jnp.zeros(3), jnp.zeros(3), 1.5)[0].throw()


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_concrete_labels_outside_unit_interval_raise_at_once(fn):
    x, y = _inputs(fn, (3, 4))
    bad = y.copy()
    bad[2, 1] = -0.25
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\].*flat index 9, is -0.25"):
        fn(x, bad)
    mask = np.ones((3, 4), bool)
    mask[2, 1] = False
    assert np.isfinite(fn(x, bad, where=mask, reduction="mean"))  # excluded: not an error
    bad_x = x.copy()
    bad_x[0, 0] = 1.5
    if fn is PROBS:
        with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\].*flat index 0, is 1.5"):
            fn(bad_x, y)


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": "traced"}, {"where": "traced", "weights": "traced"}],
    ids=["plain", "traced-smoothing", "traced-mask-weights"],
)
def test_traces_carry_no_effect_outside_with_value_checks(fn, options):
    """A checkify check would put an effect in every jaxpr around the loss and take the
    caller's jit off JAX's C++ dispatch path (a small train step: 107 us a call, not 45)."""
    x, y = _inputs(fn, (3, 4))
    if fn is FOCAL and "label_smoothing" in options:
        options = {"gamma": "traced"}
    names = list(options)

    def loss(x, y, *traced):
        kw = dict(zip(names, traced, strict=True))
        if "where" in kw:
            kw["where"] = kw["where"] > 0.5
        return fn(x, y, reduction="mean", **kw)

    traced = [np.float32(0.1) if n in ("label_smoothing", "gamma") else y for n in names]
    for f in (loss, jax.value_and_grad(loss), jax.hessian(loss)):
        assert jax.make_jaxpr(f)(x, y, *traced).effects == set()


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_new_values_of_traced_arguments_reuse_the_jitted_loss(fn):
    """A jitted loss traces once per shape and dtype: new labels, weights, masks and scalar
    options (``label_smoothing``; ``gamma`` and ``alpha`` of the focal loss) are arguments
    of the compiled program, never constants that force a new trace."""
    x, y = _inputs(fn, (3, 4))
    scalars = ("gamma", "alpha") if fn is FOCAL else ("label_smoothing",)
    chex.clear_trace_counter()  # chex counts traces per definition site: reset for each case

    @jax.jit
    @chex.assert_max_traces(n=1)
    def loss(x, y, w, mask, *values):
        options = dict(zip(scalars, values, strict=True))
        return fn(x, y, weights=w, where=mask, reduction="mean", **options)

    for k, value in enumerate((0.0, 0.1, 0.25)):
        out = loss(x, y, y + k, y > value, *[np.float32(value)] * len(scalars))
        assert np.isfinite(out)
