"""The pairwise sigmoid loss of SigLIP, blocked over candidates and streamed round a ring.

For a batch of B pairs of embeddings :math:`(a_i, b_i)` every anchor :math:`a_i` is scored
against every candidate :math:`b_j` by the logit :math:`z_{ij} = t\\,\\langle a_i, b_j\\rangle
+ \\beta` and each of the :math:`B^2` pairs is an independent binary problem, positive when
the two come from the same pair:

.. math::

    \\ell_i = \\sum_j m_{ij}\\, \\operatorname{BCE}\\bigl(z_{ij}, y_{ij}\\bigr)
            = \\sum_j m_{ij} \\bigl(-\\log \\sigma(l_{ij} z_{ij})\\bigr),
    \\qquad y_{ij} = [\\,\\mathrm{id}_i = \\mathrm{id}_j\\,],\\quad l_{ij} = 2y_{ij} - 1,

with :math:`m_{ij}` the inclusion of both rows. The per-pair term is the library's kernel
(:func:`jaxbce._kernels.nll`, kind ``"logits"``), never re-typed here.

Blocks. Without ``axis_name`` the candidates are visited ``block_size`` at a time; each
(B, C) block of logits goes through the kernel's value and derivative rule
(:func:`jaxbce._kernels.nll_bwd`), and ``da``, ``db[block]``, ``dscale`` and ``dbias`` are
accumulated block by block, so memory grows as B x C, not B x B. When the whole (B, B)
block is small the loss is the dense formula differentiated by JAX.

Custom derivatives. For ``"sum"`` and ``"mean"`` the output is the local anchors' summed
loss, a scalar, so its derivative is its gradient: a :func:`jax.custom_jvp` computes the
gradients with the value in one pass (three matrix products per block, as autodiff of the
dense loss) and returns as tangent their inner product with the input tangents. Forward
mode (``jvp``, ``jacfwd``, ``hessian``) applies, and reverse mode transposes the inner
product: the residuals are the input-sized gradients, never a block. For ``"none"`` the
output is the per-anchor sums, whose cotangent is a vector: a :func:`jax.custom_vjp` keeps
only the inputs and its backward pass recomputes every block (four products). (A JVP rule
for a vector output would make reverse mode keep every block's derivatives, B x B in all,
and JAX offers no public way to give a linear map its own transpose: forward mode of
``"none"`` on the blocked paths is refused.)

Ring. With ``axis_name`` each of the D devices holds ``Bl`` anchors and ``Bl`` candidates.
D steps, in one loop; at each the device scores its anchors against the visiting candidate
shard (its rows, ids and mask) and passes that shard to the next device with
:func:`jax.lax.ppermute`, issued before the step's work so that the two may overlap (the
D-th shift, which only takes each shard home, is spent to keep every step in the loop).
Gradients: the visiting shard travels with a (Bl, d) accumulator of its gradient; each
device adds its anchors' contribution before passing it on, and after D steps every
accumulator is back on its owner, complete. (In the fused ``"sum"``/``"mean"`` pass this
happens in the forward ring; for ``"none"`` in a second, backward ring.) ``psum`` and the
mean are ordinary JAX outside the custom rules, so ``shard_map`` and ``pmap`` transpose them
by their own rules. Per device there exist at most one (Bl, C) block of logits and the
derivatives of that block, the local inputs, two visiting shards (current and next) and
two accumulators: nothing of size global-B x d or Bl x global-B.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from jaxbce import _checks as checks
from jaxbce._fused import (
    tangent,
    vary,
    whole_call,
    zeros_varying_as,
)
from jaxbce._kernels import nll, nll_bwd
from jaxbce._sharding import axis_tuple

#: Without ``axis_name`` and ``block_size``, the (B, B) logits are formed whole (plain
#: autodiff, every transformation) up to this many elements (16 MiB in float32).
DENSE_MAX_ELEMENTS = 2**22
#: Otherwise blocks of about this many logits, a multiple of 128 candidates (at least 128).
DEFAULT_BLOCK_ELEMENTS = 2**20


class _Static(NamedTuple):
    """Hashable configuration of the ring (the custom rules' non-differentiable part)."""

    axes: tuple[Any, ...] | None  # mesh axes of the ring, or None on one device
    n_dev: int  # D: devices round the ring
    n_cand: int  # candidates per visiting shard (the local batch)
    block: int  # C: candidates per block, 1 <= C <= n_cand
    dtype: Any  # compute dtype: float32 or float64


class _Rows(NamedTuple):
    """One side of the pairs: embeddings, pair ids and inclusion mask (or None)."""

    x: jax.Array  # (n, d)
    ids: jax.Array  # (n,) integers
    mask: jax.Array | None  # (n,) bool


class _Grads(NamedTuple):
    da: jax.Array  # (n_anchor, d)
    db: jax.Array  # (n_cand, d): the visiting shard's
    scale: jax.Array  # ()
    bias: jax.Array  # ()
    total: jax.Array | None = None  # () the loss itself, when computed in the same pass


def default_block_size(n_anchor: int, n_cand: int) -> int:
    """Candidates per block when ``block_size=None``: about :data:`DEFAULT_BLOCK_ELEMENTS`
    logits, a multiple of 128, at least 128 and at most ``n_cand``."""
    c = max(128, DEFAULT_BLOCK_ELEMENTS // max(n_anchor, 1) // 128 * 128)
    return int(min(c, n_cand))


# -------------------------------------------------------------------- one block


def _n_blocks(s: _Static) -> int:
    return -(-s.n_cand // s.block)


def _block(s: _Static, cand: _Rows, i: jax.Array | int) -> tuple[_Rows, jax.Array, Any]:
    """Block ``i`` of the visiting candidates, its first row and the rows it adds.

    The last, partial block is shifted back to end at row ``n_cand`` (no padding copy); the
    rows that the previous block already covered are masked out (``fresh``).
    """
    if s.block == s.n_cand:
        return cand, jnp.asarray(0, jnp.int32), None
    start = jnp.minimum(i * s.block, s.n_cand - s.block)

    def take(v: jax.Array) -> jax.Array:
        return lax.dynamic_slice_in_dim(v, start, s.block, axis=0)

    rows = _Rows(take(cand.x), take(cand.ids), None if cand.mask is None else take(cand.mask))
    fresh = None
    if s.n_cand % s.block:
        fresh = (start + jnp.arange(s.block)) >= i * s.block
    return rows, start, fresh


def _pairs(
    s: _Static, anc: _Rows, cand: _Rows, fresh: Any, scale: jax.Array, bias: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """``(dot, z, y, m)`` of a block: inner products, logits, labels and pair mask."""
    low = jnp.result_type(anc.x, cand.x)
    dot = jnp.matmul(anc.x.astype(low), cand.x.astype(low).T, preferred_element_type=s.dtype)
    z = scale * dot + bias
    y = (anc.ids[:, None] == cand.ids[None, :]).astype(s.dtype)
    m = None
    if anc.mask is not None and cand.mask is not None:  # one mask: both or neither
        m = anc.mask[:, None] & cand.mask[None, :]
    if fresh is not None:
        m = fresh[None, :] if m is None else m & fresh[None, :]
    if m is not None:
        z = jnp.where(m, z, 0.0)  # an excluded pair is evaluated at a harmless logit
    return dot, z, y, m


def _visit_value(
    s: _Static, anc: _Rows, cand: _Rows, scale: jax.Array, bias: jax.Array, acc: jax.Array
) -> jax.Array:
    """``acc`` plus the per-anchor sums of the loss over one visiting candidate shard."""

    def body(i: Any, acc: jax.Array) -> jax.Array:
        rows, _, fresh = _block(s, cand, i)
        _, z, y, m = _pairs(s, anc, rows, fresh, scale, bias)
        loss = nll("logits", z, y, None, None, None, True)
        if m is not None:
            loss = jnp.where(m, loss, 0.0)
        return acc + jnp.sum(loss, axis=1)

    if _n_blocks(s) == 1:
        return body(0, acc)
    summed: jax.Array = lax.fori_loop(0, _n_blocks(s), body, acc)
    return summed


def _visit_grad(
    s: _Static,
    anc: _Rows,
    cand: _Rows,
    scale: jax.Array,
    bias: jax.Array,
    g: jax.Array,
    acc: _Grads,
) -> _Grads:
    """``acc`` plus the gradients of ``sum_i g_i l_i`` from one visiting candidate shard."""
    low = jnp.result_type(anc.x, cand.x)

    def body(i: Any, acc: _Grads) -> _Grads:
        rows, start, fresh = _block(s, cand, i)
        _, z, y, m = _pairs(s, anc, rows, fresh, scale, bias)
        dz = nll_bwd("logits", (z, y, None, None, None), g[:, None])[0]
        if m is not None:
            dz = jnp.where(m, dz, 0.0)
        dz_low = dz.astype(low)
        # sum_ij dz_ij <a_i, b_j> = sum_i <a_i, (dz b)_i>: the scale's gradient from the
        # (n, d) product that da needs anyway, so no (n, C) block of inner products is kept.
        dz_b = jnp.matmul(dz_low, rows.x.astype(low), preferred_element_type=s.dtype)
        da = acc.da + scale * dz_b
        d_scale = acc.scale + jnp.sum(anc.x.astype(s.dtype) * dz_b)
        db_c = scale * jnp.matmul(dz_low.T, anc.x.astype(low), preferred_element_type=s.dtype)
        if s.block == s.n_cand:
            db = acc.db + db_c
        else:
            old = lax.dynamic_slice_in_dim(acc.db, start, s.block, axis=0)
            db = lax.dynamic_update_slice_in_dim(acc.db, old + db_c, start, axis=0)
        d_bias = acc.bias + jnp.sum(dz)
        total = acc.total
        if total is not None:  # the fused pass: the value from the same block of logits
            loss = nll("logits", z, y, None, None, None, True)
            total = total + jnp.sum(loss if m is None else jnp.where(m, loss, 0.0))
        return _Grads(da, db, d_scale, d_bias, total)

    if _n_blocks(s) == 1:
        return body(0, acc)
    grads: _Grads = lax.fori_loop(0, _n_blocks(s), body, acc)
    return grads


# ------------------------------------------------------------------------- ring


def _shift(s: _Static, tree: Any) -> Any:
    """Every array of ``tree`` to the next device of the ring."""
    perm = [(k, (k + 1) % s.n_dev) for k in range(s.n_dev)]
    return jax.tree.map(lambda v: lax.ppermute(v, s.axes, perm), tree)


def _ring_value(
    s: _Static, anc: _Rows, cand: _Rows, scale: jax.Array, bias: jax.Array
) -> jax.Array:
    """Per-anchor sums over every candidate of every device: the visiting shard moves on."""
    total = zeros_varying_as((anc.x.shape[0],), s.dtype, anc.x)
    if s.n_dev == 1:
        return _visit_value(s, anc, cand, scale, bias, total)

    def step(_: Any, carry: tuple[_Rows, jax.Array]) -> tuple[_Rows, jax.Array]:
        here, total = carry
        nxt = _shift(s, here)  # sent before the work on ``here``, so both may overlap
        return nxt, _visit_value(s, anc, here, scale, bias, total)

    # D steps, all in the loop (the last shift takes each shard home, unused): a loop of
    # D - 1 steps plus one outside would be two copies of the block's buffers (at D = 2,
    # XLA unrolls the single step and keeps both alive).
    per_anchor: jax.Array = lax.fori_loop(0, s.n_dev, step, (cand, total))[1]
    return per_anchor


def _ring_grad(
    s: _Static,
    anc: _Rows,
    cand: _Rows,
    scale: jax.Array,
    bias: jax.Array,
    g: jax.Array,
    with_value: bool = False,
) -> _Grads:
    """Gradients of ``sum_i g_i l_i``; each shard's ``db`` travels with it and comes home.

    ``with_value``: the loss summed over the local anchors too, from the same blocks.
    """
    acc = _Grads(
        zeros_varying_as(anc.x.shape, s.dtype, anc.x),
        zeros_varying_as(cand.x.shape, s.dtype, cand.x),
        zeros_varying_as((), s.dtype, anc.x),
        zeros_varying_as((), s.dtype, anc.x),
        zeros_varying_as((), s.dtype, anc.x) if with_value else None,
    )
    if s.n_dev == 1:
        return _visit_grad(s, anc, cand, scale, bias, g, acc)

    def step(_: Any, carry: tuple[_Rows, _Grads]) -> tuple[_Rows, _Grads]:
        here, acc = carry
        nxt = _shift(s, here)
        acc = _visit_grad(s, anc, here, scale, bias, g, acc)
        # The visiting shard's gradient leaves with it: the next device adds its anchors'.
        # After D steps every accumulator has been round all devices and is home.
        return nxt, acc._replace(db=_shift(s, acc.db))

    grads: _Grads = lax.fori_loop(0, s.n_dev, step, (cand, acc))[1]
    return grads


#: The gradient pass as one call when a JVP rule is linearized (see :mod:`jaxbce._fused`).
_ring_grad_whole = whole_call(_ring_grad, nondiff_argnums=(0, 6))


def _per_anchor_impl(
    s: _Static,
    a: jax.Array,
    b: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    ids: jax.Array,
    mask: jax.Array | None,
) -> jax.Array:
    return _ring_value(s, _Rows(a, ids, mask), _Rows(b, ids, mask), scale, bias)


_per_anchor = jax.custom_vjp(_per_anchor_impl, nondiff_argnums=(0,))


#: The residuals of ``_per_anchor``: its array inputs.
_Inputs = tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array | None]


def _per_anchor_fwd(
    s: _Static,
    a: jax.Array,
    b: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    ids: jax.Array,
    mask: jax.Array | None,
) -> tuple[jax.Array, _Inputs]:
    # The residuals are the inputs: the backward ring recomputes every block.
    return _per_anchor_impl(s, a, b, scale, bias, ids, mask), (a, b, scale, bias, ids, mask)


def _per_anchor_bwd(s: _Static, res: _Inputs, g: jax.Array) -> tuple[Any, ...]:
    a, b, scale, bias, ids, mask = res
    grads = _ring_grad(s, _Rows(a, ids, mask), _Rows(b, ids, mask), scale, bias, g)
    return (
        grads.da.astype(a.dtype),
        grads.db.astype(b.dtype),
        grads.scale.astype(scale.dtype),
        grads.bias.astype(bias.dtype),
        None,
        None,
    )


_per_anchor.defvjp(_per_anchor_fwd, _per_anchor_bwd)


def _summed_impl(
    s: _Static,
    a: jax.Array,
    b: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    ids: jax.Array,
    mask: jax.Array | None,
) -> jax.Array:
    return jnp.sum(_per_anchor_impl(s, a, b, scale, bias, ids, mask))


#: The local anchors' loss summed, for "sum" and "mean": a custom_jvp whose rule computes
#: the gradients with the value in one ring (three matrix products per block, as in the
#: dense loss's autodiff, not four) and returns their inner product with the tangents (see
#: :mod:`jaxbce._fused`). The per-device tangent uses each shard's db summed over *all*
#: devices' anchors (it comes home with the shard), not this sum's own: exact for the psum
#: over the ring, this sum's only consumer, whose value is the same either way, and whose
#: transpose gives every device the same cotangent.
_summed = jax.custom_jvp(_summed_impl, nondiff_argnums=(0,))


@_summed.defjvp
def _summed_jvp(
    s: _Static, primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[jax.Array, jax.Array]:
    a, b, scale, bias, ids, mask = primals
    g = jnp.ones(a.shape[0], s.dtype)
    grads = _ring_grad_whole(s, _Rows(a, ids, mask), _Rows(b, ids, mask), scale, bias, g, True)
    assert grads.total is not None  # computed: with_value=True
    gradients = (grads.da, grads.db, grads.scale, grads.bias)
    return grads.total, tangent(gradients, tangents[:4], s.dtype)


def _dense_per_anchor(
    a: jax.Array,
    b: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    ids: jax.Array,
    mask: jax.Array | None,
    dtype: Any,
) -> jax.Array:
    """The (B, B) formula whole, differentiated by JAX through the kernel's custom_jvp."""
    s = _Static(None, 1, b.shape[0], b.shape[0], dtype)
    _, z, y, m = _pairs(s, _Rows(a, ids, mask), _Rows(b, ids, mask), None, scale, bias)
    loss = nll("logits", z, y, None, None, None, True)
    if m is not None:
        loss = jnp.where(m, loss, 0.0)
    return jnp.sum(loss, axis=1)


# ------------------------------------------------------------------ public API


def _scalar(name: str, value: Any) -> jax.Array:
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # bias=0 is a float bias, weakly typed as floats are
    x = checks.check_predictions(name, value)
    if x.ndim != 0:
        raise ValueError(
            f"{name} must be a scalar (shape ()), got shape {x.shape}; the pairwise loss "
            "has one temperature and one bias"
        )
    return x


def _rows_arg(name: str, value: Any, n: int, integer: bool) -> jax.Array | None:
    if value is None:
        return None
    x = checks.as_array(name, value)
    if integer and not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array of pair ids, got dtype {x.dtype}")
    if not integer and x.dtype != jnp.bool_:
        raise TypeError(f"{name} must be a boolean mask, got dtype {x.dtype}")
    if x.shape != (n,):
        raise ValueError(
            f"{name} must have shape (B,) = ({n},), one per row of a and b, got shape {x.shape}"
        )
    return x


def _ring_size(axes: tuple[Any, ...], axis_name: Any) -> int:
    try:
        return int(lax.axis_size(axes))
    except NameError as err:
        raise ValueError(
            f"axis_name={axis_name!r} is not a mapped axis here: with axis_name, "
            "pairwise_sigmoid_loss must be called inside jax.shard_map (or jax.pmap) over "
            "that axis, with a and b each device's shard; omit axis_name on one device"
        ) from err


def pairwise_sigmoid_loss(
    a: Float[ArrayLike, "batch dim"],
    b: Float[ArrayLike, "batch dim"],
    *,
    scale: float | Float[ArrayLike, ""],
    bias: float | Float[ArrayLike, ""],
    pair_ids: Int[ArrayLike, " batch"] | None = None,
    where: Bool[ArrayLike, " batch"] | None = None,
    reduction: Literal["none", "sum", "mean"] = "mean",
    axis_name: Any = None,
    block_size: int | None = None,
) -> Float[Array, ""] | Float[Array, " batch"]:
    """The pairwise sigmoid loss of SigLIP, exact, in blocks, and round a ring of devices.

    Every anchor ``a[i]`` is scored against every candidate ``b[j]`` of the batch, and each
    pair is a binary problem of its own, positive when the two belong to the same pair:

    .. math::

        \\ell_i = \\sum_j m_{ij}\\bigl(-\\log\\sigma(l_{ij} z_{ij})\\bigr),\\qquad
        z_{ij} = t\\,\\langle a_i, b_j\\rangle + \\beta,\\qquad
        l_{ij} = \\begin{cases} +1 & \\mathrm{id}_i = \\mathrm{id}_j \\\\
                                 -1 & \\text{otherwise,} \\end{cases}

    :math:`m_{ij}` being 1 when both rows are included. The per-pair term is jaxbce's sigmoid
    BCE of :math:`z_{ij}` with label :math:`(l_{ij} + 1)/2`: faithfully rounded and
    finite with a finite gradient for every logit. ``"mean"`` is big_vision's
    normalisation, :math:`\\sum_i \\ell_i / \\#\\{\\text{included anchors}\\}`, not a mean
    over pairs. Normalising the embeddings (and keeping ``scale`` positive, e.g. as
    ``exp(log_t)``) is the caller's business.

    Memory. With ``block_size`` the candidates are visited that many at a time and only a
    (B, block_size) block of logits exists; without it the (B, B) logits are formed whole
    when they have at most :data:`DENSE_MAX_ELEMENTS` elements, in blocks of about a
    million logits otherwise. Every JAX transformation applies to ``"sum"`` and ``"mean"``
    on every path (``grad``, ``jvp``, ``jacfwd``, ``hessian``, ``vmap``, ``checkpoint``;
    the gradients are computed with the value, in one pass). ``"none"`` on the blocked and
    ring paths is a ``custom_vjp`` (reverse mode to any order, not ``jax.jvp``): a forward
    rule for its (B,) output would make reverse mode keep a (B, B) block of derivatives.

    Data parallelism. Inside ``jax.shard_map`` (or ``jax.pmap``) with ``a``, ``b``,
    ``pair_ids`` and ``where`` split over ``axis_name``, the loss is that of the whole
    global batch, every anchor against every candidate on every device. Candidate shards
    travel round a ring of ``lax.ppermute`` steps (and their gradients with them in the
    backward pass), so no device ever holds the global ``b`` or a (local, global) block of
    logits. Gradients are the local slices of the global gradient (``shard_map``), and
    ``scale`` and ``bias`` get their global gradient. (Under ``pmap``, which transposes
    ``psum`` to ``psum``, each device gets D times its slice, as for any psum-ed loss, and
    D times its own anchors' part of the ``scale`` and ``bias`` gradients: ``psum`` them.)
    Without ``pair_ids``, row ``i`` of device ``k`` is global pair ``k * B_local + i``.
    Without ``axis_name``, rows split over devices by their type (explicit sharding) are
    refused with an error that names the ring; replicated ``a`` and ``b`` are taken.

    Args:
      a: (B, d) real floating anchors (image embeddings in SigLIP).
      b: (B, d) candidates; ``b[i]`` pairs with ``a[i]``.
      scale: scalar temperature ``t``, differentiable.
      bias: scalar logit bias ``beta``, differentiable.
      pair_ids: (B,) integers; when given, ``(i, j)`` is positive iff
        ``pair_ids[i] == pair_ids[j]`` (several captions of one image), else iff ``i == j``.
        Under ``axis_name``, ids are compared across devices.
      where: (B,) bool; a False row takes no part, neither as anchor nor as candidate: it
        contributes exactly 0 to the value and gets a zero gradient.
      reduction: ``"mean"`` (over included anchors; 0 when none are), ``"sum"``, or
        ``"none"`` for the per-anchor sums ``(B,)`` (0 for excluded anchors).
      axis_name: ``shard_map``/``pmap`` axis name (or tuple of names) over which the batch
        is split. ``a`` or ``b`` the same on every device along it (replicated, in_specs
        ``P()``) is refused where ``shard_map`` tracks varying axes (``check_vma``, its
        default): each device would take the copies for its own shard of the batch.
      block_size: candidates per block (clamped to the local batch), or None.

    Returns:
      The scalar loss, or the (B,) per-anchor losses for ``reduction="none"``, in the
      dtype of ``a @ b.T * scale + bias``.

    Raises:
      ValueError: for shapes that do not fit, a symbolic batch size (``jax.export``), a
        non-scalar ``scale`` or ``bias``, an unknown ``reduction``, an ``axis_name`` that is
        not bound, or ``a``/``b`` replicated over it.
      TypeError: for arguments of the wrong dtype.

    References:
      Zhai, Mustafa, Kolesnikov and Beyer, *Sigmoid Loss for Language Image Pre-Training*,
      ICCV 2023; big_vision, ``big_vision/trainers/proj/image_text/siglip.py``.
    """
    x_a = checks.check_predictions("a", a)
    x_b = checks.check_predictions("b", b)
    if x_a.ndim != 2:
        raise ValueError(
            f"a must have shape (batch, dim), got shape {x_a.shape}; use jax.vmap for more "
            "batch dimensions"
        )
    if x_b.shape != x_a.shape:
        raise ValueError(
            f"b must have the shape of a, (batch, dim) = {x_a.shape} (b[i] pairs with a[i]), "
            f"got shape {x_b.shape}"
        )
    t = _scalar("scale", scale)
    beta = _scalar("bias", bias)
    n = x_a.shape[0]
    if jax.export.is_symbolic_dim(n):
        raise ValueError(
            f"a and b must have a static batch size, got a symbolic one, {n} (jax.export "
            "with a symbolic shape): the blocks and the ring are planned for a known batch; "
            "export the loss for each batch size"
        )
    ids = _rows_arg("pair_ids", pair_ids, n, integer=True)
    mask = _rows_arg("where", where, n, integer=False)
    checks.check_reduction(reduction)
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
            raise TypeError(f"block_size must be a positive int or None, got {block_size!r}")
        if block_size < 1:
            raise ValueError(f"block_size must be a positive int or None, got {block_size}")

    out_dtype = jnp.result_type(x_a, x_b, t, beta)
    dt = checks.compute_dtype(out_dtype)
    t, beta = t.astype(dt), beta.astype(dt)
    axes = None if axis_name is None else axis_tuple(axis_name)
    n_dev = 1 if axes is None else _ring_size(axes, axis_name)
    if axes is not None:
        checks.check_split_over("a", x_a, axes, axis_name)
        checks.check_split_over("b", x_b, axes, axis_name)
    else:
        for name, x in (("a", x_a), ("b", x_b)):
            checks.check_rows_not_split_by_type(name, x)
    if ids is None:
        ids = jnp.arange(n, dtype=jnp.int32)
        if axes is not None:
            ids = ids + (lax.axis_index(axes) * n).astype(jnp.int32)
    if mask is not None:
        # Excluded rows are zeroed: a NaN in padding must not reach the included gradients.
        x_a = jnp.where(mask[:, None], x_a, 0)
        x_b = jnp.where(mask[:, None], x_b, 0)

    dense = block_size is None and n * n <= DENSE_MAX_ELEMENTS
    per_anchor = None
    if n == 0:  # an empty batch (on every device: shapes are static): no pair, loss 0
        per_anchor = jnp.zeros((0,), dt)
    elif axes is None and dense:
        per_anchor = _dense_per_anchor(x_a, x_b, t, beta, ids, mask, dt)
    else:
        if block_size is None:
            block = default_block_size(n, n)
        else:
            block = int(min(block_size, n))
        static = _Static(axes, n_dev, n, block, dt)
        args = (x_a, x_b, t, beta, ids, mask)
        if axes is not None:
            # Every input varies over the ring before the custom rule; the transposes of these
            # casts psum the gradients of replicated inputs (scale and bias).
            args = tuple(vary(v, axes) for v in args)
        if reduction == "none":
            return _per_anchor(static, *args).astype(out_dtype)
        total = _summed(static, *args)
    if per_anchor is not None:
        if reduction == "none":
            return per_anchor.astype(out_dtype)
        total = jnp.sum(per_anchor)
    count = jnp.asarray(n, dt) if mask is None else jnp.sum(mask, dtype=jnp.int32).astype(dt)
    if axes is not None:
        total, count = lax.psum((total, count), axes)
    if reduction == "sum":
        return total.astype(out_dtype)
    return (total / jnp.maximum(count, 1.0)).astype(out_dtype)
