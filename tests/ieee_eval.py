"""Evaluate a jaxpr of elementwise float32 code in NumPy, which keeps subnormal numbers.

XLA:CPU flushes subnormal results to zero; a GPU keeps them. The kernel's results below the
smallest normal number are what a GPU returns, and this is how the suite on a CPU sees
them: NumPy's float32 arithmetic is IEEE (no flushing, correctly rounded division, no
contraction into fused multiply-adds), op by op as the jaxpr says. Only the primitives the
kernel's elementwise functions use are known; another one is an error, not a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend.core import Literal

_UNARY: dict[str, Callable[..., Any]] = {
    "neg": np.negative,
    "abs": np.abs,
    "exp": np.exp,
    "log": np.log,
    "log1p": np.log1p,
    "is_finite": np.isfinite,
    "not": np.invert,
    "sign": np.sign,
    "floor": np.floor,
    "sqrt": np.sqrt,
    "expm1": np.expm1,
    "square": np.square,
    "copy": np.copy,
    "copy_p": np.copy,
}
_BINARY: dict[str, Callable[..., Any]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "min": np.minimum,
    "max": np.maximum,
    "and": np.bitwise_and,
    "or": np.bitwise_or,
    "eq": np.equal,
    "ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "shift_left": np.left_shift,
    "shift_right_logical": lambda a, b: (a.view(np.uint32) >> b.astype(np.uint32)).view(a.dtype),
    "shift_right_arithmetic": np.right_shift,
    "xor": np.bitwise_xor,
    "pow": np.power,
}


def _call(
    params: dict[str, Any], args: list[Any], rules: dict[str, Callable[..., Any]]
) -> list[Any]:
    inner = params.get("jaxpr", params.get("call_jaxpr"))
    return evaluate(inner.jaxpr, inner.consts, *args, rules=rules)


def evaluate(
    jaxpr: Any, consts: Any, *args: Any, rules: dict[str, Callable[..., Any]] | None = None
) -> list[Any]:
    """The jaxpr's outputs; ``rules`` replaces the rules of some binary primitives (a
    device's own division, say)."""
    rules = rules or {}
    binary = {**_BINARY, **rules}
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return np.asarray(v.val) if isinstance(v, Literal) else env[v]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = np.asarray(value)
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = np.asarray(value)
    with np.errstate(all="ignore"):
        for eqn in jaxpr.eqns:
            name, params = eqn.primitive.name, eqn.params
            ins = [read(v) for v in eqn.invars]
            dtype = eqn.outvars[0].aval.dtype if eqn.outvars else None
            if name in _UNARY:
                outs = [_UNARY[name](ins[0])]
            elif name in binary:
                outs = [binary[name](*ins)]
            elif name == "round":
                if params["rounding_method"] == jax.lax.RoundingMethod.TO_NEAREST_EVEN:
                    outs = [np.round(ins[0])]
                else:  # away from zero; |x| + 1/2 in float64, where it is exact
                    halfway = np.floor(np.abs(ins[0]).astype(np.float64) + 0.5)
                    outs = [np.copysign(halfway, ins[0]).astype(ins[0].dtype)]
            elif name == "select_n":
                outs = [np.choose(ins[0].astype(np.int32), ins[1:])]
            elif name == "convert_element_type":
                outs = [ins[0].astype(params["new_dtype"])]
            elif name == "bitcast_convert_type":
                outs = [ins[0].view(params["new_dtype"])]
            elif name == "broadcast_in_dim":
                outs = [np.broadcast_to(ins[0], params["shape"])]
            elif name == "integer_pow":
                outs = [ins[0] ** params["y"]]
            elif name == "reshape":
                outs = [np.reshape(ins[0], params["new_sizes"])]
            elif name == "reduce_sum":
                outs = [np.sum(ins[0], axis=tuple(params["axes"]), dtype=ins[0].dtype)]
            elif name == "optimization_barrier":
                outs = ins
            elif name in ("jit", "pjit", "custom_jvp_call", "custom_vjp_call", "closed_call"):
                outs = _call(params, ins, rules)
            else:
                raise NotImplementedError(f"ieee_eval: no rule for {name}")
            for var, out in zip(eqn.outvars, outs, strict=True):
                out = np.asarray(out)
                if dtype is not None and out.dtype != var.aval.dtype:
                    out = out.astype(var.aval.dtype)
                env[var] = out
    return [read(v) for v in jaxpr.outvars]


def ieee(f: Callable[..., Any], **rules: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` evaluated in NumPy, op by op, for array arguments; ``rules`` as in
    :func:`evaluate` (``div=...``)."""

    def run(*args: Any) -> Any:
        closed = jax.make_jaxpr(f)(*args)
        outs = evaluate(closed.jaxpr, closed.consts, *args, rules=rules)
        tree = jax.tree.structure(jax.eval_shape(f, *args))
        return jax.tree.unflatten(tree, outs)

    return run
