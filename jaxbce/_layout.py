"""Which loop an elementwise loss runs in on CPU: over the caller's shape, or, where its
innermost dimension is short, over the flattened array.

XLA:CPU emits a fused elementwise computation as nested loops over the shape of its result,
the innermost over the last dimension. Where that dimension is 2 to 7, LLVM vectorized the
cross-entropy's small loop body (279 SIMD lines in the optimized IR at (2097152, 2)) but not
the focal kernel's, about a thousand instructions (0;
``benchmarks/results/vectorized-loops-cpu-2026-11-27.txt``). ``value_and_grad`` of the focal
mean took 105.0 ns per element at (2097152, 2), 41.2 at (1048576, 3) and 31.4 at
(1048576, 4), against 20.6 for as many elements in one dimension and 22.3 at (524288, 7)
(``benchmarks/results/inner-dims-cpu-2026-11-27-s15.txt``). Reshaping the inputs inside
the loss does not help: XLA moves the reshape through the elementwise operations and loops
over the caller's shape again, and an ``optimization_barrier`` is gone before fusion.

A conditional is a boundary XLA does not fuse across: :func:`flat_on_cpu` computes the loss
over flattened inputs inside a ``lax.cond`` whose predicate is always true but is read from
the data (XLA cannot fold it), and gives the caller's shape to its result outside, where
the reshape is free. The price is in reverse mode: what the derivative needs from the
forward pass (the coefficient of each differentiated input) leaves the conditional as an
array of the input's size, one temporary the fused loop does not have. So only where the
loop would be slow (:func:`short_innermost`), and only on CPU (``lax.platform_dependent``;
a GPU compiles the loop over the flat index anyway and would only pay for the conditional).
Under ``vmap`` the predicate is batched, JAX computes both branches and selects, and the
loop is the fused one again: as fast as without this, no slower.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from jax import lax

from jaxbce._fused import vary
from jaxbce._sharding import explicitly_split, varying_axes

T = TypeVar("T")

#: Innermost dimensions shorter than this run flattened on CPU (see the module docstring:
#: at 8 the caller's loop is as fast as the flat one).
SHORT = 8
#: Fewer elements than this keep the caller's loop: below it the slow loop costs less than
#: 1.4 ms a call (105 ns per element at most), and the conditional's compilation more.
MIN_SIZE = 2**14


def short_innermost(shape: tuple[Any, ...]) -> bool:
    """Whether XLA:CPU's loop over ``shape`` would run an innermost loop of 2 to
    ``SHORT - 1`` iterations inside an outer one, over ``MIN_SIZE`` elements or more:
    dimensions of 1 do not count (XLA drops them); a symbolic dimension (``jax.export``)
    never qualifies."""
    dims = [d for d in shape if d != 1]
    if any(jax.export.is_symbolic_dim(d) for d in dims) or math.prod(dims) < MIN_SIZE:
        return False
    return len(dims) >= 2 and dims[-1] < SHORT


def flat_on_cpu(
    compute: Callable[[Any, bool], T],
    operands: Any,
    *,
    shape: tuple[int, ...],
    flat_results: Any,
) -> T:
    """``compute(operands, False)``, or on CPU, where ``shape``'s innermost dimension is short,
    ``compute(operands, True)`` in a conditional, its ``(size,)``-shaped results given
    ``shape``.

    Args:
      compute: the loss; with ``True`` it flattens its ``shape``-shaped arrays before its
        elementwise computation and returns flat arrays (or scalars).
      operands: a pytree of arrays (and ``None``) that ``compute`` reads; its first leaf is
        a non-empty array (the predictions), whose first element the predicate reads.
      shape: the shape of the elementwise loss.
      flat_results: ``jax.ShapeDtypeStruct`` s of ``compute(operands, True)``'s results.

    Returns:
      ``compute``'s results, its arrays in ``shape`` where they were flat.
    """
    lead = jax.tree.leaves(operands)[0]
    if not short_innermost(shape) or explicitly_split(lead):
        return compute(operands, False)
    size = math.prod(shape)

    def flat(ops: Any) -> T:
        first = jax.tree.leaves(ops)[0].reshape(-1)[0]
        bits = lax.bitcast_convert_type(first, jnp.dtype(f"int{8 * first.dtype.itemsize}"))
        # Always true (bit 0 is set), but read from the data: XLA keeps the conditional.
        always = (bits | 1) != 0
        axes = tuple(frozenset().union(*(varying_axes(v) for v in jax.tree.leaves(ops))))

        def never(ops: Any) -> T:
            # Zeros of the results' types, varying where the computed ones do.
            zeros: T = jax.tree.map(lambda s: vary(jnp.zeros(s.shape, s.dtype), axes), flat_results)
            return zeros

        out = lax.cond(always, lambda o: compute(o, True), never, ops)
        shaped: T = jax.tree.map(lambda v: v.reshape(shape) if v.shape == (size,) else v, out)
        return shaped

    result: T = lax.platform_dependent(operands, cpu=flat, default=lambda ops: compute(ops, False))
    return result
