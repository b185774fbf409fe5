"""Fused linear layer and sigmoid binary cross-entropy for very many labels.

Extreme multi-label models end in ``logits = features @ kernel + bias`` of shape (B, L) with
L in the hundreds of thousands or millions. At B = 4096, L = 2**20 the float32 logits alone
are 16 GiB, and plain autodiff keeps them and their gradient alive. This module computes

.. math::

    \\sum_{b, j} m_{bj}\\, w_{bj}\\bigl[\\pi_{bj}\\, q_{bj} \\operatorname{softplus}(-z_{bj})
        + \\bar q_{bj} \\operatorname{softplus}(z_{bj})\\bigr],\\qquad
    z = h W + b,

over chunks of C labels: a loop slices C columns of the kernel, forms the (B, C) logits of
that chunk, evaluates the loss on them with :func:`jaxbce.sigmoid_binary_cross_entropy`
(the library's one formula, :mod:`jaxbce._kernels`), and adds the chunk's sum. Only a (B, C)
slice of logits ever exists.

Gradients. The loss is a scalar, so its derivative is its gradient. A
:func:`jax.custom_jvp` rule therefore computes the gradients in the same pass as the value
(as Liger-Kernel's fused linear cross-entropy does): per chunk, ``d_logits`` comes from the
kernel's own derivative rule, then ``d_features += d_logits @ W_c.T``,
``d_kernel[:, chunk] = features.T @ d_logits`` and ``d_bias[chunk] = d_logits.sum(0)``. That
is three matrix products per chunk, as many as unfused autodiff, where recomputing the chunk
in a backward pass would cost four. The tangent is the inner product of the gradients with
the input tangents: forward mode (``jax.jvp``, ``jacfwd``) works, and reverse mode
transposes the inner product, so the residuals are the gradients themselves (input-sized,
never B x L) and a cotangent only scales them. Only the inputs with a tangent (not a
symbolic zero) get gradients, so a plain ``grad`` in the features and kernel computes
nothing else.

Higher derivatives. The gradient pass is ordinary differentiable JAX (a ``fori_loop`` with a
static trip count, and the kernel's own ``custom_jvp``), so ``jax.hessian`` (forward over
reverse) and grad-of-grad work and match the unfused loss.

The last, partial chunk is not padded (that would copy the whole kernel): its slice is
shifted back to end at column L, and the columns that the previous chunk already covered
are masked out, so they contribute exactly 0 to the value and every gradient.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, NamedTuple, TypeVar, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.sharding import PartitionSpec
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Real

from jaxbce import _checks as checks
from jaxbce._fused import (
    tangent,
    vary,
    whole_call,
    zeros_varying_as,
)
from jaxbce._losses import sigmoid_binary_cross_entropy
from jaxbce._sharding import (
    axis_tuple,
    check_sum_is_split,
    explicit_spec,
    explicit_split_axis,
    varying_axes,
    varying_over,
)

#: Target number of elements of one (B, C) chunk of logits when ``chunk_size=None``.
DEFAULT_CHUNK_ELEMENTS = 2**20
#: Automatic chunk sizes are multiples of 128 columns in [512, 4096]: on CPU a chunk of
#: logits that stays in cache beats one that does not.
_CHUNK_ALIGN, _CHUNK_MIN, _CHUNK_MAX = 128, 512, 4096


class _Static(NamedTuple):
    """Hashable configuration of the chunked loop (the custom rule's non-differentiable part)."""

    n_labels: int  # L: the label columns on this device
    chunk: int  # C: columns per chunk, 1 <= C <= L
    n_chunks: int  # ceil(L / C)
    sparse: bool  # labels are (B, K) positive indices rather than a dense (B, L) array
    label_smoothing: float | None  # the concrete value, or None when passed as an array
    dtype: Any  # compute dtype: float32 or float64


_T = TypeVar("_T")


class _Args(NamedTuple, Generic[_T]):
    """The array arguments of the fused loss, in the shapes the loop expects.

    ``_Args[jax.Array]``; the forward rule also keeps, in the same structure, which of them
    are perturbed (``_Args[bool]``) and their gradients (``_Args[jax.Array | None]``).
    """

    features: _T  # (B, d)
    kernel: _T  # (d, L)
    bias: _T | None  # (L,)
    labels: _T  # dense (B, L) float/bool, or sparse (B, K) indices, 32 bits or more
    pos_weight: _T | None  # (1 or B, 1 or L)
    weights: _T | None  # (1 or B, 1 or L)
    where: _T | None  # (1 or B, 1 or L) bool
    label_smoothing: _T | None  # scalar, when not concrete
    offset: _T | None  # int32 scalar: global index of column 0 (sparse, sharded)


# ------------------------------------------------------------------------ chunking


def default_chunk_size(batch: int, n_labels: int) -> int:
    """The chunk size used when ``chunk_size=None``.

    About :data:`DEFAULT_CHUNK_ELEMENTS` logits per chunk (4 MiB in float32, a few of which
    are live at a time), rounded down to a multiple of 128, kept in [512, 4096] and at most L.

    Args:
      batch: B, the number of rows.
      n_labels: L, the number of label columns.

    Returns:
      The number of label columns per chunk.
    """
    c = DEFAULT_CHUNK_ELEMENTS // max(batch, 1)
    c = min(max(_CHUNK_MIN, c // _CHUNK_ALIGN * _CHUNK_ALIGN), _CHUNK_MAX)
    return int(min(c, n_labels))


def _chunk_start(s: _Static, i: jax.Array) -> jax.Array:
    # The last chunk is shifted back to end at column L (what dynamic_slice would clamp to).
    return jnp.minimum(i * s.chunk, s.n_labels - s.chunk)


@overload
def _columns(s: _Static, a: jax.Array, start: jax.Array) -> jax.Array: ...
@overload
def _columns(s: _Static, a: jax.Array | None, start: jax.Array) -> jax.Array | None: ...
def _columns(s: _Static, a: jax.Array | None, start: jax.Array) -> jax.Array | None:
    """The chunk's columns of a (1 or B, 1 or L) array; a width-1 column broadcasts as is."""
    if a is None or a.shape[-1] == 1:
        return a
    return lax.dynamic_slice_in_dim(a, start, s.chunk, axis=a.ndim - 1)


def _chunk_labels(s: _Static, a: _Args[jax.Array], start: jax.Array) -> jax.Array:
    """The chunk's (B, C) labels: a slice of dense labels, or built from the indices."""
    if not s.sparse:
        return _columns(s, a.labels, start)
    idx = a.labels
    first = start if a.offset is None else start + a.offset
    local = idx - first.astype(idx.dtype)
    inside = (idx >= 0) & (local >= 0) & (local < s.chunk)
    rows = jnp.arange(idx.shape[0], dtype=idx.dtype)[:, None]
    # Out-of-chunk indices point one past the end and are dropped; duplicates set True twice.
    cols = jnp.where(inside, local, s.chunk)
    # Explicit sharding: the chunk is split as the indices' rows.
    split = (
        None if explicit_spec(idx) is None else PartitionSpec(explicit_split_axis(idx, (0,)), None)
    )
    chunk = jnp.zeros((idx.shape[0], s.chunk), jnp.bool_, out_sharding=split)
    return chunk.at[rows, cols].set(True, mode="drop", out_sharding=split)


def _chunk_mask(
    s: _Static, a: _Args[jax.Array], i: jax.Array, start: jax.Array
) -> jax.Array | None:
    """Included elements of the chunk: the user's ``where`` and, in the shifted last chunk,
    only the columns that no earlier chunk covered."""
    mask = _columns(s, a.where, start)
    if s.n_labels % s.chunk:
        fresh = (start + jnp.arange(s.chunk)) >= i * s.chunk
        mask = fresh[None, :] if mask is None else mask & fresh[None, :]
    return mask


def _chunk_logits(
    s: _Static, a: _Args[jax.Array], w_c: jax.Array, b_c: jax.Array | None
) -> jax.Array:
    # The product runs in the inputs' (possibly low-precision) dtype and accumulates in the
    # compute dtype, as XLA's own dot would with preferred_element_type.
    z = jnp.matmul(a.features, w_c, preferred_element_type=s.dtype)
    return z if b_c is None else z + b_c.astype(s.dtype)


def _chunk_loss(
    s: _Static,
    mask: jax.Array | None,
    logits: jax.Array,
    labels: jax.Array,
    pos_weight: jax.Array | None,
    weights: jax.Array | None,
    label_smoothing: jax.Array | None,
) -> jax.Array:
    """The masked sum of the loss over one chunk: the public loss, so the formula lives once.

    The chunk's elementwise loss (excluded elements already 0) is summed with ``jnp.sum``,
    not with the loss's own ``reduction="sum"``: on XLA:CPU the latter's one-pass (sum,
    count) reduction accumulates sequentially, about 1e-6 relative error over a 1M-element
    chunk (3e-3 over 16M elements), where ``jnp.sum``'s tree is at 2e-8. Writing one
    chunk's loss to memory is cheap.
    """
    eps = s.label_smoothing if label_smoothing is None else label_smoothing
    assert eps is not None  # a traced label_smoothing, else the concrete one in ``s``
    # The labels and label_smoothing were checked once, whole, before the loop: a check in
    # here would see one (B, C) chunk and report a flat index into it, not the user's.
    with checks.runtime_checks(False):
        loss = sigmoid_binary_cross_entropy(
            logits,
            labels,
            weights=weights,
            pos_weight=pos_weight,
            label_smoothing=eps,
            where=mask,
        )
    return jnp.sum(loss)


# ------------------------------------------------------------------ the custom_jvp

#: Chunk inputs other than the logits that can carry a gradient.
_CHUNK_DIFF = ("labels", "pos_weight", "weights", "label_smoothing")


def _loop_value(s: _Static, a: _Args[jax.Array]) -> jax.Array:
    """The loss summed over all chunks (the primal: no gradient work at all)."""

    def body(i: jax.Array, total: jax.Array) -> jax.Array:
        start = _chunk_start(s, i)
        w_c = lax.dynamic_slice_in_dim(a.kernel, start, s.chunk, axis=1)
        logits = _chunk_logits(s, a, w_c, _columns(s, a.bias, start))
        loss = _chunk_loss(
            s,
            _chunk_mask(s, a, i, start),
            logits,
            _chunk_labels(s, a, start),
            _columns(s, a.pos_weight, start),
            _columns(s, a.weights, start),
            a.label_smoothing,
        )
        return total + loss

    total: jax.Array = lax.fori_loop(0, s.n_chunks, body, zeros_varying_as((), s.dtype, a.features))
    return total


def _fused_sum_impl(s: _Static, a: _Args[jax.Array]) -> jax.Array:
    return _loop_value(s, a)


_fused_sum = jax.custom_jvp(_fused_sum_impl, nondiff_argnums=(0,))


def _add_columns(s: _Static, buf: jax.Array, part: jax.Array, start: jax.Array) -> jax.Array:
    """``buf[..., chunk] += part`` for a (.., L) buffer, or ``buf += part`` for a width-1 one."""
    part = part.astype(buf.dtype)
    if buf.shape[-1] == 1:
        return buf + part.sum(axis=-1, keepdims=True)
    axis = buf.ndim - 1
    if s.n_labels % s.chunk:  # the shifted last chunk overlaps columns already written
        part = lax.dynamic_slice_in_dim(buf, start, s.chunk, axis=axis) + part
    return lax.dynamic_update_slice_in_dim(buf, part, start, axis=axis)


def _fused_grads(
    s: _Static, want: _Args[bool], a: _Args[jax.Array]
) -> tuple[jax.Array, _Args[jax.Array | None]]:
    """Value and, for every input ``want`` names, its gradient, in one pass."""
    dt = s.dtype
    need_dz = want.features or want.kernel or want.bias

    def zero_grad(name: str, x: jax.Array | None) -> jax.Array | None:
        if x is None or not getattr(want, name):
            return None
        # The kernel's gradient, the one large buffer, is written once per column in the
        # kernel's own dtype (but float16's, see _residual_dtype); the others accumulate in
        # (at least) the compute dtype.
        kept = name == "kernel" and _residual_dtype(x.dtype, dt) == x.dtype
        return zeros_varying_as(x.shape, x.dtype if kept else jnp.promote_types(x.dtype, dt), x)

    zero_grads: list[Any] = [zero_grad(n, v) for n, v in zip(_Args._fields, a, strict=True)]
    init: _Args[jax.Array | None] = _Args(*zero_grads)
    low = jnp.result_type(a.features, a.kernel)  # the dtype of the matrix products

    def body(
        i: jax.Array, carry: tuple[jax.Array, _Args[jax.Array | None]]
    ) -> tuple[jax.Array, _Args[jax.Array | None]]:
        total, grads = carry
        start = _chunk_start(s, i)
        w_c = lax.dynamic_slice_in_dim(a.kernel, start, s.chunk, axis=1)
        logits = _chunk_logits(s, a, w_c, _columns(s, a.bias, start))
        mask = _chunk_mask(s, a, i, start)
        # The chunk's loss as a function of the perturbed chunk inputs only; its derivative
        # comes from the kernel's own rule (jaxbce._kernels.nll_bwd).
        chunk_in: dict[str, jax.Array | None] = {
            "logits": logits,
            "labels": _chunk_labels(s, a, start),
            "pos_weight": _columns(s, a.pos_weight, start),
            "weights": _columns(s, a.weights, start),
            "label_smoothing": a.label_smoothing,
        }
        diff: dict[str, jax.Array | None] = {"logits": logits} if need_dz else {}
        diff.update({k: chunk_in[k] for k in _CHUNK_DIFF if getattr(want, k)})

        def f(d: dict[str, Any]) -> jax.Array:
            inputs: dict[str, Any] = {**chunk_in, **d}
            return _chunk_loss(s, mask, **inputs)

        if not diff:  # nothing perturbed (only possible when nothing asked for a gradient)
            return total + f({}), grads
        loss, pullback = jax.vjp(f, diff)
        (ct,) = pullback(jnp.ones_like(loss))
        g = grads._asdict()
        if need_dz:
            dz = ct["logits"]
            dz_low = dz.astype(low)
            if want.features:
                w_f = w_c
                if mask is not None:  # a column excluded in every row: no 0 * NaN here
                    w_f = jnp.where(jnp.any(mask, axis=0)[None, :], w_c, 0)
                g["features"] = g["features"] + jnp.matmul(
                    dz_low, w_f.astype(low).T, preferred_element_type=dt
                )
            if want.kernel:
                # Explicit sharding: the sum over a split batch is added across devices
                # into the kernel's own split (JAX will not guess it).
                dw_c = jnp.matmul(
                    a.features.astype(low).T,
                    dz_low,
                    preferred_element_type=dt,
                    out_sharding=explicit_spec(w_c),
                )
                g["kernel"] = _add_columns(s, g["kernel"], dw_c, start)
            if want.bias:
                g["bias"] = _add_columns(s, g["bias"], dz.sum(axis=0), start)
        for name in ("labels", "pos_weight", "weights"):
            if getattr(want, name):
                g[name] = _add_columns(s, g[name], ct[name], start)
        if want.label_smoothing:
            g["label_smoothing"] = g["label_smoothing"] + ct["label_smoothing"].astype(dt)
        return total + loss, _Args(**g)

    total, grads = lax.fori_loop(0, s.n_chunks, body, (zeros_varying_as((), dt, a.features), init))
    # The gradients are residuals, scaled by the cotangent later (by 1/N for a mean).
    cast: list[Any] = [
        None if d is None or v is None else d.astype(_residual_dtype(v.dtype, dt))
        for d, v in zip(grads, a, strict=True)
    ]
    return total, _Args(*cast)


def _residual_dtype(dtype: Any, compute: Any) -> Any:
    """The dtype a gradient of the sum is kept in until the cotangent scales it: the input's
    (a bfloat16 kernel's gradient, the one large buffer, in bfloat16), but for float16, whose
    range a sum over the batch exceeds (the mean's gradient was inf from 65504 on, where the
    exact one was finite): the compute dtype there, cast to float16 after the scaling."""
    return compute if dtype == jnp.float16 else dtype


#: The gradient pass as one call when the JVP rule is linearized (see :mod:`jaxbce._fused`).
_fused_grads_whole = whole_call(_fused_grads, nondiff_argnums=(0, 1))


def _fused_sum_jvp(
    s: _Static, primals: tuple[_Args[Any]], tangents: tuple[_Args[Any]]
) -> tuple[jax.Array, jax.Array]:
    """The loss is a scalar, so its derivative is its gradient: the value and the gradient
    of every perturbed input in one pass, and the tangent their inner product with the
    input tangents. Reverse mode transposes that product (the residuals are the gradients,
    and a cotangent only scales them); forward mode applies as for any JVP rule. Only the
    inputs with a tangent (not a symbolic zero) get a gradient."""
    (a,), (t,) = primals, tangents
    perturbed = [
        v is not None and d is not None and not isinstance(d, SymbolicZero)
        for v, d in zip(a, t, strict=True)
    ]
    want: _Args[bool] = _Args(*perturbed)
    total, grads = _fused_grads_whole(s, want, a)
    return total, tangent(grads, t, s.dtype)


_fused_sum.defjvp(_fused_sum_jvp, symbolic_zeros=True)


# --------------------------------------------------------------------- public API


@overload
def _as_2d(x: jax.Array) -> jax.Array: ...
@overload
def _as_2d(x: jax.Array | None) -> jax.Array | None: ...
def _as_2d(x: jax.Array | None) -> jax.Array | None:
    return None if x is None else x.reshape((1,) * (2 - x.ndim) + x.shape)


def linear_sigmoid_binary_cross_entropy(
    features: Float[ArrayLike, "batch in_features"],
    kernel: Float[ArrayLike, "in_features labels"],
    labels: Real[ArrayLike, "batch labels"]
    | Bool[ArrayLike, "batch labels"]
    | Int[ArrayLike, "batch positives"],
    *,
    bias: Float[ArrayLike, " labels"] | None = None,
    pos_weight: Real[ArrayLike, "*#batch_labels"] | None = None,
    weights: Real[ArrayLike, "*#batch_labels"] | None = None,
    where: Bool[ArrayLike, "*#batch_labels"] | None = None,
    label_smoothing: float | Float[ArrayLike, ""] = 0.0,
    reduction: Literal["sum", "mean"] = "mean",
    chunk_size: int | None = None,
    axis_name: Any = None,
) -> Float[Array, ""]:
    """Sigmoid BCE of a linear layer's output, without ever forming the (B, L) logits.

    The value of ::

        sigmoid_binary_cross_entropy(features @ kernel + bias, dense_labels, ...)

    with the same options, for output layers too large to materialise (extreme multi-label
    classification, one output per item in recommendation):

    .. math::

        \\ell = \\sum_{b,j} m_{bj}\\, w_{bj}\\bigl[\\pi_{bj}\\, q_{bj}
            \\operatorname{softplus}(-z_{bj}) + (1 - q_{bj}) \\operatorname{softplus}(z_{bj})
            \\bigr], \\qquad z = h W + \\beta,

    divided by :math:`\\sum m` for ``"mean"``, with :math:`q = y(1-\\epsilon) + \\epsilon/2`.
    The labels are processed ``chunk_size`` columns at a time, so only a (B, chunk_size)
    block of logits exists at once; the gradients of the features, kernel and bias (and of
    ``pos_weight``, ``weights``, soft labels and a traced ``label_smoothing``) are
    accumulated in the same pass by a ``custom_jvp`` (``grad``, ``value_and_grad``,
    ``jax.jvp``, ``jacfwd``, ``hessian`` and grad-of-grad all work). Temporary memory grows
    with ``B * chunk_size``, not with ``L``.

    Labels come in either of two formats:

    * dense: bool or float (soft labels in [0, 1]), shape (B, L);
    * sparse: **integer** indices of the positive labels, shape (B, K), padded with -1 (any
      negative index is padding; duplicates count once). Every other label is negative.
      Nothing of size B x L is ever built from them. Integer labels are always read as
      indices, so an integer (B, K) array with K = L, which could as well be a dense 0/1
      matrix, is refused as ambiguous, for every L including 1 (and, label-sharded, for
      K equal to the local or the global L): pass a 0/1 matrix as bool or float, and pad
      indices that happen to number L per row with a column of -1.

    Sharded output layer: inside ``jax.shard_map`` with the label axis of ``kernel`` (and of
    ``bias``, dense labels, and of column-shaped ``pos_weight``/``weights``/``where``) split
    over mesh axis ``axis_name``, each device runs the loop on its own columns and the sum and
    count are ``psum``-ed; the features' gradient is summed over devices by ``shard_map``'s
    autodiff. Sparse labels then hold global indices, the same on every device of the label
    axes (labels that vary over them are refused): a kernel that varies over axes of
    ``axis_name`` has its columns offset by ``axis_index * L_local`` along those axes (name
    several in the order of the kernel's ``PartitionSpec``). (This uses ``shard_map``'s
    varying-axis types: under ``check_vma=False``, ``pmap`` or ``vmap`` sparse labels with
    ``axis_name`` are refused.) With a replicated kernel
    and the batch sharded instead, ``axis_name`` gives the global data-parallel sum or mean,
    as in the elementwise losses; on a 2-D mesh both at once, e.g.
    ``axis_name=("data", "model")`` with the batch split over ``"data"`` and the kernel's
    columns over ``"model"``.

    Args:
      features: (B, d) real floating array, the input of the linear layer (use
        ``jax.vmap`` for more batch dimensions).
      kernel: (d, L) real floating array, the layer's weight.
      labels: dense (B, L) bool/float labels, or sparse (B, K) integer positive indices
        padded with -1 (see above).
      bias: (L,) bias of the layer, or None.
      pos_weight: weight of the positive term, broadcasting to (B, L); an (L,) array weights
        each label, as in PyTorch.
      weights: element weights broadcasting to (B, L); an infinite weight (or
        ``pos_weight``) of an included element is refused.
      where: boolean mask broadcasting to (B, L); excluded elements contribute exactly 0 to
        the value and to every gradient, even where their inputs are NaN (a row excluded in
        every column, padding, has its features zeroed, and a column excluded in every row
        its kernel entries).
      label_smoothing: :math:`\\epsilon \\in [0, 1]`.
      reduction: ``"sum"`` or ``"mean"`` (over included elements; 0 when none are).
        ``"none"`` is refused: the point of this function is never to build the (B, L) loss.
      chunk_size: label columns per chunk; ``None``: about 2^20 / B (a million logits per
        chunk), a multiple of 128 in [512, 4096]. Values above L are clamped to L. It changes
        memory and speed, never the result beyond float rounding.
      axis_name: ``shard_map`` mesh axis (or tuple of axes) to sum and count over.

    Returns:
      The scalar loss, in the dtype of ``features @ kernel + bias``.

    Raises:
      ValueError: for ``reduction="none"``, or arguments whose shapes do not fit.
      TypeError: for arguments of the wrong dtype.

    References:
      Wijmans et al., *Cut Your Losses in Large-Vocabulary Language Models* (Cut
      Cross-Entropy), 2024; Hsu et al., *Liger Kernel: Efficient Triton Kernels for LLM
      Training*, 2024 (fused linear cross-entropy); Bhatia et al., *The Extreme
      Classification Repository*, 2016.
    """
    h, w_mat, b_vec = checks.check_linear_operands(features, kernel, bias)
    n_batch, n_labels = h.shape[0], w_mat.shape[1]
    shape = (n_batch, n_labels)

    axes = () if axis_name is None else axis_tuple(axis_name)
    # The mesh axes that split the kernel's columns (sparse indices are offset along them):
    # those of ``axis_name`` that the kernel varies over; the others split the batch.
    label_axes = tuple(a for a in axes if a in varying_axes(w_mat))
    n_total = n_labels * (lax.axis_size(label_axes) if label_axes else 1)

    y, sparse, pw, wt, mask = checks.check_linear_arguments(
        labels,
        pos_weight,
        weights,
        where,
        label_smoothing,
        reduction,
        features_shape=h.shape,
        n_labels=n_labels,
        n_total=n_total,
        axis_name=axis_name,
        label_axes=label_axes,
    )
    if chunk_size is None:
        # A symbolic batch (jax.export) has no size to plan for: plan for one of 1024 rows.
        symbolic = jax.export.is_symbolic_dim(n_batch)
        chunk = default_chunk_size(1024 if symbolic else n_batch, n_labels)
    else:
        chunk = checks.check_chunk_size(chunk_size, n_labels)

    out_dtype = jnp.result_type(h, w_mat) if b_vec is None else jnp.result_type(h, w_mat, b_vec)
    dt = checks.compute_dtype(out_dtype)
    concrete = checks.is_concrete(label_smoothing)
    eps_static = float(np.asarray(label_smoothing)) if concrete else None
    eps_arr = None if eps_static is not None else jnp.asarray(label_smoothing, dt)

    if mask is not None:
        # A row excluded in every (local) column takes no part: its features are zeroed, so
        # that NaN padding does not reach the kernel's gradient as 0 * NaN.
        h = jnp.where(jnp.any(_as_2d(mask), axis=1)[:, None], h, 0)

    offset = None
    if sparse and label_axes:
        offset = (lax.axis_index(label_axes) * n_labels).astype(jnp.int32)

    args = _Args(
        features=h,
        kernel=w_mat,
        bias=b_vec,
        labels=y,
        pos_weight=_as_2d(pw),
        weights=_as_2d(wt),
        where=_as_2d(mask),
        label_smoothing=eps_arr,
        offset=offset,
    )
    if axis_name is not None and reduction == "sum":
        check_sum_is_split(tuple(args), axis_name)  # before the casts below
    # Every input varies over axis_name's and every other axis any input varies over (as
    # JAX's own ops would cast them) before the custom_jvp, so the loop's carries keep one
    # type; the transposes of the casts psum the gradients of replicated inputs.
    found = {a for v in args if v is not None for a in varying_axes(v)}
    vary_over = tuple(dict.fromkeys((*axes, *sorted(found, key=str))))
    if vary_over:
        varied: list[Any] = [vary(v, vary_over) for v in args]
        args = _Args(*varied)
    static = _Static(
        n_labels=n_labels,
        chunk=chunk,
        n_chunks=-(-n_labels // chunk),
        sparse=bool(sparse),
        label_smoothing=eps_static,
        dtype=dt,
    )
    total = _fused_sum(static, args)
    count = _count(mask, shape, dt)
    if axis_name is not None:
        # psum refuses a count varying along some axes only (a (1, L) mask split like W).
        total, count = varying_over(total, axes), varying_over(count, axes)
        total, count = lax.psum((total, count), axis_name)
    if reduction == "sum":
        return total.astype(out_dtype)
    return (total / jnp.maximum(count, 1.0)).astype(out_dtype)


def _count(mask: jax.Array | None, shape: tuple[int, int], dtype: Any) -> jax.Array:
    """The number of included elements, as a float (B * L can exceed int32)."""
    if mask is None:
        if any(jax.export.is_symbolic_dim(d) for d in shape):  # jax.export, symbolic batch
            return jnp.asarray(shape[0], dtype) * jnp.asarray(shape[1], dtype)
        return jnp.asarray(float(shape[0]) * float(shape[1]), dtype)
    m = _as_2d(mask)
    # Per-row integer counts (at most L each) summed in floating point.
    rows = jnp.sum(m, axis=1, dtype=jnp.int32) * (shape[1] // m.shape[1])
    return jnp.sum(rows.astype(dtype)) * (shape[0] // m.shape[0])
