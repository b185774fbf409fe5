"""Argument checks of the public losses, at trace time, and the opt-in run-time value checks.

The losses check shapes, dtypes and options when they are traced, with errors that name the
argument, what was seen and what was expected. Values that can only be seen at run time
(labels outside [0, 1], a traced ``label_smoothing``) raise a ``ValueError`` at once when the
arrays are concrete (eager calls); traced ones are checked only inside
:func:`with_value_checks`, which traces the function with :func:`jax.experimental.checkify`
``debug_check`` s. They are not emitted otherwise: a checkify check puts an error effect into
the jaxpr, and a jaxpr with effects takes every ``jit`` around it off JAX's fast C++
dispatch path.

This is the internal interface of the checks for :mod:`jaxbce._losses` and
:mod:`jaxbce._linear`; only :func:`with_value_checks` is public.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jax.typing import ArrayLike

from jaxbce._reductions import REDUCTIONS
from jaxbce._sharding import (
    axis_tuple,
    explicit_split_axis,
    replicated_along,
    untracked,
    varying_axes,
)

#: The errors that :func:`with_value_checks` turns on: the library's own value checks.
CHECKED_ERRORS = checkify.user_checks

#: True while :func:`with_value_checks` traces a function: only then are traced values
#: checked.
_RUNTIME_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jaxbce_runtime_checks", default=False
)


@contextlib.contextmanager
def runtime_checks(enabled: bool) -> Iterator[None]:
    """Turns the run-time value checks on or off for the functions traced inside."""
    token = _RUNTIME_CHECKS.set(enabled)
    try:
        yield
    finally:
        _RUNTIME_CHECKS.reset(token)


def is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


def as_array(name: str, value: ArrayLike) -> jax.Array:
    # jnp.asarray raises TypeError for strings and objects, ValueError for None (alone or in
    # a list): both are a value that is not an array, named here.
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError) as err:
        seen = type(value).__name__ if value is not None else "None"
        raise TypeError(f"{name} must be an array, got {seen} ({err})") from err


def check_predictions(name: str, value: ArrayLike) -> jax.Array:
    x = as_array(name, value)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        kind = "complex" if jnp.issubdtype(x.dtype, jnp.complexfloating) else "non-floating"
        raise TypeError(
            f"{name} must have a real floating dtype (float16, bfloat16, float32, float64), "
            f"got {kind} dtype {x.dtype}"
        )
    return x


def check_labels(labels: ArrayLike, shape: tuple[int, ...], pred_name: str) -> jax.Array:
    y = as_array("labels", labels)
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


def check_broadcast(
    name: str, value: ArrayLike | None, shape: tuple[int, ...], *, boolean: bool = False
) -> jax.Array | None:
    if value is None:
        return None
    arr = as_array(name, value)
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


def check_reduction(
    reduction: str, axis_name: Any = None, allowed: tuple[str, ...] = REDUCTIONS
) -> None:
    """``reduction`` is one of ``allowed`` (:data:`~jaxbce._reductions.REDUCTIONS`), and
    ``axis_name`` (which sums over devices) comes with a sum or a mean: with ``"none"`` it
    would do nothing, and a caller who wrote it expects something else."""
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")
    if reduction == "none" and axis_name is not None:
        raise ValueError(
            f"axis_name={axis_name!r} sums over devices, which reduction='none' does not "
            "do: it returns this device's elementwise losses. Omit axis_name, or use "
            "reduction='sum' or 'mean' for the loss over every device"
        )


#: Concrete values up to this size are checked on the host (a scalar option's check was a
#: compiled program per operation); larger ones on their devices (no copy to the host).
_HOST_CHECK_SIZE = 2**16


def value_check(
    checked_values: tuple[Any, ...],
    ok: Callable[..., Any],
    message: str,
    *details: Callable[..., Any],
) -> None:
    """Asserts ``ok(xp, *checked_values)``: a ``ValueError`` now if ``checked_values`` are
    concrete, else a run-time check, emitted only while :func:`with_value_checks` traces
    (nothing otherwise).

    ``ok`` and ``details`` take the array module ``xp`` and the values: ``jax.numpy``, or
    NumPy and the values on the host (concrete values up to :data:`_HOST_CHECK_SIZE`, and
    any whose ``jax.numpy`` check a trace keeps traced: inside ``shard_map(check_vma=False)``
    even ``ensure_compile_time_eval`` gave a tracer, and ``bool`` of it failed for every
    call). A global array of several processes has no host copy and stays on its devices.
    ``message`` has one ``{}`` per entry of ``details``: functions computing the offending
    values, called only when they are needed.
    """
    if all(is_concrete(v) for v in checked_values):
        on_host = all(getattr(v, "is_fully_addressable", True) for v in checked_values)
        small = all(v is None or np.size(v) <= _HOST_CHECK_SIZE for v in checked_values)
        xp: Any = jnp
        values: list[Any] = list(checked_values)
        with jax.ensure_compile_time_eval():
            passed = None if on_host and small else ok(jnp, *values)
            if passed is None or (on_host and isinstance(passed, jax.core.Tracer)):
                # Small values, and values that a trace would not let go (shard_map with
                # check_vma=False), on the host; large ones stay on their devices.
                xp, values = np, [None if v is None else np.asarray(v) for v in values]
                passed = ok(np, *values)
            if not bool(passed):
                found = (np.asarray(d(xp, *values)).item() for d in details)
                raise ValueError(message.format(*found))
    elif _RUNTIME_CHECKS.get():
        traced = checked_values
        checkify.debug_check(ok(jnp, *traced), message, *(d(jnp, *traced) for d in details))


def check_every_element(
    checked_values: tuple[Any, ...], flat_ok: Callable[..., Any], message: str
) -> None:
    """:func:`value_check` that every element of ``flat_ok(xp, *checked_values)``, a flat
    boolean array, holds; ``message``'s two ``{}`` get the first failing flat index and the
    first checked value's element there."""

    def first_bad(xp: Any, *values: Any) -> Any:
        return xp.argmin(flat_ok(xp, *values))

    value_check(
        checked_values,
        lambda xp, *values: xp.all(flat_ok(xp, *values)),
        message,
        first_bad,
        lambda xp, *values: values[0].ravel()[first_bad(xp, *values)],
    )


def check_scalar_range(
    name: str, value: Any, low: float, high: float, expected: str | None = None
) -> None:
    """Checks that a scalar option is a finite number in [low, high] (NaN and infinities are
    refused): now if concrete, else when checks are on. ``expected`` replaces the range in
    the message."""
    dtype = getattr(value, "dtype", None)
    if (
        isinstance(value, bool)
        or dtype == jnp.bool_
        or not (
            isinstance(value, (int, float, np.number))
            or (dtype is not None and jnp.issubdtype(dtype, jnp.number))
        )
    ):  # None, a string, True: '>=' failed with a TypeError naming nothing, or True meant 1
        raise TypeError(f"{name} must be a number, got {value!r}")
    if jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")
    if expected is None:
        expected = f"a finite number >= {low}" if high == float("inf") else f"in [{low}, {high}]"
    value_check(
        (value,),
        lambda xp, v: (v >= low) & (v <= high) & xp.isfinite(v),
        f"{name} must be {expected}, got {{}}",
        lambda xp, v: v,
    )


def check_unit_interval_values(name: str, arr: jax.Array, mask: jax.Array | None) -> None:
    """Checks that no included value is outside [0, 1]: now if concrete, else when checks are on.

    ``mask`` broadcasts to ``arr``'s shape. A NaN is not reported: it propagates to the
    loss, as a NaN logit does.
    """
    if arr.dtype == jnp.bool_ or arr.size == 0:
        return

    def flat_ok(xp: Any, a: Any, m: Any) -> Any:
        ok = ~((a < 0) | (a > 1))
        return (ok if m is None else ok | ~xp.broadcast_to(m, a.shape)).ravel()

    check_every_element(
        (arr, mask),
        flat_ok,
        f"{name} must lie in [0, 1]; the first value outside, at flat index {{}}, is {{}}",
    )


def check_finite_weights(
    name: str, arr: jax.Array | None, mask: jax.Array | None, shape: tuple[int, ...]
) -> None:
    """Checks that no weight of an included element is infinite (now if concrete, else when
    checks are on): an infinite weight has no finite loss, and where a label makes its term
    0 the product is 0 * inf (the cross-entropies returned NaN, PyTorch inf). ``arr`` and
    ``mask`` broadcast to ``shape``; a weight counts if any element it broadcasts to is
    included. A NaN is not reported: it propagates, as a NaN logit does."""
    if arr is None or arr.size == 0:
        return
    lead = len(shape) - arr.ndim
    spread = tuple(k for k in range(len(shape)) if k < lead or arr.shape[k - lead] != shape[k])

    def flat_ok(xp: Any, a: Any, m: Any) -> Any:
        ok = ~xp.isinf(a)
        if m is not None:
            ok = ok | ~xp.any(xp.broadcast_to(m, shape), axis=spread).reshape(a.shape)
        return ok.ravel()

    check_every_element(
        (arr, mask),
        flat_ok,
        f"{name} must be finite in {arr.dtype}; the first infinite value, at flat index {{}}, "
        "is {}",
    )


def check_rows_not_split_by_type(name: str, x: jax.Array) -> None:
    """Refuses a pairwise loss input (``a`` or ``b``) whose rows are split over devices by
    its type (JAX's explicit sharding), without ``axis_name``: every anchor meets every
    candidate, and the blocks are not planned for a split batch (JAX refused them deep
    inside with a ``ShardingTypeError``)."""
    axis = explicit_split_axis(x, (0,))
    if axis is not None:
        raise ValueError(
            f"{name}'s rows are split over mesh axis {axis!r} by its type (explicit "
            "sharding), and without axis_name every anchor is paired with every candidate "
            "of the batch. Call the loss inside jax.shard_map with "
            f"axis_name={axis!r} (a ring of devices that never gathers b; "
            "docs/sharding.rst), or reshard a and b to replicated first"
        )


def check_split_over(name: str, x: jax.Array, axes: tuple[Any, ...], axis_name: Any) -> None:
    """Refuses an ``x`` that is the same on every device along an axis of ``axes`` where
    each device's rows are meant to be its own shard of the batch.

    Seen only where ``shard_map`` tracks which axes values vary over (``check_vma``, its
    default: there ``lax.axis_index`` varies); under ``pmap`` or ``check_vma=False`` no
    value carries that type and nothing can be told.
    """
    missing = replicated_along(x, axes)
    if missing:
        raise ValueError(
            f"{name} is the same on every device along mesh axis {', '.join(map(repr, missing))} "
            f"(replicated, as in_specs P() makes it), but with axis_name={axis_name!r} each "
            f"device's rows are its own shard of the batch: the copies would count as each "
            f"other's negatives. Split the batch over {axis_name!r} (in_specs "
            f"P({axis_name!r})), or omit axis_name for the loss of the batch one device holds"
        )


def check_linear_operands(
    features: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """The fused linear loss' ``(B, d)`` features, ``(d, L)`` kernel and bias (``(L,)``,
    broadcast from a scalar or ``(1,)``), each a real floating array, or a clear error."""
    h = check_predictions("features", features)
    w_mat = check_predictions("kernel", kernel)
    if h.ndim != 2:
        raise ValueError(
            f"features must have shape (batch, in_features), got shape {h.shape}; "
            "use jax.vmap for more batch dimensions"
        )
    if w_mat.ndim != 2 or w_mat.shape[0] != h.shape[1]:
        raise ValueError(
            f"kernel must have shape (in_features, labels) = ({h.shape[1]}, L) to match "
            f"features of shape {h.shape}, got shape {w_mat.shape}"
        )
    n_labels = w_mat.shape[1]
    if n_labels == 0:
        raise ValueError(f"kernel must have at least one label column, got shape {w_mat.shape}")
    # Explicit sharding: the chunked loop is planned for a split batch only (a split kernel
    # or feature axis failed inside JAX with a ShardingTypeError).
    for name, x, dims in (("kernel", w_mat, (0, 1)), ("features", h, (1,))):
        axis = explicit_split_axis(x, dims)
        if axis is not None:
            raise ValueError(
                f"{name} is split over mesh axis {axis!r} by its type (explicit "
                "sharding), which the fused linear loss takes only for the batch (features' "
                "rows and the labels). For a kernel split over its labels call the loss "
                f"inside jax.shard_map with axis_name={axis!r} (docs/sharding.rst), or "
                f"reshard {name} so that only the batch is split"
            )
    if bias is None:
        return h, w_mat, None
    b_vec = check_predictions("bias", bias)
    if b_vec.ndim > 1 or not (b_vec.ndim == 0 or b_vec.shape[0] in (1, n_labels)):
        raise ValueError(
            f"bias must have shape ({n_labels},) (one per kernel column) or be a scalar, "
            f"got shape {b_vec.shape}"
        )
    return h, w_mat, jnp.broadcast_to(b_vec, (n_labels,))


def check_sparse_labels_offset(axes: tuple[Any, ...], axis_name: Any) -> None:
    """Sparse labels with ``axis_name``: whether the kernel's columns are split over an axis
    (and the indices must be offset along it) is read from the kernel's type, which
    ``pmap``, ``vmap`` and ``shard_map(check_vma=False)`` do not give: there a split kernel
    took global indices for local ones, a wrong loss with no error. Refused there."""
    blind = untracked(axes)
    if blind:
        raise ValueError(
            f"sparse labels (integer indices) with axis_name={axis_name!r}: whether the "
            f"kernel's columns are split over {', '.join(map(repr, blind))} (and the indices "
            f"offset along it) is read from shard_map's varying-axis types, which this "
            f"context does not track (shard_map with check_vma=False, pmap or vmap). Call "
            f"the loss inside jax.shard_map with its default check_vma=True (a data-parallel "
            f"pmap with a replicated kernel becomes shard_map with in_specs P(axis) for the "
            f"batch and P() for the kernel), or pass dense (bool or float) labels"
        )


def check_sparse_labels(
    y: jax.Array,
    features_shape: tuple[int, ...],
    n_labels: int,
    n_total: int,
    label_axes: tuple[Any, ...],
) -> None:
    """Integer labels must be (B, K) indices, with K unlike any L they could be dense for,
    and the same on every device that holds other columns of the kernel."""
    n_batch = features_shape[0]
    if y.ndim != 2 or y.shape[0] != n_batch:
        raise ValueError(
            f"sparse labels (integer indices) must have shape (batch, K) = ({n_batch}, K) "
            f"to match features of shape {features_shape}, got shape {y.shape}"
        )
    k = y.shape[1]
    if k in (n_labels, n_total):
        # Dense 0/1 labels read as indices would make 0 positive and drop 1 (L = 1) or mark
        # columns 0 and 1 of every row: a wrong loss, not an error. So K = L is never guessed.
        if not label_axes:
            what = f"the number of labels L = {n_labels} (kernel columns)"
        elif k == n_labels:
            what = (
                f"the number of label columns of this device's kernel shard ({n_labels}; "
                f"{n_total} over the mesh axes {label_axes})"
            )
        else:
            what = f"the number of labels over the mesh axes {label_axes} ({n_total})"
        raise ValueError(
            f"labels of shape {y.shape} and dtype {y.dtype} are ambiguous: integer labels are "
            f"read as sparse positive indices of shape (batch, K), and K = {k} is also {what}, "
            "so they could be a dense 0/1 matrix. Pass dense labels as bool or float "
            "(labels.astype(bool)); pass sparse indices with K != L by padding them with a "
            "column of -1 (jnp.pad(labels, ((0, 0), (0, 1)), constant_values=-1))"
        )
    split = tuple(a for a in label_axes if a in varying_axes(y))
    if split:
        # Each device would count only the positives among its own slice of the indices.
        raise ValueError(
            f"sparse labels hold global label indices and must be the same on every device "
            f"of the mesh axes {label_axes} that split the kernel's columns, but they vary "
            f"over {split}: pass them whole there (a PartitionSpec that names none of "
            f"{split}), or pass dense bool/float labels split like the kernel"
        )
    if y.size:

        def in_range(xp: Any, v: Any) -> Any:  # widened: n_total may not fit an int8
            return (v.astype(jnp.promote_types(v.dtype, jnp.int32)) < n_total).ravel()

        check_every_element(
            (y,),
            in_range,
            f"sparse label indices must be below the number of labels ({n_total}); "
            "the first that is not, at flat index {}, is {}",
        )


def check_linear_arguments(
    labels: ArrayLike,
    pos_weight: ArrayLike | None,
    weights: ArrayLike | None,
    where: ArrayLike | None,
    label_smoothing: Any,
    reduction: Any,
    *,
    features_shape: tuple[Any, ...],
    n_labels: int,
    n_total: Any,
    axis_name: Any,
    label_axes: tuple[Any, ...],
) -> tuple[jax.Array, bool, jax.Array | None, jax.Array | None, jax.Array | None]:
    """The fused linear loss' labels and options, checked: ``(labels, sparse, pos_weight,
    weights, where)``, integer labels (sparse indices) at least int32. ``n_total`` is the
    global label count (``n_labels`` times the devices of ``label_axes``)."""
    shape = (features_shape[0], n_labels)
    axes = () if axis_name is None else axis_tuple(axis_name)
    y = as_array("labels", labels)
    sparse = bool(jnp.issubdtype(y.dtype, jnp.integer))
    if sparse:
        check_sparse_labels_offset(axes, axis_name)
        check_sparse_labels(y, features_shape, n_labels, n_total, label_axes)
        if jnp.iinfo(y.dtype).bits < 32:
            # Row numbers, chunk starts and L itself must fit the indices' dtype: in int8,
            # row 200 and column 300 do not (and would wrap round to other elements).
            y = y.astype(jnp.int32)
    else:
        y = check_labels(y, shape, "features @ kernel")
    pw = check_broadcast("pos_weight", pos_weight, shape)
    wt = check_broadcast("weights", weights, shape)
    mask = check_broadcast("where", where, shape, boolean=True)
    # Checked here, whole (concrete ones at once, traced ones only inside
    # ``with_value_checks``), so that a bad value is reported by its flat index into the
    # user's array, as in eager mode.
    check_finite_weights("weights", wt, mask, shape)
    check_finite_weights("pos_weight", pw, mask, shape)
    if not sparse:
        check_unit_interval_values("labels", y, mask)
    requested: str = reduction  # any string: callers need not be type-checked
    if requested == "none":
        raise ValueError(
            'reduction="none" is not supported by the fused linear loss: it would build the '
            f'(batch, labels) = {shape} loss matrix this function exists to avoid; use "sum" '
            'or "mean", or sigmoid_binary_cross_entropy on the logits'
        )
    check_reduction(reduction, allowed=("sum", "mean"))
    check_scalar_range("label_smoothing", label_smoothing, 0.0, 1.0)
    return y, sparse, pw, wt, mask


def check_chunk_size(chunk_size: Any, n_labels: int) -> int:
    """A positive int (clamped to ``n_labels``); ``None`` is the caller's to resolve."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
    return int(min(chunk_size, n_labels))


def compute_dtype(dtype: Any) -> Any:
    return jnp.promote_types(dtype, jnp.float32)


def with_value_checks(fn: Callable[..., Any]) -> Callable[..., tuple[checkify.Error, Any]]:
    """Wraps a jaxbce loss so that its run-time value checks work under ``jit``: it returns
    ``(error, result)``, and ``error.throw()`` raises for the first bad value.

    Labels outside [0, 1], probabilities outside [0, 1], a traced ``label_smoothing`` or
    ``gamma`` out of range and sparse label indices out of range cannot be seen when the
    arrays are traced. Concrete arrays are checked at once (a ``ValueError``); traced ones
    only while ``with_value_checks`` traces ``fn``, so that plain jitted code carries no checkify
    effect and keeps JAX's fast dispatch::

        loss_fn = jax.jit(jaxbce.with_value_checks(jaxbce.sigmoid_binary_cross_entropy))
        err, loss = loss_fn(logits, labels)
        err.throw()  # JaxRuntimeError naming the first bad label

    A function that was already jitted and called outside ``with_value_checks`` keeps its cached
    trace, which has no checks: wrap the plain function (as above), not a jitted one.

    The index in a message is a flat index into the array the loss was given. Where ``fn``
    ``vmap`` s the loss itself, that is one mapped example's array, and which example's error
    checkify reports is its choice (not necessarily the first); ``jax.vmap`` of
    ``with_value_checks(loss)`` names the example (``at mapped index k``) in ``err.get()``,
    but not in what ``err.throw()`` raises (checkify drops the mapped index there).

    Args:
      fn: any jaxbce loss, or a function that calls one.

    Returns:
      ``checkify.checkify(fn)`` traced with the checks on: a function returning
      ``(error, result)``.
    """
    checkified = checkify.checkify(fn, errors=CHECKED_ERRORS)

    @functools.wraps(fn)
    def with_checks(*args: Any, **kwargs: Any) -> tuple[checkify.Error, Any]:
        with runtime_checks(True):
            return checkified(*args, **kwargs)

    return with_checks
