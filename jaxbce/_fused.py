"""Scalar losses whose gradients are computed with their value: the shared custom_jvp parts,
and the ``shard_map`` helpers of their loops.

The fused linear loss (:mod:`jaxbce._linear`) and the pairwise loss's ``"sum"`` and
``"mean"`` (:mod:`jaxbce._pairwise`) loop over blocks and compute the value and the
gradients in one pass. Their output is a scalar, so its derivative is its gradient: each is
a :func:`jax.custom_jvp` whose rule runs that pass and returns, as the tangent, the inner
product of the gradients with the input tangents (:func:`tangent`). Forward mode works as
for any JVP rule, and reverse mode transposes the inner product: the residuals are the
input-sized gradients, and a cotangent only scales them.

One trap (:func:`whole_call`): when reverse mode linearizes such a rule, JAX's partial
evaluation processes every operation of the rule one at a time, known values included, and
a loop's partial-evaluation rule hoists the loop body's loop-invariant constants (the
kernel's coefficients broadcast to the block's shape) out of the loop, each a live block.
A ``custom_jvp`` whose inputs are all known is instead bound as one call at the parent
trace, its loops staged whole. ``tests/test_pairwise_ring.py`` bounds the ring's
compiled temporaries (local batch 256, d = 64, 2 to 8 devices) by 4 blocks and 4 rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from jax import lax

from jaxbce._sharding import explicit_spec, varying_axes

T = TypeVar("T")


def whole_call(fn: Callable[..., T], nondiff_argnums: tuple[int, ...]) -> Callable[..., T]:
    """``fn`` as one call for partial evaluation, with JAX's own derivatives.

    Args:
      fn: the function (the gradient pass of a fused loss).
      nondiff_argnums: positions of its static (hashable, non-array) arguments.

    Returns:
      A ``custom_jvp`` function that computes ``fn`` and differentiates it as JAX would.
    """
    wrapped = jax.custom_jvp(fn, nondiff_argnums=nondiff_argnums)

    def rule(*args: Any) -> tuple[T, T]:
        static, (primals, tangents) = args[: len(nondiff_argnums)], args[len(nondiff_argnums) :]

        def call(*diff: Any) -> T:
            full, rest_static, rest_diff = [], iter(static), iter(diff)
            for k in range(len(static) + len(diff)):
                full.append(next(rest_static) if k in nondiff_argnums else next(rest_diff))
            return fn(*full)

        out: tuple[T, T] = jax.jvp(call, tuple(primals), tuple(tangents))
        return out

    wrapped.defjvp(rule)
    return wrapped


def tangent(grads: Sequence[jax.Array | None], tangents: Iterable[Any], dtype: Any) -> jax.Array:
    """``sum_k <grads[k], tangents[k]>`` in ``dtype``, over the inputs that have a gradient."""
    total = jnp.zeros((), dtype)
    for g, t in zip(grads, tangents, strict=True):
        if g is not None:
            total = total + jnp.sum(g.astype(dtype) * t.astype(dtype))
    return total


def vary(x: Any, axes: tuple[Any, ...]) -> Any:
    """``x`` (or None) marked as varying over every axis of ``axes`` (``shard_map``'s
    ``pcast``), so that it may be combined with values that vary over them."""
    if x is None:
        return None
    missing = tuple(n for n in axes if n not in varying_axes(x))
    return lax.pcast(x, missing, to="varying") if missing else x


def zeros_varying_as(shape: tuple[int, ...], dtype: Any, like: jax.Array) -> jax.Array:
    """Zeros that vary over the same ``shard_map`` axes as ``like`` (loop carries must),
    and, of ``like``'s shape, split as it is under explicit sharding."""
    z = jnp.zeros(shape, dtype, out_sharding=explicit_spec(like) if shape == like.shape else None)
    axes = tuple(varying_axes(like) - varying_axes(z))
    return lax.pcast(z, axes, to="varying") if axes else z
