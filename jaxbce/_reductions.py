"""Reductions of an elementwise loss: masking, sum and mean, local or across devices.

One function, :func:`reduce_loss`, serves every loss: it masks, sums in the compute dtype
(on CPU by a blocked variadic reduction that stays exact over 2^25 elements and writes no
N-sized temporary), divides by the number of included elements for ``"mean"``, adds over a
mapped axis when given ``axis_name``, and casts back to the predictions' dtype.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from jaxbce._sharding import axis_tuple, check_sum_is_split, explicitly_split, varying_over

Reduction = Literal["none", "sum", "mean"]
REDUCTIONS: tuple[str, ...] = ("none", "sum", "mean")


def reduce_loss(
    loss: jax.Array,
    mask: jax.Array | None,
    reduction: str,
    axis_name: Any,
    out_dtype: Any,
) -> jax.Array:
    """Masks, reduces (in the compute dtype) and casts back to the predictions' dtype."""
    local = local_reduction(loss, mask, reduction)
    return finish_reduction(
        local,
        reduction,
        axis_name,
        size=loss.size,
        masked=mask is not None,
        out_dtype=out_dtype,
    )


Local = jax.Array | tuple[jax.Array, jax.Array]


def local_reduction(loss: jax.Array, mask: jax.Array | None, reduction: str) -> Local:
    """The masked loss (``"none"``), or this device's ``(sum, count)`` of it."""
    if mask is not None:
        loss = jnp.where(mask, loss, 0.0)
    if reduction == "none":
        return loss
    return sum_and_count(loss, mask)


def finish_reduction(
    local: Local,
    reduction: str,
    axis_name: Any,
    *,
    size: Any,
    masked: bool,
    out_dtype: Any,
) -> jax.Array:
    """:func:`local_reduction`'s result over ``axis_name`` (when given), divided by the
    number of included elements for ``"mean"``, in ``out_dtype``. ``size`` is the number of
    elements of the (local) loss, ``masked`` whether a mask counted them."""
    if reduction == "none":
        assert not isinstance(local, tuple)
        return local.astype(out_dtype)
    assert isinstance(local, tuple)
    total, count = local
    if axis_name is not None:
        if reduction == "sum":
            check_sum_is_split((total,), axis_name)
        axes = axis_tuple(axis_name)
        total, count = varying_over(total, axes), varying_over(count, axes)
        total, count = lax.psum((total, count), axis_name)
    # "+ 0 * count" keeps the count alive, and with it XLA:CPU's fused reduction (below).
    total = total + 0.0 * count
    if reduction == "sum":
        return total.astype(out_dtype)
    if not masked:
        # A static count: the gradient's scale 1/N then does not wait for the reduction,
        # so XLA may compute the value and the gradient in any order, or together.
        # In the loss dtype: 2^31 elements and more overflow int32. A symbolic size
        # (jax.export with a symbolic batch) becomes a value computed from the shape.
        n = jnp.asarray(size, total.dtype)
        if axis_name is not None:
            n = lax.psum(n, axis_name)
        return (total / jnp.maximum(n, 1.0)).astype(out_dtype)  # an empty batch's mean is 0
    # An all-excluded batch has total 0 and count 0: its mean is 0, not NaN.
    return (total / jnp.maximum(count, 1.0)).astype(out_dtype)


#: The longest block XLA:CPU adds sequentially before the partial sums are added.
SUM_BLOCK = 512
#: The shortest block worth a blocked reduction (below, the plain sum).
MIN_BLOCK = 32
#: Factors of two kept in the number of blocks, up to 2^6: a batch split evenly over up to
#: 64 devices then splits into whole blocks on each.
KEEP_TWOS = 6


def sum_and_count(loss: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
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
    sums: tuple[jax.Array, jax.Array] = lax.platform_dependent(
        loss, counted, cpu=_blocked_sum_and_count, default=_plain_sum_and_count
    )
    return sums


def _plain_sum_and_count(loss: jax.Array, counted: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``jnp.sum`` of the loss and of the boolean ``counted``, the count in the loss dtype.

    The count is exact in int32 below 2^31 elements; beyond, or for a symbolic size that
    might be beyond, it is summed in the loss dtype, which cannot overflow.
    """
    size = loss.size
    exact = not jax.export.is_symbolic_dim(size) and size < 2**31
    count = jnp.sum(counted, dtype=jnp.int32 if exact else loss.dtype)
    return jnp.sum(loss), count.astype(loss.dtype)


def block_size(shape: tuple[Any, ...]) -> int:
    """The block of :func:`_blocked_sum_and_count`: the largest divisor of the number of
    elements up to :data:`SUM_BLOCK` that leaves as many factors of two in the number of
    blocks as it can, up to :data:`KEEP_TWOS`, while still :data:`MIN_BLOCK` or more; 1
    for an empty array (and below ``MIN_BLOCK`` where no divisor is that large).

    Only the static dimensions count (with a symbolic batch, ``jax.export``, they divide
    the size whatever the batch is), and all their factors of two may go into the block.
    """
    static = math.prod(d for d in shape if not jax.export.is_symbolic_dim(d))
    if static == 0:
        return 1
    symbolic = any(jax.export.is_symbolic_dim(d) for d in shape)
    twos = (static & -static).bit_length() - 1
    block = 1
    for keep in range(0 if symbolic else min(twos, KEEP_TWOS), -1, -1):
        rest = static >> keep
        block = max(b for b in range(1, min(SUM_BLOCK, rest) + 1) if rest % b == 0)
        if block >= MIN_BLOCK:
            break
    return block


def _blocked_sum_and_count(loss: jax.Array, counted: jax.Array) -> tuple[jax.Array, jax.Array]:
    """XLA:CPU's sum of the loss and of the boolean ``counted``, reading the loss once.

    Three choices keep this exact, fast and free of N-sized temporaries:

    * a variadic (sum, count) reduction rather than ``jnp.sum``: XLA:CPU hands a plain float
      sum to an XNNPACK fusion that cannot take the selects of the loss, so the elementwise
      loss would first be written to memory; the variadic reduction stays an ordinary XLA
      fusion that computes the loss on the fly;
    * two levels: XLA's own reduction adds sequentially, which loses ~1e-3 relative
      accuracy over 2^25 elements, so it only sums blocks of at most ``SUM_BLOCK`` elements
      (error ~1e-5 at worst), and ``jnp.sum`` adds the partial sums;
    * blocks that divide the size (:func:`block_size`), never padding: a zero padding fused
      into the reduction made XLA:CPU check every element's index, and the value pass 16
      times slower per element whenever N was not a multiple of the block
      (``benchmarks/results/unaligned-cpu-2026-11-27*.txt``, from
      ``benchmarks/unaligned_sizes.py``). Where the size has no divisor from ``MIN_BLOCK`` to
      ``SUM_BLOCK`` (a prime, or a symbolic batch without a static factor) the plain sum
      serves, which writes the loss once. The number of blocks keeps as many of the size's
      factors of two as it can, up to 2^6, so that under ``jit`` with a batch sharded over
      up to 64 devices each device holds whole blocks: a padded layout made XLA's
      partitioner gather the whole loss onto every device. A loss whose type says it is
      split over devices (explicit sharding, :func:`~jaxbce._sharding.explicitly_split`) is
      summed plainly too.

    A single compensated (TwoSum) reduction would need no blocks, but XLA:CPU runs a
    reduction to one scalar as one chain of dependent additions: a compensated step makes
    that chain several times longer, and without renormalising at every step the
    compensation itself loses precision by 2^24 elements.
    """
    b = block_size(loss.shape)
    if b < MIN_BLOCK or explicitly_split(loss):
        return _plain_sum_and_count(loss, counted)
    blocks = (loss.size // b, b)
    sums, counts = _variadic_sum(loss.reshape(blocks), counted.reshape(blocks).astype(jnp.int32))
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
def _variadic_sum_jvp(
    primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    # JAX's own JVP of a variadic reduce with an integer operand fails; the sum is linear
    # and the count constant.
    total, count = _variadic_sum(*primals)
    return (total, count), (jnp.sum(tangents[0], axis=-1), 0.0 * count)
