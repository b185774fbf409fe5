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
