"""On-device accuracy sweeps for ``python -m jaxbce.check``: every bit pattern, or dense samples.

A :class:`Sweep` evaluates one public loss and its derivative (``jax.vjp`` with a unit
cotangent, traced with x64 off exactly as a user's code is) on chunks of inputs generated on
the device, either from an iota of bit patterns or from a counter-based hash, scores them in
ulps against :mod:`jaxbce._exact`'s float64 reference and reduces every chunk to (worst error,
the input where it occurs) for the loss and the gradient, so only a few numbers per chunk
cross to the host. Chunks run on a small thread pool: XLA:CPU runs one computation on about
one core, so two in flight use two.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxbce import _exact
from jaxbce._losses import binary_cross_entropy, sigmoid_binary_cross_entropy, sigmoid_focal_loss

#: the functions under test, looked up when a sweep is traced (tests patch this)
FUNCTIONS: dict[str, Callable[..., jax.Array]] = {
    "sigmoid_bce": sigmoid_binary_cross_entropy,
    "bce": binary_cross_entropy,
    "focal": sigmoid_focal_loss,
}
_REFERENCES: dict[str, Callable[..., _exact.Reference]] = {
    "sigmoid_bce": _exact.sigmoid_bce,
    "bce": _exact.binary_cross_entropy,
    "focal": _exact.focal,
}
_UINT = {2: jnp.uint16, 4: jnp.uint32}
_ONE_BITS = 0x3F800000  # float32 1.0


@dataclass(frozen=True)
class Variant:
    """An option set of a sweep's function and its bound in ulps."""

    options: tuple[tuple[str, Any], ...]
    bound: float

    @property
    def text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.options) or "-"


Label = float | str


@dataclass(frozen=True)
class Sweep:
    """One loss and dtype over one input set; a result row per (variant, label set).

    ``source`` is ``"patterns"`` (the bit patterns in ``ranges``, every ``2^stride_log2``-th
    with a hashed offset inside each stride, or all of them for stride 0), ``"band"``
    (uniform logits in [-20, 20]) or ``"mix"`` (see :func:`_sample_x`); ``size`` is the
    number of samples (ignored for patterns). Each label is a fixed value (``y=0``) or
    ``"hard"``/``"soft"``, labels drawn per input (see :func:`_sample_y`). Every variant and
    label set sees the same inputs.
    """

    function: str
    dtype: str
    source: str
    labels: tuple[Label, ...]
    variants: tuple[Variant, ...]
    size: int = 0
    ranges: tuple[tuple[int, int], ...] = ()
    stride_log2: int = 0

    @property
    def inputs_text(self) -> str:
        if self.source == "patterns":
            every = "all" if self.stride_log2 == 0 else f"1/2^{self.stride_log2} of"
            return f"{every} patterns"
        return f"{self.size:.0e} {self.source}".replace("e+0", "e")

    def rows(self) -> list[tuple[Variant, Label]]:
        return [(v, label) for v in self.variants for label in self.labels]

    def row_name(self, variant: Variant, label: Label) -> str:
        """The string ``--only`` matches: ``function options dtype labels inputs``."""
        return f"{self.function} {variant.text} {self.dtype} {label_name(label)} {self.inputs_text}"

    def blocks(self) -> list[tuple[int, int, int]]:
        """``(lo, hi, number of strides)`` per pattern range."""
        step = 1 << self.stride_log2
        return [(lo, hi, -(-(hi - lo) // step)) for lo, hi in self.ranges]

    def total(self) -> int:
        """Inputs per row (an upper bound for jittered strides)."""
        if self.source == "patterns":
            return sum(n for *_, n in self.blocks())
        return self.size


def label_name(label: Label) -> str:
    return label if isinstance(label, str) else f"y={label:g}"


@dataclass(frozen=True)
class Worst:
    """The largest error of one quantity and the input ``(x, y)`` where it occurs."""

    ulps: float
    x: str
    y: str


@dataclass(frozen=True)
class Result:
    """One row: the worst loss and gradient errors of a (sweep, variant, label set)."""

    sweep: Sweep
    variant: Variant
    label: Label
    inputs: int
    loss: Worst
    grad: Worst

    @property
    def ok(self) -> bool:
        return max(self.loss.ulps, self.grad.ulps) <= self.variant.bound


def device_flushes_subnormals() -> bool:
    """Whether the default device treats float32 subnormals as 0 (XLA:CPU does; the H200
    measured did not)."""
    tiny = np.float32(2.0**-130)
    return float(jax.jit(lambda a, b: a * b)(tiny, np.float32(1))) == 0.0


def _hash(i: jax.Array, stream: int) -> jax.Array:
    """murmur3's 32-bit finalizer of ``i`` and a stream number: a bijection for each stream."""
    h = i * jnp.uint32(0x9E3779B1) + jnp.uint32((stream * 0x85EBCA77 + 0x165667B1) % 2**32)
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
    mixed: jax.Array = h ^ (h >> 16)
    return mixed


def _uniform(h: jax.Array) -> jax.Array:
    """Uniform float32 in [0, 1) with 24 random bits."""
    return (h >> 8).astype(jnp.float32) * np.float32(2.0**-24)


def _power_of_two_scaled(h: jax.Array, kmax: int) -> jax.Array:
    """``m 2^-k`` with ``m`` uniform in [1, 2) (23 bits) and ``k`` uniform in 1..kmax."""
    k = 1 + (h % jnp.uint32(kmax))
    mant = _hash(h, 7) & jnp.uint32(0x7FFFFF)
    return lax.bitcast_convert_type(((127 - k) << 23) | mant, jnp.float32)


def _sample_x(function: str, source: str, i: jax.Array) -> jax.Array:
    """Float32 inputs for sample numbers ``i``.

    Logits (``"mix"``): a quarter uniform over all finite bit patterns, half uniform in
    [-20, 20], a quarter log-uniform in magnitude over [1e-8, 100] with a random sign.
    Probabilities: a quarter each uniform over the bit patterns in [0, 1], uniform in [0, 1),
    ``m 2^-k`` for k in 1..126 (near 0) and ``1 - m 2^-k`` for k in 1..25 (near 1).
    """
    sel, h1, h2 = _hash(i, 0) >> 30, _hash(i, 1), _hash(i, 2)
    u = _uniform(h1)
    if function == "bce":
        bits = lax.bitcast_convert_type(h1 % jnp.uint32(_ONE_BITS + 1), jnp.float32)
        near0 = _power_of_two_scaled(h2, 126)
        near1 = 1.0 - _power_of_two_scaled(h2, 25)
        return jnp.select([sel == 0, sel == 1, sel == 2], [bits, u, near0], near1)
    band = (2.0 * u - 1.0) * 20.0
    if source == "band":
        return band
    finite = jnp.where((h1 & 0x7F800000) == 0x7F800000, h1 ^ 0x40000000, h1)
    any_bits = lax.bitcast_convert_type(finite, jnp.float32)
    magnitude = jnp.exp(np.float32(math.log(1e-8)) + u * np.float32(math.log(1e10)))
    log_uniform = jnp.where((h2 & 1) == 1, -magnitude, magnitude)
    return jnp.select([sel == 0, sel == 3], [any_bits, log_uniform], band)


def _sample_y(labels: str, i: jax.Array) -> jax.Array:
    """Float32 labels: ``"hard"`` 0 or 1; ``"soft"`` a quarter each uniform in [0, 1),
    ``1 - m 2^-k`` (k in 1..25), ``m 2^-k`` (k in 1..64) and exactly 0 or 1."""
    h3, h4 = _hash(i, 3), _hash(i, 4)
    hard = (h4 & 1).astype(jnp.float32)
    if labels == "hard":
        return hard
    sel = h3 >> 30
    near1 = 1.0 - _power_of_two_scaled(h4, 25)
    near0 = _power_of_two_scaled(h4, 64)
    return jnp.select([sel == 0, sel == 1, sel == 2], [_uniform(h3), near1, near0], hard)


def _inputs(sweep: Sweep, n: int, params: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(x, sample numbers, valid)`` for one chunk; ``params`` is ``[start, lo, hi, strides]``
    for patterns, ``[start, size, 0, 0]`` for samples (uint64)."""
    dtype = jnp.dtype(sweep.dtype)
    i = params[0] + lax.iota(jnp.uint64, n)
    i32 = i.astype(jnp.uint32)
    if sweep.source == "patterns":
        lo, hi, strides = params[1], params[2], params[3]
        s = sweep.stride_log2
        bits = lo + (i << s)
        if s:
            bits = bits + (_hash(i32, 5) & jnp.uint32((1 << s) - 1))
        valid = (i < strides) & (bits < hi)
        return lax.bitcast_convert_type(bits.astype(_UINT[dtype.itemsize]), dtype), i32, valid
    return _sample_x(sweep.function, sweep.source, i32).astype(dtype), i32, i < params[1]


def _value_and_grad(
    fn: Callable[..., jax.Array], opts: dict[str, Any], x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    loss, vjp = jax.vjp(lambda a: fn(a, y, **opts), x)
    return loss, vjp(jnp.ones_like(loss))[0]


def _worst(err: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(largest error, its index)`` by one uint64 max over ``error bits | index``.

    The error's float64 bits are rounded up to their high 32 (so the reported value is never
    below the true one, and within 2^-20 relative of it) and the index fills the low 32.
    """
    bits = lax.bitcast_convert_type(err, jnp.uint64)
    high = (bits + jnp.uint64(0xFFFFFFFF)) >> 32
    key = (high << 32) | lax.iota(jnp.uint64, err.shape[0])
    key = jnp.max(jnp.where(valid, key, jnp.uint64(0)))
    ulps = lax.bitcast_convert_type((key >> 32) << 32, jnp.float64)
    return ulps, (key & jnp.uint64(0xFFFFFFFF)).astype(jnp.int32)


def _batched(sweep: Sweep) -> bool:
    """The focal sweep's variants, (gamma, alpha) pairs, run in one program, vmapped: the
    kernel takes both as arrays and has no Python-level branch on their values, so a traced
    option runs the same operations as the Python float a user passes."""
    keys = {tuple(k for k, _ in v.options) for v in sweep.variants}
    return sweep.function == "focal" and len(sweep.variants) > 1 and len(keys) == 1


def _option_value(v: Any) -> float:
    """An option as its float32 value; ``alpha=None`` as -1 (negative alpha is off)."""
    return -1.0 if v is None else float(np.float32(v))


def _as_float32(opts: dict[str, Any]) -> dict[str, Any]:
    """Options as the float32 values a float32 kernel receives (0.1 is 0.1f, 3.7 is 3.7f)."""
    return {k: None if v is None else float(np.float32(v)) for k, v in opts.items()}


def _exact_float64(x: jax.Array) -> jax.Array:
    """``x`` in float64, decoded from its bits.

    Decoding the bits, not converting, reads the value the dtype holds: a flushing device's
    convert reads float32 subnormals as 0, and XLA:GPU, allowed excess precision, skips the
    rounding of a bfloat16 or float16 result that the same program converts to float64.
    """
    if x.dtype == jnp.float64:
        return x
    info = jnp.finfo(x.dtype)
    m, e_bits = info.nmant, info.nexp
    bits = lax.bitcast_convert_type(x, _UINT[x.dtype.itemsize]).astype(jnp.uint32)
    mantissa = (bits & ((1 << m) - 1)).astype(jnp.int64)
    exponent = ((bits >> m) & ((1 << e_bits) - 1)).astype(jnp.int32)
    bias = (1 << (e_bits - 1)) - 1
    normal = exponent > 0
    significand = jnp.where(normal, mantissa + (1 << m), mantissa).astype(jnp.float64)
    value = jnp.ldexp(significand, jnp.maximum(exponent, 1) - bias - m)
    special = exponent == (1 << e_bits) - 1
    value = jnp.where(special, jnp.where(mantissa == 0, jnp.inf, jnp.nan), value)
    return jnp.where((bits >> (8 * x.dtype.itemsize - 1)) == 1, -value, value)


def chunk_function(
    sweep: Sweep, n: int, flush: bool
) -> Callable[[jax.Array], tuple[jax.Array, ...]]:
    """The jittable chunk of ``n`` inputs: ``params -> (ulps[R, 2], x bits[R, 2], y[R, 2],
    count)`` for the R rows of :meth:`Sweep.rows` and (loss, grad); trace it with x64 on.

    ``flush``: the device flushes subnormals; a 0 result for an exact value below the
    smallest normal number counts as exact.
    """
    dtype = jnp.dtype(sweep.dtype)
    ref = _REFERENCES[sweep.function]

    def chunk(params: jax.Array) -> tuple[jax.Array, ...]:
        fn = FUNCTIONS[sweep.function]
        x, i, valid = _inputs(sweep, n, params)
        # Inputs are scored at their own value, subnormal ones included: the kernel reads a
        # subnormal probability from its bits, and for logits it rounds to the same result.
        xr = _exact_float64(x)
        x_bits = lax.bitcast_convert_type(x, _UINT[dtype.itemsize]).astype(jnp.uint32)
        labels = {
            label: _sample_y(label, i) if isinstance(label, str) else jnp.full(x.shape, label)
            for label in sweep.labels
        }
        labels = {k: v.astype(dtype) for k, v in labels.items()}

        def scored(
            opts: dict[str, Any], ref_opts: dict[str, Any], y: jax.Array
        ) -> list[tuple[jax.Array, ...]]:
            """``(worst error, its x bits, its y)`` of the loss and of the gradient."""
            with jax.enable_x64(False):
                loss, grad = _value_and_grad(fn, opts, x, y)
            exact_loss, exact_grad, floor = ref(xr, y.astype(jnp.float64), **ref_opts)
            out: list[tuple[jax.Array, ...]] = []
            for err in (
                _exact.ulp_error(_exact_float64(loss), exact_loss, dtype, flush=flush),
                _exact.ulp_error(_exact_float64(grad), exact_grad, dtype, floor, flush=flush),
            ):
                worst, at = _worst(err, valid)
                out.append((worst, x_bits[at], y[at].astype(jnp.float64)))
            return out

        shape = (len(sweep.rows()), 2)
        if _batched(sweep):
            # One program for every variant: the options are float32 arrays and the variants
            # a vmapped axis (the focal kernel compiled once, not once per variant; the
            # results are bit for bit those of a program per variant with Python floats).
            keys = [k for k, _ in sweep.variants[0].options]
            table = jnp.asarray(
                [[_option_value(v) for _, v in variant.options] for variant in sweep.variants],
                jnp.float32,
            )

            def one_variant(values: jax.Array) -> tuple[jax.Array, ...]:
                opts = dict(zip(keys, values, strict=True))
                rows = [scored(opts, opts, labels[label]) for label in sweep.labels]
                flat = [q for row in rows for q in row]
                return tuple(jnp.stack(v) for v in zip(*flat, strict=True))

            per_variant = jax.vmap(one_variant)(table)
            ulps, where_x, where_y = (v.reshape(shape) for v in per_variant)
        else:
            out = []
            for variant, label in sweep.rows():
                opts = dict(variant.options)
                out.extend(scored(opts, _as_float32(opts), labels[label]))
            ulps, where_x, where_y = (jnp.stack(v).reshape(shape) for v in zip(*out, strict=True))
        return ulps, where_x, where_y, jnp.sum(valid, dtype=jnp.uint64)

    return chunk


def chunk_params(sweep: Sweep, n: int) -> Iterator[np.ndarray]:
    """The ``params`` of every chunk of ``n`` inputs, in order."""
    if sweep.source == "patterns":
        for lo, hi, blocks in sweep.blocks():
            for start in range(0, blocks, n):
                yield np.array([start, lo, hi, blocks], np.uint64)
    else:
        for start in range(0, sweep.size, n):
            yield np.array([start, sweep.size, 0, 0], np.uint64)


def _chunk_size(sweep: Sweep, chunk_log2: int) -> int:
    """Inputs per call: about ``2^chunk_log2`` evaluations per row (split between the
    variants of a batched sweep), no more than the sweep has."""
    if _batched(sweep):
        chunk_log2 = max(10, chunk_log2 - math.ceil(math.log2(len(sweep.variants))))
    return min(1 << chunk_log2, 1 << max(0, math.ceil(math.log2(max(1, sweep.total())))))


def _format_value(bits: int, dtype: Any) -> str:
    dt = np.dtype(dtype)
    value = np.array(bits, np.uint32).astype(np.dtype(f"u{dt.itemsize}")).view(dt)[()]
    return f"nan(0x{bits:0{2 * dt.itemsize}x})" if np.isnan(value) else str(value)


def _progress(total: int, enabled: bool) -> Any:
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is optional: no bar without it
            pass
        else:
            return tqdm(total=total, unit="in", unit_scale=True, file=sys.stderr, smoothing=0.05)

    class _Silent:
        def update(self, _: int) -> None:
            pass

        def close(self) -> None:
            pass

    return _Silent()


def run(
    sweeps: list[Sweep], *, chunk_log2: int = 24, workers: int = 2, progress: bool = True
) -> list[Result]:
    """Runs every sweep chunk by chunk and returns one :class:`Result` per label set."""
    flush = device_flushes_subnormals()
    sizes = [_chunk_size(s, chunk_log2) for s in sweeps]

    def compile_one(k: int) -> Any:
        with jax.enable_x64(True):
            spec = jax.ShapeDtypeStruct((4,), jnp.uint64)
            return jax.jit(chunk_function(sweeps[k], sizes[k], flush)).lower(spec).compile()

    with ThreadPoolExecutor(workers) as pool:
        compiled = list(pool.map(compile_one, range(len(sweeps))))

    def call(task: tuple[int, np.ndarray]) -> tuple[np.ndarray, ...]:
        k, params = task
        with jax.enable_x64(True):
            return tuple(np.asarray(v) for v in compiled[k](params))

    tasks = [(k, p) for k, s in enumerate(sweeps) for p in chunk_params(s, sizes[k])]
    best = [np.full((len(s.rows()), 2), -1.0) for s in sweeps]
    at_x = [np.zeros((len(s.rows()), 2), np.uint32) for s in sweeps]
    at_y = [np.zeros((len(s.rows()), 2)) for s in sweeps]
    counts = [0] * len(sweeps)
    bar = _progress(sum(s.total() for s in sweeps), progress)
    with ThreadPoolExecutor(workers) as pool:
        for (k, _), (ulps, xs, ys, count) in zip(tasks, pool.map(call, tasks), strict=True):
            counts[k] += int(count)
            better = ulps > best[k]
            best[k], at_x[k], at_y[k] = (
                np.where(better, new, old)
                for new, old in ((ulps, best[k]), (xs, at_x[k]), (ys, at_y[k]))
            )
            bar.update(int(count))
    bar.close()
    results = []
    for k, s in enumerate(sweeps):
        for r, (variant, label) in enumerate(s.rows()):
            loss, grad = (
                Worst(
                    float(best[k][r, j]),
                    _format_value(int(at_x[k][r, j]), s.dtype),
                    str(np.float32(at_y[k][r, j])),
                )
                for j in (0, 1)
            )
            results.append(Result(s, variant, label, counts[k], loss, grad))
    return results
