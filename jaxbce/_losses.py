"""The public losses: argument checks, label handling, masking and reductions.

Each function checks its arguments once, at trace time, brings everything to one shape and
one compute dtype (at least float32), and calls the single elementwise kernel
:func:`jaxbce._kernels.nll`. Values that can only be seen at run time (labels outside
[0, 1], a traced ``label_smoothing``) raise a ``ValueError`` at once when the arrays are
concrete (eager calls). Traced ones are checked only inside :func:`checked`,
which traces the function with :func:`jax.experimental.checkify` ``debug_check`` s. They
are not emitted otherwise: a checkify check puts an error effect into the jaxpr, and a jaxpr
with effects takes every ``jit`` around it off JAX's fast C++ dispatch path (measured on
CPU: 107 microseconds a call for a small training step with checks in its jaxpr, 45
without).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify
from jaxtyping import Array, ArrayLike, Bool, Float, Real

from jaxbce._kernels import Kind, focal_term, nll, safe_mul

Reduction = Literal["none", "sum", "mean"]
REDUCTIONS: tuple[str, ...] = ("none", "sum", "mean")

#: The errors that :func:`checked` turns on: the library's own value checks.
CHECKED_ERRORS = checkify.user_checks

#: True while :func:`checked` traces a function: only then are traced values checked.
_RUNTIME_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jaxbce_runtime_checks", default=False
)


class _Prepared(NamedTuple):
    x: jax.Array  # predictions in the compute dtype, excluded elements replaced
    y: jax.Array  # labels in the compute dtype, excluded elements replaced
    w: jax.Array | None  # element weights, broadcast, or None
    pw: jax.Array | None  # positive-class weights, broadcast, or None
    mask: jax.Array | None  # boolean mask of included elements, or None
    out_dtype: Any  # the dtype of the result: that of the predictions


# --------------------------------------------------------------------------- checks


def _is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _as_array(name: str, value: ArrayLike) -> jax.Array:
    try:
        return jnp.asarray(value)
    except TypeError as err:
        raise TypeError(f"{name} must be an array, got {type(value).__name__}") from err


def _check_predictions(name: str, value: ArrayLike) -> jax.Array:
    x = _as_array(name, value)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        kind = "complex" if jnp.issubdtype(x.dtype, jnp.complexfloating) else "non-floating"
        raise TypeError(
            f"{name} must have a real floating dtype (float16, bfloat16, float32, float64), "
            f"got {kind} dtype {x.dtype}"
        )
    return x


def _check_labels(labels: ArrayLike, shape: tuple[int, ...], pred_name: str) -> jax.Array:
    y = _as_array("labels", labels)
    if not (
        jnp.issubdtype(y.dtype, jnp.floating)
        or jnp.issubdtype(y.dtype, jnp.integer)
        or y.dtype == jnp.bool_
    ):
        raise TypeError(f"labels must be float, integer or bool, got dtype {y.dtype}")
    if y.shape != shape:
        hint = ""
        if len(y.shape) != len(shape):
            hint = (
                " (reshape or squeeze explicitly: a (B, 1) array against a (B,) one"
                " would broadcast to (B, B))"
            )
        raise ValueError(
            f"labels shape {y.shape} must equal {pred_name} shape {shape}; "
            f"labels are never broadcast{hint}"
        )
    return y


def _check_broadcast(
    name: str, value: ArrayLike | None, shape: tuple[int, ...], *, boolean: bool = False
) -> jax.Array | None:
    if value is None:
        return None
    arr = _as_array(name, value)
    if boolean:
        if arr.dtype != jnp.bool_:
            raise TypeError(f"{name} must be a boolean mask, got dtype {arr.dtype}")
    elif not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real float or integer array, got dtype {arr.dtype}")
    try:
        fits = jnp.broadcast_shapes(arr.shape, shape) == shape  # symbolic dims too
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name} of shape {arr.shape} does not broadcast to the loss shape {shape}"
        )
    return arr


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _value_check(
    checked_values: tuple[Any, ...],
    ok: Callable[[], Any],
    message: str,
    *details: Callable[[], Any],
) -> None:
    """Asserts ``ok()``: a ``ValueError`` now if ``checked_values`` are concrete, else a
    run-time check, emitted only while :func:`checked` traces (nothing otherwise).

    ``message`` has one ``{}`` per entry of ``details``: functions computing the offending
    values, called only when they are needed.
    """
    if all(_is_concrete(v) for v in checked_values):
        # Concrete values may still meet a trace (inside jit or hessian): evaluate them now.
        with jax.ensure_compile_time_eval():
            if not bool(ok()):
                raise ValueError(message.format(*(np.asarray(d()).item() for d in details)))
    elif _RUNTIME_CHECKS.get():
        checkify.debug_check(ok(), message, *(d() for d in details))


def _check_scalar_range(name: str, value: Any, low: float, high: float) -> None:
    """Checks a scalar option against [low, high]: now if concrete, else inside ``checked``."""
    if jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")
    _value_check(
        (value,),
        lambda: (value >= low) & (value <= high),
        f"{name} must be in [{low}, {high}], got {{}}",
        lambda: value,
    )


def _check_unit_interval_values(name: str, arr: jax.Array, mask: jax.Array | None) -> None:
    """Checks that no included value is outside [0, 1]: now if concrete, else in ``checked``.

    A NaN is not reported: it propagates to the loss, as a NaN logit does.
    """
    if arr.dtype == jnp.bool_ or arr.size == 0:
        return

    def flat_ok() -> jax.Array:
        ok = ~((arr < 0) | (arr > 1))
        return (ok if mask is None else ok | ~mask).ravel()

    _value_check(
        (arr, mask),
        lambda: jnp.all(flat_ok()),
        f"{name} must lie in [0, 1]; the first value outside, at flat index {{}}, is {{}}",
        lambda: jnp.argmin(flat_ok()),
        lambda: arr.ravel()[jnp.argmin(flat_ok())],
    )


# ------------------------------------------------------------------ shared pipeline


def _compute_dtype(dtype: Any) -> Any:
    return jnp.promote_types(dtype, jnp.float32)


def _prepare(
    kind: Kind,
    pred_name: str,
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None,
    pos_weight: ArrayLike | None,
    where: ArrayLike | None,
    reduction: str,
) -> _Prepared:
    """Checks every argument and returns them in one shape and the compute dtype."""
    x = _check_predictions(pred_name, predictions)
    shape = x.shape
    y = _check_labels(labels, shape, pred_name)
    w = _check_broadcast("weights", weights, shape)
    pw = _check_broadcast("pos_weight", pos_weight, shape)
    mask = _check_broadcast("where", where, shape, boolean=True)
    _check_reduction(reduction)
    dt = _compute_dtype(x.dtype)
    if mask is not None:
        mask = jnp.broadcast_to(mask, shape)
    _check_unit_interval_values("labels", y, mask)
    if kind == "probs":
        _check_unit_interval_values(pred_name, x, mask)

    def fill(a: jax.Array | None, neutral: float) -> jax.Array | None:
        # Labels stay in their own (possibly bool/int8) dtype until this convert, which XLA
        # fuses into the loss: no widened copy is ever written to memory.
        if a is None:
            return None
        a = jnp.broadcast_to(a.astype(dt), shape)
        return a if mask is None else jnp.where(mask, a, jnp.asarray(neutral, dt))

    # Excluded elements get harmless stand-ins, so NaN or inf there can reach neither the
    # value nor, through 0 * NaN, any gradient.
    x_neutral = 0.5 if kind == "probs" else 0.0
    return _Prepared(
        x=fill(x, x_neutral),
        y=fill(y, 0.0),
        w=fill(w, 0.0),
        pw=fill(pw, 1.0),
        mask=mask,
        out_dtype=x.dtype,
    )


def _smoothing(label_smoothing: Any, dtype: Any) -> jax.Array | None:
    """The checked label smoothing for the kernel: ``None`` when it is a concrete 0."""
    _check_scalar_range("label_smoothing", label_smoothing, 0.0, 1.0)
    if _is_concrete(label_smoothing) and float(label_smoothing) == 0.0:
        return None
    return jnp.asarray(label_smoothing, dtype)


def _reduce(
    loss: jax.Array,
    mask: jax.Array | None,
    reduction: str,
    axis_name: Any,
    out_dtype: Any,
) -> jax.Array:
    """Masks, reduces (in the compute dtype) and casts back to the predictions' dtype."""
    if mask is not None:
        loss = jnp.where(mask, loss, 0.0)
    if reduction == "none":
        return loss.astype(out_dtype)
    total, count = _sum_and_count(loss, mask)
    if axis_name is not None:
        total, count = lax.psum((total, count), axis_name)
    # "+ 0 * count" keeps the count alive, and with it XLA:CPU's fused reduction (below).
    total = total + 0.0 * count
    if reduction == "sum":
        return total.astype(out_dtype)
    if mask is None:
        # A static count: the gradient's scale 1/N then does not wait for the reduction,
        # so XLA may compute the value and the gradient in any order, or together.
        # In the loss dtype: 2^31 elements and more overflow int32. A symbolic size
        # (jax.export with a symbolic batch) becomes a value computed from the shape.
        n = jnp.asarray(loss.size, loss.dtype)
        if axis_name is not None:
            n = lax.psum(n, axis_name)
        return (total / jnp.maximum(n, 1.0)).astype(out_dtype)  # an empty batch's mean is 0
    # An all-excluded batch has total 0 and count 0: its mean is 0, not NaN.
    return (total / jnp.maximum(count, 1.0)).astype(out_dtype)


#: Elements summed sequentially before the partial sums are added pairwise.
SUM_BLOCK = 512


def _sum_and_count(loss: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The sum of the loss and the number of included elements, in the loss dtype.

    On CPU (:func:`_blocked_sum_and_count`) a fused two-level variadic reduction; on other
    platforms a plain ``jnp.sum`` (:func:`_plain_sum_and_count`), which their compilers
    fuse with the loss as it is (and a GPU may fuse with the gradient pass beside it).
    ``lax.platform_dependent`` picks one when the function is lowered, so a function
    exported for several platforms carries both: each must trace for every shape, a
    symbolic one included, and the two must return exactly the same types.

    Under ``shard_map`` a type says which mesh axes a value varies over: a loss computed
    from sharded inputs varies, an all-ones count or a replicated mask does not. Counting
    ``ones_like(loss)`` (and the mask together with it) gives the count the loss's type in
    both branches; XLA folds the ``and`` with ones away.
    """
    counted = jnp.ones_like(loss, jnp.bool_)
    if mask is not None:
        counted = counted & mask
    return lax.platform_dependent(
        loss, counted, cpu=_blocked_sum_and_count, default=_plain_sum_and_count
    )


def _plain_sum_and_count(loss: jax.Array, counted: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``jnp.sum`` of the loss and of the boolean ``counted``, the count in the loss dtype.

    The count is exact in int32 below 2^31 elements; beyond, or for a symbolic size that
    might be beyond, it is summed in the loss dtype, which cannot overflow.
    """
    size = loss.size
    exact = not jax.export.is_symbolic_dim(size) and size < 2**31
    count = jnp.sum(counted, dtype=jnp.int32 if exact else loss.dtype)
    return jnp.sum(loss), count.astype(loss.dtype)


def _blocked_sum_and_count(loss: jax.Array, counted: jax.Array) -> tuple[jax.Array, jax.Array]:
    """XLA:CPU's sum of the loss and of the boolean ``counted``, reading the loss once.

    Two choices keep this both exact and free of N-sized temporaries:

    * a variadic (sum, count) reduction rather than ``jnp.sum``: XLA:CPU hands a plain float
      sum to an XNNPACK fusion that cannot take the selects of the loss, so the elementwise
      loss would first be written to memory; the variadic reduction stays an ordinary XLA
      fusion that computes the loss on the fly;
    * two levels: XLA's own reduction adds sequentially, which loses ~1e-3 relative
      accuracy over 2^25 elements, so it only sums blocks of ``SUM_BLOCK`` elements (error
      ~1e-5 at worst) and the N / SUM_BLOCK partial sums are added pairwise by ``jnp.sum``.

    The number of blocks is written out rather than left to ``reshape(-1, SUM_BLOCK)``, so
    the padded length is visibly a multiple of ``SUM_BLOCK`` when N is a symbolic dimension
    (``jax.export`` with a symbolic batch size) too.

    A single compensated (TwoSum) reduction would need neither padding nor reshape, but
    XLA:CPU runs a reduction to one scalar as one chain of dependent additions: a
    compensated step makes that chain several times longer, and without renormalising at
    every step the compensation itself loses precision by 2^24 elements.
    """
    flat = loss.reshape(-1)
    n = flat.shape[0]
    n_blocks = (n + SUM_BLOCK - 1) // SUM_BLOCK
    # Zero padding to whole blocks fuses into the reduction (two slices would not: the
    # loss would then have two consumers and be written to memory).
    pad = n_blocks * SUM_BLOCK - n
    blocks = (n_blocks, SUM_BLOCK)
    sums, counts = _variadic_sum(
        jnp.pad(flat, (0, pad)).reshape(blocks),
        jnp.pad(counted.reshape(-1).astype(jnp.int32), (0, pad)).reshape(blocks),
    )
    return jnp.sum(sums), jnp.sum(counts)


@jax.custom_jvp
def _variadic_sum(loss: jax.Array, counted: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sums ``loss`` and ``counted`` over their last axis in one variadic reduction."""
    total, count = lax.reduce(
        (loss, counted),
        (jnp.zeros((), loss.dtype), jnp.int32(0)),
        lambda a, b: (a[0] + b[0], a[1] + b[1]),
        (loss.ndim - 1,),
    )
    return total, count.astype(loss.dtype)


@_variadic_sum.defjvp
def _variadic_sum_jvp(primals, tangents):
    # JAX's own JVP of a variadic reduce with an integer operand fails; the sum is linear
    # and the count constant.
    total, count = _variadic_sum(*primals)
    return (total, count), (jnp.sum(tangents[0], axis=-1), 0.0 * count)


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
    p = _prepare(
        kind, kind, predictions, labels,
        weights=weights, pos_weight=pos_weight, where=where, reduction=reduction,
    )  # fmt: skip
    eps = _smoothing(label_smoothing, p.x.dtype)
    loss = nll(kind, p.x, p.y, eps, p.pw, p.w, reduction != "none")
    return _reduce(loss, p.mask, reduction, axis_name, p.out_dtype)


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
    """Sigmoid binary cross-entropy on logits, exact to the last bit and stable everywhere.

    .. math::

        \\ell = -w \\bigl[\\, \\pi\\, q \\log \\sigma(z) + (1 - q) \\log(1 - \\sigma(z)) \\bigr]
              = w \\bigl[\\, \\pi\\, q \\operatorname{softplus}(-z)
                         + (1 - q) \\operatorname{softplus}(z) \\bigr],

    with :math:`q = y(1-\\epsilon) + \\epsilon/2` the smoothed label, :math:`\\pi` the
    ``pos_weight`` and :math:`w` the ``weights``. With the defaults this is a drop-in for
    ``optax.sigmoid_binary_cross_entropy(logits, labels)``; with ``pos_weight`` and
    ``weights`` it matches PyTorch's ``BCEWithLogitsLoss``. Its gradient in the logits is
    :math:`w[(\\pi q + 1 - q)\\sigma(z) - \\pi q]` (:math:`\\sigma(z) - y` by default),
    computed so that confident right answers keep their tiny gradients.

    Multi-label data: every element is its own binary problem; use ``where`` to exclude
    missing labels rather than guessing them. Unlike optax, ``labels`` must have exactly
    the shape of ``logits``: a (B, 1) against (B,) mismatch is an error, not a (B, B) loss.

    Args:
      logits: real floating array of any shape. float16/bfloat16 are computed in float32
        and the result returned in the input dtype.
      labels: same shape as ``logits``; float (soft labels in [0, 1]), integer or bool.
      weights: element weights that broadcast to ``logits.shape``.
      pos_weight: weight of the positive term, broadcasting to ``logits.shape`` (a (C,)
        array weights each class on the last axis, as in PyTorch).
      label_smoothing: :math:`\\epsilon \\in [0, 1]`; labels become
        :math:`y(1-\\epsilon)+\\epsilon/2`.
      where: boolean mask broadcasting to ``logits.shape``; excluded elements contribute
        exactly 0 to the value and every gradient, even where their inputs are NaN.
      reduction: ``"none"`` (elementwise), ``"sum"`` or ``"mean"`` (over included elements;
        0 when none are).
      axis_name: inside ``shard_map``/``pmap``, the mapped axis to sum and count over, so a
        data-parallel "sum"/"mean" equals the single-device one.

    Returns:
      The loss in ``logits.dtype``: shaped like ``logits`` for ``"none"``, else a scalar.

    References:
      PyTorch ``torch.nn.BCEWithLogitsLoss``; ``optax.sigmoid_binary_cross_entropy``;
      Szegedy et al., *Rethinking the Inception Architecture*, 2016 (label smoothing).
    """
    return _cross_entropy(
        "logits", logits, labels,
        weights=weights, pos_weight=pos_weight, label_smoothing=label_smoothing,
        where=where, reduction=reduction, axis_name=axis_name,
    )  # fmt: skip


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
      weights: element weights broadcasting to ``probs.shape``.
      label_smoothing: :math:`\\epsilon \\in [0, 1]`.
      where: boolean mask of included elements.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.
      axis_name: mapped axis for a global "sum"/"mean" inside ``shard_map``/``pmap``.

    Returns:
      The loss in ``probs.dtype``, elementwise or reduced.

    References:
      PyTorch ``torch.nn.BCELoss``.
    """
    return _cross_entropy(
        "probs", probs, labels,
        weights=weights, pos_weight=None, label_smoothing=label_smoothing,
        where=where, reduction=reduction, axis_name=axis_name,
    )  # fmt: skip


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
      alpha: weight of the positive class in [0, 1]; ``None`` or a negative value turns the
        alpha weighting off (torchvision's convention).
      gamma: focusing exponent, ``gamma >= 0``; 0 gives the (alpha-weighted) cross-entropy.
      weights: element weights broadcasting to ``logits.shape``.
      where: boolean mask of included elements.
      reduction: ``"none"``, ``"sum"`` or ``"mean"``.
      axis_name: mapped axis for a global "sum"/"mean" inside ``shard_map``/``pmap``.

    Returns:
      The loss in ``logits.dtype``, elementwise or reduced.

    References:
      Lin et al., *Focal Loss for Dense Object Detection*, 2017;
      ``torchvision.ops.sigmoid_focal_loss``.
    """
    p = _prepare(
        "logits", "logits", logits, labels,
        weights=weights, pos_weight=None, where=where, reduction=reduction,
    )  # fmt: skip
    _check_scalar_range("gamma", gamma, 0.0, float("inf"))
    x, y = p.x, p.y
    loss = focal_term(x, y, jnp.asarray(gamma, x.dtype))
    if alpha is not None:
        a = jnp.asarray(alpha, x.dtype)  # in the compute dtype, as every option
        alpha_t = (1.0 - a) + (2.0 * a - 1.0) * y  # one rounded product: no 1 - y
        if _is_concrete(alpha):
            loss = loss if float(alpha) < 0 else safe_mul(alpha_t, loss)
        else:
            loss = jnp.where(alpha >= 0, safe_mul(alpha_t, loss), loss)
    if p.w is not None:
        loss = p.w * loss
    return _reduce(loss, p.mask, reduction, axis_name, p.out_dtype)


def checked(fn: Callable[..., Any]) -> Callable[..., tuple[checkify.Error, Any]]:
    """Wraps a jaxbce loss so that its run-time value checks raise under ``jit``.

    Labels outside [0, 1], probabilities outside [0, 1], a traced ``label_smoothing`` or
    ``gamma`` out of range and sparse label indices out of range cannot be seen when the
    arrays are traced. Concrete arrays are checked at once (a ``ValueError``); traced ones
    only while ``checked`` traces ``fn``, so that plain jitted code carries no checkify
    effect and keeps JAX's fast dispatch::

        loss_fn = jax.jit(jaxbce.checked(jaxbce.sigmoid_binary_cross_entropy))
        err, loss = loss_fn(logits, labels)
        err.throw()  # JaxRuntimeError naming the first bad label

    A function that was already jitted and called outside ``checked`` keeps its cached
    trace, which has no checks: wrap the plain function (as above), not a jitted one.

    Args:
      fn: any jaxbce loss, or a function that calls one.

    Returns:
      ``checkify.checkify(fn)`` traced with the checks on: a function returning
      ``(error, result)``.
    """
    checkified = checkify.checkify(fn, errors=CHECKED_ERRORS)

    @functools.wraps(fn)
    def with_checks(*args: Any, **kwargs: Any) -> tuple[checkify.Error, Any]:
        token = _RUNTIME_CHECKS.set(True)
        try:
            return checkified(*args, **kwargs)
        finally:
            _RUNTIME_CHECKS.reset(token)

    return with_checks
