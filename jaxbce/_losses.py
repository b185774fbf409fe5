"""The public losses: label handling, the compute dtype, and the call of the one kernel.

Each function checks its arguments once, at trace time (:mod:`jaxbce._checks`), then runs
one compiled program (a ``jax.jit`` with the options static) that brings everything to one
shape and one compute dtype (at least float32), calls the single elementwise kernel
:func:`jaxbce._kernels.nll`, and masks and reduces its result (:mod:`jaxbce._reductions`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, ArrayLike, Bool, Float, Real

from jaxbce import _checks as checks
from jaxbce._focal import focal_term
from jaxbce._kernels import Kind, nll, safe_mul
from jaxbce._layout import flat_on_cpu
from jaxbce._reductions import Local, Reduction, finish_reduction, local_reduction, reduce_loss


class _Inputs(NamedTuple):
    """The checked arguments of a loss, as arrays, in their own dtypes and shapes."""

    x: jax.Array  # predictions
    y: jax.Array  # labels (float, integer or bool)
    w: jax.Array | None  # element weights, or None
    pw: jax.Array | None  # positive-class weights, or None
    mask: jax.Array | None  # boolean mask of included elements, or None


class _Prepared(NamedTuple):
    x: jax.Array  # predictions in the compute dtype, excluded elements replaced
    y: jax.Array  # labels in the compute dtype, excluded elements replaced
    w: jax.Array | None  # element weights, broadcast, or None
    pw: jax.Array | None  # positive-class weights, broadcast, or None
    mask: jax.Array | None  # boolean mask of included elements, or None
    out_dtype: Any  # the dtype of the result: that of the predictions


# ------------------------------------------------------------------ shared pipeline


def _check(
    kind: Kind,
    pred_name: str,
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None,
    pos_weight: ArrayLike | None,
    where: ArrayLike | None,
    reduction: str,
    axis_name: Any,
) -> _Inputs:
    """Checks every argument, outside the compiled loss: values that are concrete (an eager
    call) are checked here, at once (:func:`~jaxbce._checks.value_check`)."""
    x = checks.check_predictions(pred_name, predictions)
    shape = x.shape
    y = checks.check_labels(labels, shape, pred_name)
    w = checks.check_broadcast("weights", weights, shape)
    pw = checks.check_broadcast("pos_weight", pos_weight, shape)
    mask = checks.check_broadcast("where", where, shape, boolean=True)
    checks.check_reduction(reduction, axis_name)
    checks.check_unit_interval_values("labels", y, mask)
    checks.check_finite_weights("weights", w, mask, shape)
    checks.check_finite_weights("pos_weight", pw, mask, shape)
    if kind == "probs":
        checks.check_unit_interval_values(pred_name, x, mask)
    return _Inputs(x, y, w, pw, mask)


def _prepare(kind: Kind, a: _Inputs) -> _Prepared:
    """The checked arguments in one shape and the compute dtype, excluded elements replaced."""
    shape = a.x.shape
    dt = checks.compute_dtype(a.x.dtype)
    mask = None if a.mask is None else jnp.broadcast_to(a.mask, shape)

    def fill(v: jax.Array, neutral: float) -> jax.Array:
        # Labels stay in their own (possibly bool/int8) dtype until this convert, which XLA
        # fuses into the loss: no widened copy is ever written to memory.
        v = jnp.broadcast_to(v.astype(dt), shape)
        return v if mask is None else jnp.where(mask, v, jnp.asarray(neutral, dt))

    def fill_option(v: jax.Array | None, neutral: float) -> jax.Array | None:
        return None if v is None else fill(v, neutral)

    # Excluded elements get harmless stand-ins, so NaN or inf there can reach neither the
    # value nor, through 0 * NaN, any gradient.
    x_neutral = 0.5 if kind == "probs" else 0.0
    return _Prepared(
        x=fill(a.x, x_neutral),
        y=fill(a.y, 0.0),
        w=fill_option(a.w, 0.0),
        pw=fill_option(a.pw, 1.0),
        mask=mask,
        out_dtype=a.x.dtype,
    )


def _smoothing(label_smoothing: Any) -> Any:
    """The checked label smoothing: ``None`` when it is a concrete 0."""
    checks.check_scalar_range("label_smoothing", label_smoothing, 0.0, 1.0)
    if checks.is_concrete(label_smoothing) and float(label_smoothing) == 0.0:
        return None
    return label_smoothing


def _fixed_or_traced(value: Any) -> tuple[float | None, Any]:
    """A scalar option as ``(fixed, traced)``: a concrete value becomes a compile-time
    constant of the loss' program (``fixed``, a float), a traced one stays an input.

    A scalar read at run time inside a fused loop stops XLA:CPU from vectorizing it whenever
    the loop splits unevenly between threads (an odd number of elements on 2 threads): the
    eager focal loss took 88.5 ns per element at 2^22 - 1 against 10.3 at 2^22, the
    cross-entropy with label smoothing 46.5 against 4.3 (``benchmarks/eager_odd_sizes.py``).
    A constant is folded into the loop. The cost: an eager call compiles once per value,
    as a call under the user's ``jit`` with a Python float already does.
    """
    if value is None or not checks.is_concrete(value):
        return None, value
    return float(value), None


#: ``weights`` and ``pos_weight`` fixed at compile time (:func:`_fix_weights`), or None.
FixedWeights = tuple[float | None, float | None]


def _fix_weights(a: _Inputs) -> tuple[_Inputs, FixedWeights]:
    """Concrete one-element ``weights`` and ``pos_weight`` (``pos_weight=2.0``) as fixed
    floats (:func:`_fixed_or_traced`: broadcast, they too are a scalar read at run time in
    the loop: 40.3 ns per element at 2^22 - 1 against 4.7 at 2^22 with ``pos_weight=2.0``),
    taken out of the inputs."""
    # Read on the host: inside any trace (a loop body, the fused linear loss' chunks) a jnp
    # reshape of a concrete array is a traced operation, and float() of it failed.
    fixed = tuple(
        float(np.asarray(v).reshape(()))
        if v is not None and checks.is_concrete(v) and v.size == 1
        else None
        for v in (a.w, a.pw)
    )
    w, pw = (None if f is not None else v for f, v in zip(fixed, (a.w, a.pw), strict=True))
    return a._replace(w=w, pw=pw), (fixed[0], fixed[1])


def _unfix_weights(a: _Inputs, fixed: FixedWeights) -> _Inputs:
    """The inputs with their fixed weights back, as constants of the program being traced."""
    w, pw = (v if f is None else jnp.asarray(f) for f, v in zip(fixed, (a.w, a.pw), strict=True))
    return a._replace(w=w, pw=pw)


def _option(fixed: float | None, traced: Any, dtype: Any) -> jax.Array:
    """The option as the kernel reads it: created here, inside the program (and inside any
    conditional of :func:`~jaxbce._layout.flat_on_cpu`), where it is fixed."""
    return jnp.asarray(fixed if fixed is not None else traced, dtype)


# The computation of each loss is one compiled function (the checks above stay outside it,
# where they see concrete values): an eager call runs one program, cached per shape, dtype
# and fixed option values (_fixed_or_traced), instead of dispatching the kernel's hundreds
# of operations one by one (the focal loss took 6 s on its first eager call, 0.1 s on every
# later one); under a user's ``jit``, ``shard_map``, ``vmap`` or export it is inlined.
@partial(jax.jit, static_argnames=("kind", "reduction", "axis_name", "fixed_eps", "fixed_weights"))
def _cross_entropy_program(
    a: _Inputs,
    eps: Any,
    *,
    kind: Kind,
    reduction: str,
    axis_name: Any,
    fixed_eps: float | None,
    fixed_weights: FixedWeights,
) -> jax.Array:
    p = _prepare(kind, _unfix_weights(a, fixed_weights))
    eps = None if eps is None and fixed_eps is None else _option(fixed_eps, eps, p.x.dtype)
    loss = nll(kind, p.x, p.y, eps, p.pw, p.w, reduction != "none")
    return reduce_loss(loss, p.mask, reduction, axis_name, p.out_dtype)


@jax.custom_jvp
def _times_weight(w: jax.Array, loss: jax.Array) -> jax.Array:
    """``w * loss`` with ``0 * inf = 0``: an element of weight 0 is absent, as in the
    cross-entropies' kernel (a wrong answer at an infinite logit made the focal sum NaN).
    The derivatives are those of ``w * loss`` (``d/dw = loss``, ``inf`` there)."""
    return safe_mul(w, loss)


@partial(_times_weight.defjvp, symbolic_zeros=True)
def _times_weight_jvp(
    primals: tuple[jax.Array, jax.Array], tangents: tuple[Any, Any]
) -> tuple[jax.Array, jax.Array]:
    # A weight that is not differentiated has a symbolic zero tangent, skipped here: as an
    # instantiated zero, its 0 * inf made jvp and jacfwd NaN at infinite logits.
    (w, loss), (dw, dl) = primals, tangents
    out = _times_weight(w, loss)
    tangent = jnp.zeros_like(out)
    if not isinstance(dw, SymbolicZero):
        tangent = tangent + dw * loss
    if not isinstance(dl, SymbolicZero):
        tangent = tangent + w * dl
    return out, tangent


@partial(jax.jit, static_argnames=("reduction", "axis_name", "fixed", "fixed_weights"))
def _focal_program(
    a: _Inputs,
    traced: tuple[Any, Any],
    *,
    fixed: tuple[float | None, float | None],
    fixed_weights: FixedWeights,
    reduction: str,
    axis_name: Any,
) -> jax.Array:
    """``fixed`` and ``traced``: ``gamma`` and ``alpha`` (:func:`_fixed_or_traced`); alpha
    < 0 (None) turns the weighting off inside the kernel. Fixed options become constants
    inside :func:`local`, where :func:`~jaxbce._layout.flat_on_cpu` may trace it in a
    conditional (an operand of a conditional is read at run time)."""
    dt = checks.compute_dtype(a.x.dtype)

    def local(operands: tuple[_Inputs, tuple[Any, Any]], flat: bool) -> Local:
        inputs, options = operands
        g, a_t = (_option(f, t, dt) for f, t in zip(fixed, options, strict=True))
        p = _prepare("logits", _unfix_weights(inputs, fixed_weights))
        x, y, w, mask = p.x, p.y, p.w, p.mask
        if flat:  # flat_on_cpu: one loop over every element (jaxbce._layout)
            x, y = x.reshape(-1), y.reshape(-1)
            w, mask = (None if v is None else v.reshape(-1) for v in (w, mask))
        loss = focal_term(x, y, g, a_t)
        if w is not None:
            loss = _times_weight(w, loss)
        return local_reduction(loss, mask, reduction)

    shape, size = a.x.shape, a.x.size
    flat_results: Any = jax.ShapeDtypeStruct((size,), dt)
    if reduction != "none":
        flat_results = (jax.ShapeDtypeStruct((), dt),) * 2
    result = flat_on_cpu(local, (a, traced), shape=shape, flat_results=flat_results)
    return finish_reduction(
        result, reduction, axis_name, size=size, masked=a.mask is not None, out_dtype=a.x.dtype
    )


# ------------------------------------------------------------------- public losses


def _cross_entropy(
    kind: Kind,
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None,
    pos_weight: ArrayLike | None,
    label_smoothing: Any,
    where: ArrayLike | None,
    reduction: str,
    axis_name: Any,
) -> jax.Array:
    """The pipeline of both cross-entropies: check, smooth, the kernel, mask and reduce.

    ``kind`` also names the predictions argument in error messages (``logits``, ``probs``).
    """
    a = _check(
        kind,
        kind,
        predictions,
        labels,
        weights=weights,
        pos_weight=pos_weight,
        where=where,
        reduction=reduction,
        axis_name=axis_name,
    )
    fixed_eps, eps = _fixed_or_traced(_smoothing(label_smoothing))
    a, fixed_weights = _fix_weights(a)
    loss: jax.Array = _cross_entropy_program(
        a,
        eps,
        kind=kind,
        reduction=reduction,
        axis_name=axis_name,
        fixed_eps=fixed_eps,
        fixed_weights=fixed_weights,
    )
    return loss


def sigmoid_binary_cross_entropy(
    logits: Float[ArrayLike, "*shape"],
    labels: Real[ArrayLike, "*shape"] | Bool[ArrayLike, "*shape"],
    *,
    weights: Real[ArrayLike, "*#shape"] | None = None,
    pos_weight: Real[ArrayLike, "*#shape"] | None = None,
    label_smoothing: float | Float[ArrayLike, ""] = 0.0,
    where: Bool[ArrayLike, "*#shape"] | None = None,
    reduction: Reduction = "none",
    axis_name: Any = None,
) -> Float[Array, "*shape"] | Float[Array, ""]:
    """Sigmoid binary cross-entropy on logits, faithfully rounded and stable everywhere.

    .. math::

        \\ell = -w \\bigl[\\, \\pi\\, q \\log \\sigma(z) + (1 - q) \\log(1 - \\sigma(z)) \\bigr]
              = w \\bigl[\\, \\pi\\, q \\operatorname{softplus}(-z)
                         + (1 - q) \\operatorname{softplus}(z) \\bigr],

    with :math:`q = y(1-\\epsilon) + \\epsilon/2` the smoothed label, :math:`\\pi` the
    ``pos_weight`` and :math:`w` the ``weights``. With the defaults this is a drop-in for
    ``optax.sigmoid_binary_cross_entropy(logits, labels)``; with ``pos_weight`` and
    ``weights`` it matches PyTorch's ``BCEWithLogitsLoss``. Its gradient in the logits is
    :math:`w[(\\pi q + 1 - q)\\sigma(z) - \\pi q]` (:math:`\\sigma(z) - y` by default),
    computed so that confident right answers keep their tiny gradients. In float32 the loss
    and this gradient are within one ulp of the exact values for hard labels at every
    float32 logit, within 2 ulp with soft or smoothed labels and 3 with weights (measured
    by ``python -m jaxbce.check --exhaustive``, ``docs/results/check-exhaustive-cpu.txt``,
    whose header says what the unit is).

    Multi-label data: every element is its own binary problem; use ``where`` to exclude
    missing labels rather than guessing them. Unlike optax, ``labels`` must have exactly
    the shape of ``logits``: a (B, 1) against (B,) mismatch is an error, not a (B, B) loss.

    Args:
      logits: real floating array of any shape. float16/bfloat16 are computed in float32
        and the result returned in the input dtype.
      labels: same shape as ``logits``; float (soft labels in [0, 1]), integer or bool.
      weights: element weights that broadcast to ``logits.shape``; an infinite weight of
        an included element is refused.
      pos_weight: weight of the positive term, broadcasting to ``logits.shape`` (a (C,)
        array weights each class on the last axis, as in PyTorch); finite, as ``weights``.
      label_smoothing: :math:`\\epsilon \\in [0, 1]`; labels become
        :math:`y(1-\\epsilon)+\\epsilon/2`.
      where: boolean mask broadcasting to ``logits.shape``; excluded elements contribute
        exactly 0 to the value and every gradient, even where their inputs are NaN.
      reduction: ``"none"`` (elementwise), ``"sum"`` or ``"mean"`` (over included elements;
        0 when none are).
      axis_name: inside ``shard_map``/``pmap``, the mapped axis to sum and count over, so a
        data-parallel "sum"/"mean" equals the single-device one. Refused with
        ``"none"``, which sums nothing.

    Returns:
      The loss in ``logits.dtype``: shaped like ``logits`` for ``"none"``, else a scalar.

    References:
      PyTorch ``torch.nn.BCEWithLogitsLoss``; ``optax.sigmoid_binary_cross_entropy``;
      Szegedy et al., *Rethinking the Inception Architecture*, 2016 (label smoothing).
    """
    return _cross_entropy(
        "logits",
        logits,
        labels,
        weights=weights,
        pos_weight=pos_weight,
        label_smoothing=label_smoothing,
        where=where,
        reduction=reduction,
        axis_name=axis_name,
    )


def binary_cross_entropy(
    probs: Float[ArrayLike, "*shape"],
    labels: Real[ArrayLike, "*shape"] | Bool[ArrayLike, "*shape"],
    *,
    weights: Real[ArrayLike, "*#shape"] | None = None,
    label_smoothing: float | Float[ArrayLike, ""] = 0.0,
    where: Bool[ArrayLike, "*#shape"] | None = None,
    reduction: Reduction = "none",
    axis_name: Any = None,
) -> Float[Array, "*shape"] | Float[Array, ""]:
    """Binary cross-entropy on probabilities, with PyTorch ``BCELoss`` semantics.

    .. math::

        \\ell = -w \\bigl[\\, q \\max(\\log p, -100) + (1 - q) \\max(\\log(1 - p), -100) \\bigr].

    Each log is clamped at -100 as in PyTorch, so :math:`p = 0` or :math:`1` gives a finite
    loss (at most 100 per element) and a finite gradient. The gradient is the exact derivative
    of this clamped function: :math:`-q/p + (1-q)/(1-p)` where no clamp is active, 0 through a
    clamped log (PyTorch instead divides by :math:`\\max(p(1-p), 10^{-12})`, so the two agree
    wherever :math:`p(1-p) > 10^{-12}`). Prefer :func:`sigmoid_binary_cross_entropy` on
    logits when you have them: it is exact where probabilities have already rounded to 0 or 1.

    Args:
      probs: probabilities in [0, 1], real floating dtype.
      labels: same shape as ``probs``; float in [0, 1], integer or bool.
      weights: element weights broadcasting to ``probs.shape``; an infinite weight of an
        included element is refused.
      label_smoothing: :math:`\\epsilon \\in [0, 1]`.
      where: boolean mask of included elements.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.
      axis_name: mapped axis for a global "sum"/"mean" inside ``shard_map``/``pmap``
        (refused with ``"none"``).

    Returns:
      The loss in ``probs.dtype``, elementwise or reduced.

    References:
      PyTorch ``torch.nn.BCELoss``.
    """
    return _cross_entropy(
        "probs",
        probs,
        labels,
        weights=weights,
        pos_weight=None,
        label_smoothing=label_smoothing,
        where=where,
        reduction=reduction,
        axis_name=axis_name,
    )


def sigmoid_focal_loss(
    logits: Float[ArrayLike, "*shape"],
    labels: Real[ArrayLike, "*shape"] | Bool[ArrayLike, "*shape"],
    *,
    alpha: float | Float[ArrayLike, ""] | None = 0.25,
    gamma: float | Float[ArrayLike, ""] = 2.0,
    weights: Real[ArrayLike, "*#shape"] | None = None,
    where: Bool[ArrayLike, "*#shape"] | None = None,
    reduction: Reduction = "none",
    axis_name: Any = None,
) -> Float[Array, "*shape"] | Float[Array, ""]:
    """Sigmoid focal loss (Lin et al.), stable for every ``gamma >= 0`` and every logit.

    .. math::

        \\ell = w\\, \\alpha_t\\, (1 - p_t)^{\\gamma}\\, \\operatorname{BCE}(z, y),\\qquad
        1 - p_t = y\\,\\sigma(-z) + (1 - y)\\,\\sigma(z),\\qquad
        \\alpha_t = \\alpha y + (1 - \\alpha)(1 - y).

    The cross-entropy factor is :func:`sigmoid_binary_cross_entropy`'s kernel. The
    modulating factor is computed from :math:`\\sigma(\\mp z)` directly rather than as
    ``1 - p_t``, so it does not round to 0 at :math:`|z| \\approx 17` and its power has a
    finite derivative for every ``gamma`` (torchvision's and Keras' formulas give NaN
    gradients there for ``gamma < 1``). Where even :math:`\\sigma(-|z|)` underflows, it
    switches to :math:`\\exp(\\gamma \\log(1 - p_t))` with the log taken from softplus. At
    :math:`z = \\pm\\infty` the loss is 0 for a right answer and :math:`+\\infty` otherwise,
    with a finite gradient.

    Args:
      logits: real floating array.
      labels: same shape; float in [0, 1], integer or bool.
      alpha: scalar weight of the positive class in [0, 1]; ``None`` or a negative value
        turns the alpha weighting off (torchvision's convention). Above 1, NaN or infinite:
        refused.
      gamma: scalar focusing exponent, finite and ``>= 0``; 0 gives the (alpha-weighted)
        cross-entropy.
      weights: element weights broadcasting to ``logits.shape``; an infinite weight of an
        included element is refused.
      where: boolean mask of included elements.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.
      axis_name: mapped axis for a global "sum"/"mean" inside ``shard_map``/``pmap``
        (refused with ``"none"``).

    Returns:
      The loss in ``logits.dtype``, elementwise or reduced.

    References:
      Lin et al., *Focal Loss for Dense Object Detection*, 2017;
      ``torchvision.ops.sigmoid_focal_loss``.
    """
    a = _check(
        "logits",
        "logits",
        logits,
        labels,
        weights=weights,
        pos_weight=None,
        where=where,
        reduction=reduction,
        axis_name=axis_name,
    )
    checks.check_scalar_range("gamma", gamma, 0.0, float("inf"))
    if alpha is not None:  # a negative alpha turns the weighting off, as None does
        checks.check_scalar_range(
            "alpha", alpha, -float("inf"), 1.0, "in [0, 1], or negative for no weighting"
        )
    # alpha None turns the weighting off: -1 inside the kernel.
    (g_fixed, g_traced), (a_fixed, a_traced) = map(
        _fixed_or_traced, (gamma, -1.0 if alpha is None else alpha)
    )
    a, fixed_weights = _fix_weights(a)
    loss: jax.Array = _focal_program(
        a,
        (g_traced, a_traced),
        fixed=(g_fixed, a_fixed),
        fixed_weights=fixed_weights,
        reduction=reduction,
        axis_name=axis_name,
    )
    return loss
