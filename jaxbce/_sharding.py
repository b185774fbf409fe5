"""What a value's type says about how it is split over devices.

Two JAX mechanisms put that in a type: inside ``shard_map`` the manual mesh axes along which
a value differs between devices (:func:`varying_axes`), and under explicit sharding
(``AxisType.Explicit`` axes of the mesh in context, ``jax.set_mesh``) the partition spec of
every array (:func:`explicit_spec`). The losses read them to build values of the same type
(loop carries), to name the split in errors, and to avoid operations JAX refuses across a
split (a reshape of a split batch into blocks, a product contracting it without an output
sharding).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import AxisType, PartitionSpec


def axis_tuple(axis_name: Any) -> tuple[Any, ...]:
    """``axis_name`` (one mesh axis or a tuple of them) as a tuple."""
    return axis_name if isinstance(axis_name, tuple) else (axis_name,)


def varying_axes(x: jax.Array) -> frozenset[Any]:
    """The manual (shard_map) mesh axes along which ``x`` differs between devices."""
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()))


def explicit_spec(x: jax.Array) -> PartitionSpec | None:
    """``x``'s partition spec where its type carries one (explicit sharding), else None:
    also the ``out_sharding`` of an operation whose result's split JAX will not guess."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    types = getattr(getattr(sharding, "mesh", None), "axis_types", ())
    if sharding is None or not any(t == AxisType.Explicit for t in types):
        return None
    spec: PartitionSpec = sharding.spec
    return spec


def explicit_split_axis(x: jax.Array, dims: tuple[int, ...] | None = None) -> Any:
    """The mesh axis that ``x``'s type splits the first of ``dims`` (all by default) over,
    under explicit sharding; None where none is split."""
    spec = explicit_spec(x)
    if spec is None:
        return None
    picked = range(len(spec)) if dims is None else (d for d in dims if d < len(spec))
    return next((spec[d] for d in picked if spec[d] is not None), None)


def explicitly_split(x: jax.Array) -> bool:
    """Whether ``x``'s type says it is split over a mesh axis (explicit sharding)."""
    return explicit_split_axis(x) is not None


def untracked(axes: tuple[Any, ...]) -> list[Any]:
    """The axes of ``axes`` along which no value's type says whether it varies: ``pmap``,
    ``vmap``, or ``shard_map`` with ``check_vma=False`` (there ``lax.axis_index`` does not
    vary either)."""
    return [ax for ax in axes if ax not in varying_axes(jax.lax.axis_index(ax))]


def replicated_along(x: jax.Array, axes: tuple[Any, ...]) -> list[Any]:
    """The axes of ``axes`` along which ``x`` is the same on every device, as far as types
    tell: inside ``shard_map``, which tracks what varies (``check_vma``, its default: there
    ``lax.axis_index`` varies). Under ``pmap``, ``check_vma=False`` or ``vmap`` nothing can
    be told, and none is listed."""
    blind = untracked(axes)
    return [ax for ax in axes if ax not in blind and ax not in varying_axes(x)]


def varying_over(x: jax.Array, axes: tuple[Any, ...]) -> jax.Array:
    """``x`` cast to vary along the axes of ``axes`` that :func:`replicated_along` lists:
    ``psum`` over several axes refuses a value that varies along some and not others."""
    missing = replicated_along(x, axes)
    return jax.lax.pcast(x, tuple(missing), to="varying") if missing else x


def check_sum_is_split(values: tuple[jax.Array | None, ...], axis_name: Any) -> None:
    """Refuses a ``"sum"`` over ``axis_name`` of local sums made from ``values`` (the local
    sum itself, or the inputs it is made from) where every one is the same on every device
    along one of its axes (the inputs replicated there): ``psum`` would add each copy once
    per device. A ``"mean"`` divides by a count summed the same way and is right."""
    present = [v for v in values if v is not None]
    axes = axis_tuple(axis_name)
    varying = {ax for v in present for ax in varying_axes(v)}
    blind = untracked(axes)  # once: each call traces an axis_index per axis
    missing = [ax for ax in axes if present and ax not in blind and ax not in varying]
    if missing:
        raise ValueError(
            f"the loss is the same on every device along mesh axis "
            f"{', '.join(map(repr, missing))} (its inputs replicated, as in_specs P() makes "
            f"them), so reduction='sum' with axis_name={axis_name!r} would add each copy once "
            f"per device. Split the batch over {axis_name!r} (in_specs P({axis_name!r})), use "
            f"reduction='mean' (the same for copies), or omit axis_name for the sum of the batch "
            f"one device holds"
        )
