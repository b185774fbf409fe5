"""Self-check: ``python -m jaxbce.check`` measures jaxbce on the backend JAX sees right now.

It evaluates every public loss and its derivative under ``jax.jit`` on the default device
and prints, per (function, options, dtype, label set), the worst error in ulps of the loss
and of the gradient, the input where each occurs, the bound and whether it holds; with
``--exhaustive`` or ``--grads`` then ``jax.test_util.check_grads`` (order 2, forward and
reverse mode, float64) on every loss (compile-bound: not in the quick default, which says
so in its report).
The exit status is 1 if anything is out of bounds, 2 for arguments that would measure nothing
(an ``--only`` that matches no row, a count below 1): run it on a new accelerator before
trusting it.

Inputs. The default check (quick) takes every 2^12-th float32 bit pattern (2^10-th for
probabilities in [0, 1]; a hashed offset inside each stride, so not only mantissa 0), 2^20
uniform logits in [-20, 20], every bfloat16 and float16 bit pattern, and 1e5 drawn (input,
label) pairs per soft-label, option and focal case. ``--exhaustive`` takes every float32 bit
pattern (logits: all 2^32, NaNs and infinities included; probabilities: every one in [0, 1],
-0 included) and 1e8 / 1e7 drawn pairs per option / focal case. Inputs are generated on the
device and each chunk is reduced there to (worst error, its input).

Reference. float64 on the device (``jax.enable_x64``) by textbook stable formulas, never
jaxbce's code (:mod:`jaxbce._exact`): its rounding is about 2^-29 of a float32 ulp, exact
enough to score float32 (``tests/test_check.py`` bounds its error against mpmath at 2^-40
relative, XLA's float64 ``log1p`` included). float64 inputs are checked on a grid against a host
extended-precision (``np.longdouble``) reference.

Ulps. The error is ``|got - exact| / ulp(s)`` in the result's dtype (precision p), with
``ulp(s) = 2^(floor(log2 s) - (p - 1))``, the spacing of the dtype's numbers at ``s``, also
for ``s`` just above the smallest normal number; below it, on a device that flushes
subnormals (XLA:CPU), the unit is the smallest normal number itself, and elsewhere the
subnormal spacing. (Until 2026-11-26 the unit was floored at the smallest normal number for
every ``s``, which scored a result near ``1e-34`` in units some 2^10 of its own ulps large and
hid errors of 10^4 ulps in the focal and weighted losses there.) ``s`` is
``|exact|`` for every loss value and every hard-label gradient. A soft-label, smoothed or
weighted gradient is a difference of two terms, ``w[qc sigmoid(z) - pw q sigmoid(-z)]``, which
cancels near ``z = logit(q)``: there ``s = max(|exact|, |w qc sigmoid(z)|, |w pw q
sigmoid(-z)|)``; for probabilities the terms are ``w q/p`` and ``w qc/(1-p)``, for the focal
loss its three terms (see :func:`jaxbce._exact.focal`). A NaN input must give NaN (else the
error is inf); ``±inf`` must give the IEEE limits (loss 0 or inf, a finite gradient). Inputs
are scored at their own values, subnormal ones included. On a device that flushes
subnormals (XLA:CPU does, the H200 measured does not; detected at run time), a 0 result
where the exact value is below the smallest normal counts as exact (it is that value
flushed), since no flushing kernel can return more.
Labels and inputs are taken as the values of their dtype, options (``label_smoothing=0.1``,
``gamma=3.7``, ...) as the float32 values a float32 kernel receives.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.test_util import check_grads

from jaxbce._losses import binary_cross_entropy, sigmoid_binary_cross_entropy, sigmoid_focal_loss
from jaxbce._sweep import Result, Sweep, Variant, device_flushes_subnormals, label_name, run

_POSITIVE = [1e-7, 1e-3, 0.5, 1, 3, 10, 17, 20, 30, 50, 87, 88, 88.5, 100, 1e3, 1e4]
LOGITS = np.array([-v for v in reversed(_POSITIVE)] + [0.0] + _POSITIVE)
LABELS = [0.0, 1.0, 0.3, 1e-6, 1 - 1e-6]

#: the float64 grid and check_grads cases: (name, loss, keyword options, bound in ulps, to
#: which the float64 grid adds 2)
CASES: list[tuple[str, Callable[..., jax.Array], dict[str, Any], float]] = [
    ("sigmoid_bce", sigmoid_binary_cross_entropy, {}, 2.0),
    ("sigmoid_bce smoothing=0.1", sigmoid_binary_cross_entropy, {"label_smoothing": 0.1}, 2.0),
    (
        "sigmoid_bce pos_weight, weights",
        sigmoid_binary_cross_entropy,
        {"pos_weight": 3.5, "weights": 0.7},
        3.0,
    ),
    ("bce (probabilities)", binary_cross_entropy, {}, 2.0),
    ("focal gamma=2", sigmoid_focal_loss, {"gamma": 2.0}, 4.0),
    ("focal gamma=0.5", sigmoid_focal_loss, {"gamma": 0.5, "alpha": None}, 4.0),
]


#: the dtypes the check measures
DTYPES = ("float32", "bfloat16", "float16", "float64")


def _mantissa_bits(dtype: Any) -> int:
    return int(ml_dtypes.finfo(dtype).nmant) + 1


def _ulps(
    got: np.ndarray,
    exact: np.ndarray,
    dtype: Any,
    floor: np.ndarray | float = 0.0,
    *,
    weight: float = 1.0,
) -> np.ndarray:
    """float64 results: ``|got - exact|`` in ulps of ``max(|exact|, floor)``, the unit
    floored at the smallest normal float64 (times the weight).

    The floor is ``tiny * max(1, weight)``: an intermediate flushed to zero (``exp(-88)`` in
    float32) loses at most ``tiny``, and the weights scale that loss into the result.
    """
    ref_t = np.longdouble
    tiny = ref_t(float(ml_dtypes.finfo(dtype).tiny)) * ref_t(max(1.0, weight))
    scale = np.maximum(np.abs(exact.astype(ref_t)), ref_t(floor))
    safe = np.where(scale > 0, scale, ref_t(1))
    exponent = np.floor(np.log2(safe))
    unit = np.maximum(np.exp2(exponent - (_mantissa_bits(dtype) - 1)), tiny)
    err = np.abs(got.astype(ref_t) - exact.astype(ref_t)) / unit
    same = got.astype(ref_t) == exact.astype(ref_t)  # also inf == inf
    return np.where(same, 0.0, err)


def _reference(
    name: str, x: np.ndarray, y: np.ndarray, opts: dict[str, Any], ref_t: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host reference ``(loss, d/dx, gradient floor)`` in ``ref_t`` (float64 or extended)."""
    x, y = x.astype(ref_t), y.astype(ref_t)
    one = ref_t(1)

    def sig(v: np.ndarray) -> np.ndarray:
        e = np.exp(-np.abs(v))
        s: np.ndarray = np.where(v >= 0, one / (one + e), e / (one + e))
        return s

    def softplus(v: np.ndarray) -> np.ndarray:
        sp: np.ndarray = np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))
        return sp

    if name.startswith("bce"):
        with np.errstate(divide="ignore", invalid="ignore"):
            lp, l1p = np.log(x), np.log1p(-x)
            loss = -(y * np.maximum(lp, -100) + (one - y) * np.maximum(l1p, -100))
            # The clamped log is flat: its derivative is 0 where the clamp is active.
            d_a = np.where(lp > -100, -y / x, 0)
            d_b = np.where(l1p > -100, (one - y) / (one - x), 0)
        floor = np.where((y == 0) | (y == 1), 0, np.maximum(np.abs(d_a), np.abs(d_b)))
        return loss, d_a + d_b, floor
    if name.startswith("focal"):
        gamma = ref_t(opts["gamma"])
        alpha = opts.get("alpha", 0.25)
        ce = y * softplus(-x) + (one - y) * softplus(x)
        dce = (one - y) * sig(x) - y * sig(-x)
        u = y * sig(-x) + (one - y) * sig(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            du_over_u = (one - 2 * y) * sig(x) * sig(-x) / u
        mod = u**gamma
        at = one if alpha is None else alpha * y + (1 - alpha) * (one - y)
        loss = at * mod * ce
        grad = at * mod * (gamma * du_over_u * ce + dce)
        hard = (y == 0) | (y == 1)
        return loss, grad, np.where(hard, 0, np.abs(at * mod * np.maximum(y, one - y)))
    eps = ref_t(opts.get("label_smoothing", 0.0))
    pw, w = ref_t(opts.get("pos_weight", 1.0)), ref_t(opts.get("weights", 1.0))
    q, qc = y * (one - eps) + eps / 2, (one - y) * (one - eps) + eps / 2
    loss = w * (pw * q * softplus(-x) + qc * softplus(x))
    grad = w * (qc * sig(x) - pw * q * sig(-x))
    hard = ((y == 0) | (y == 1)) & (eps == 0)
    return loss, grad, np.where(hard, 0, np.maximum(np.abs(pw * q * w), np.abs(qc * w)))


def measure(
    dtype: Any, cases: list[Any] | None = None
) -> list[tuple[str, str, float, float, float]]:
    """Worst loss and gradient errors in ulps over the grid: rows ``(case, dtype, loss, grad,
    bound)``. Used for float64 inputs, whose reference is the host's extended precision."""
    rows = []
    x64 = np.dtype(dtype) == np.float64
    ref_t = np.longdouble if x64 else np.float64
    for name, fn, opts, bound in cases or CASES:
        grid_x, grid_y = np.meshgrid(LOGITS, LABELS, indexing="ij")
        if name.startswith("bce"):
            with np.errstate(over="ignore"):
                grid_x = 1 / (1 + np.exp(-grid_x / 10))  # probabilities, 0 and 1 included
        x = np.asarray(grid_x, dtype)
        # Subnormal inputs as 0 on every device (XLA:CPU flushes them), the reference too.
        x[np.abs(x.astype(np.float64)) < float(ml_dtypes.finfo(dtype).tiny)] = 0
        y = grid_y.astype(np.float64 if x64 else np.float32)
        f = jax.jit(jax.vmap(jax.value_and_grad(lambda a, b, fn=fn, opts=opts: fn(a, b, **opts))))
        got_l, got_g = (np.asarray(v, np.float64) for v in f(x.ravel(), y.ravel()))
        exact_l, exact_g, floor = _reference(
            name, x.ravel().astype(np.float64), y.ravel(), opts, ref_t
        )
        finite = np.isfinite(exact_l) & np.isfinite(exact_g)
        weight = opts.get("pos_weight", 1.0) * opts.get("weights", 1.0)
        el = _ulps(got_l[finite], exact_l[finite], dtype, weight=weight)
        eg = _ulps(got_g[finite], exact_g[finite], dtype, floor[finite], weight=weight)
        if np.dtype(dtype).itemsize < 4:
            bound = 1.0  # computed in float32 and rounded once
        elif x64:
            bound += 2.0
        rows.append((name, np.dtype(dtype).name, float(el.max()), float(eg.max()), bound))
    return rows


def gradient_checks(cases: list[Any] | None = None) -> list[tuple[str, bool, str]]:
    """``check_grads`` order 2, fwd and rev, in float64 for every loss and option set."""
    results = []
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for name, fn, opts, _ in cases or CASES:
            x = rng.normal(size=(2, 3)) * 2
            if name.startswith("bce"):
                x = 0.2 + 0.6 / (1 + np.exp(-x))
            y = rng.uniform(0.1, 0.9, size=(2, 3))
            try:
                check_grads(
                    jax.jit(lambda a, b, fn=fn, opts=opts: fn(a, b, reduction="sum", **opts)),
                    (x, y),
                    order=2,
                    modes=["fwd", "rev"],
                    eps=1e-5,
                )
                results.append((name, True, ""))
            except AssertionError as err:
                results.append((name, False, str(err).splitlines()[0]))
    return results


#: every float32 bit pattern; those of the probabilities in [0, 1] (-0 included)
F32_ALL = ((0, 2**32),)
F32_PROBS = ((0, 0x3F800001), (0x80000000, 0x80000001))
#: the same for the 16-bit dtypes (1.0 is 0x3F80 in bfloat16, 0x3C00 in float16)
HALF_ALL = ((0, 2**16),)
HALF_PROBS = {
    "bfloat16": ((0, 0x3F81), (0x8000, 0x8001)),
    "float16": ((0, 0x3C01), (0x8000, 0x8001)),
}

HARD = (Variant((), 1.0),)
HALF = (Variant((), 0.51),)
SIGMOID_OPTIONS = (
    Variant((), 2.0),
    Variant((("label_smoothing", 0.1),), 2.0),
    Variant((("pos_weight", 3.5), ("weights", 0.7)), 3.0),
    Variant((("pos_weight", 0.25), ("weights", 1.5)), 3.0),
)
PROB_OPTIONS = (
    Variant((), 2.0),
    Variant((("label_smoothing", 0.1),), 2.0),
    Variant((("weights", 0.7),), 3.0),
)
FOCAL_GAMMAS = (0.0, 0.5, 1.0, 2.0, 3.7)
FOCAL_ALPHAS = (None, 0.25, 0.6)


def sweeps(
    *,
    exhaustive: bool,
    samples: int | None = None,
    focal_samples: int | None = None,
    stride_log2: int | None = None,
) -> list[Sweep]:
    """The device sweeps of the quick check or of ``--exhaustive`` (see the module docstring).

    ``stride_log2`` overrides the float32 bit-pattern stride (0 = every pattern).
    """
    n = samples or (10**8 if exhaustive else 10**5)
    n_focal = focal_samples or (10**7 if exhaustive else 10**5)
    stride = 0 if exhaustive else None
    if stride_log2 is not None:
        stride = stride_log2
    out = [
        Sweep(
            "sigmoid_bce",
            "float32",
            "patterns",
            (0.0, 1.0),
            HARD,
            ranges=F32_ALL,
            stride_log2=12 if stride is None else stride,
        ),
        Sweep(
            "bce",
            "float32",
            "patterns",
            (0.0, 1.0),
            HARD,
            ranges=F32_PROBS,
            stride_log2=10 if stride is None else stride,
        ),
    ]
    if not exhaustive:
        out.append(Sweep("sigmoid_bce", "float32", "band", (0.0, 1.0), HARD, size=2**20))
    for dtype in ("bfloat16", "float16"):
        out.append(Sweep("sigmoid_bce", dtype, "patterns", (0.0, 1.0), HALF, ranges=HALF_ALL))
        out.append(Sweep("bce", dtype, "patterns", (0.0, 1.0), HALF, ranges=HALF_PROBS[dtype]))
    out.append(Sweep("sigmoid_bce", "float32", "mix", ("soft",), SIGMOID_OPTIONS, size=n))
    out.append(Sweep("bce", "float32", "mix", ("soft",), PROB_OPTIONS, size=n))
    variants = tuple(
        Variant((("gamma", gamma), ("alpha", alpha)), max(4.0, 2.0 + gamma))
        for gamma in FOCAL_GAMMAS
        for alpha in FOCAL_ALPHAS
    )
    out.append(Sweep("focal", "float32", "mix", ("hard", "soft"), variants, size=n_focal))
    return out


def select(all_sweeps: list[Sweep], pattern: str | None, dtypes: list[str]) -> list[Sweep]:
    """The sweeps of ``dtypes`` cut to the variants and labels of rows matching ``pattern``."""
    out = []
    for s in all_sweeps:
        if s.dtype not in dtypes:
            continue
        rows = [
            (v, lab) for v, lab in s.rows() if not pattern or re.search(pattern, s.row_name(v, lab))
        ]
        if rows:
            variants = tuple(v for v in s.variants if any(v == rv for rv, _ in rows))
            labels = tuple(lab for lab in s.labels if any(lab == rl for _, rl in rows))
            out.append(
                Sweep(
                    s.function, s.dtype, s.source, labels, variants, s.size, s.ranges, s.stride_log2
                )
            )
    return out


_COLUMNS = (
    f"{'function':11s} {'options':27s} {'dtype':8s} {'labels':6s} {'inputs':18s} "
    f"{'loss ulp':>9s}  {'at (x, y)':30s} {'grad ulp':>9s}  {'at (x, y)':30s} {'bound':>5s}  ok"
)


def _row(r: Result) -> str:
    name = "p" if r.sweep.function == "bce" else "z"
    where = [f"{name}={w.x} y={w.y}" for w in (r.loss, r.grad)]
    return (
        f"{r.sweep.function:11s} {r.variant.text:27s} {r.sweep.dtype:8s} "
        f"{label_name(r.label):6s} {r.sweep.inputs_text:18s} "
        f"{r.loss.ulps:9.3g}  {where[0]:30s} {r.grad.ulps:9.3g}  {where[1]:30s} "
        f"{r.variant.bound:5.3g}  {'yes' if r.ok else 'NO'}"
    )


def _count(text: str) -> int:
    """A positive count written as ``100000000`` or ``1e8``."""
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected a count such as 100000 or 1e8, got {text!r}"
        ) from err
    if not (1 <= value < 2**63 and value == int(value)):  # inf and NaN fail the first
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(value)


def _in_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from err
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {value}")
        return value

    return parse


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"not a regular expression ({err}): {text!r}") from err
    return text


def _default_workers() -> int:
    return (os.cpu_count() or 2) if jax.default_backend() == "cpu" else 2


def main(argv: list[str] | None = None) -> int:
    """Prints the accuracy table and gradient checks; returns 1 if anything is out of bounds."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxbce.check", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--exhaustive",
        action="store_true",
        help="every float32 bit pattern and 1e8 (1e7 focal) samples per case; implies --grads",
    )
    parser.add_argument(
        "--grads",
        action="store_true",
        help="also run check_grads (order 2, fwd + rev, float64) on every case",
    )
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument(
        "--only",
        type=_regex,
        metavar="REGEX",
        help="rows whose 'function options dtype labels inputs' match (float64 grid rows are"
        " named '<case> float64 grid', gradient checks 'check_grads <case>')",
    )
    parser.add_argument(
        "--samples", type=_count, help="drawn inputs per option case (1e5; 1e8 exhaustive)"
    )
    parser.add_argument(
        "--focal-samples", type=_count, help="drawn inputs per focal case (1e5; 1e7 exhaustive)"
    )
    parser.add_argument(
        "--stride-log2",
        type=_in_range(0, 31),
        help="take every 2^K-th float32 bit pattern (0: all)",
    )
    parser.add_argument(
        "--chunk-log2",
        type=_in_range(8, 30),
        help="inputs per jitted call (default 2^18 on CPU, 2^24 elsewhere)",
    )
    parser.add_argument(
        "--workers",
        type=_in_range(1, 256),
        help="chunks in flight (default: the CPU cores on the CPU backend, 2 on others)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="also write the report to FILE, a new file (an existing one is never replaced; "
        "written as FILE.partial and renamed when the run is done: an interrupted run "
        "leaves no FILE)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    chosen = select(
        sweeps(
            exhaustive=args.exhaustive,
            samples=args.samples,
            focal_samples=args.focal_samples,
            stride_log2=args.stride_log2,
        ),
        args.only,
        args.dtypes,
    )
    args.grads = args.grads or args.exhaustive
    if not chosen and not any(_host_cases(args.only, "float64" in args.dtypes, args.grads)):
        # A run that measures nothing must not report "all within bounds".
        if not args.grads and _host_cases(args.only, False, True)[1]:
            parser.error(f"--only {args.only!r}: only check_grads rows, which need --grads")
        parser.error(f"--only {args.only!r} with --dtypes {' '.join(args.dtypes)}: no row")
    if args.out and (
        os.path.isdir(args.out) or not os.path.isdir(os.path.dirname(os.path.abspath(args.out)))
    ):
        parser.error(f"--out {args.out!r}: expected a file in an existing folder")
    # A new file only: a report is committed on purpose, never replaced by a run (one with
    # --only or fewer samples would look like a full one). Written beside FILE and renamed
    # when done (after every argument is checked): an interrupted run leaves no FILE.
    partial = f"{args.out}.partial" if args.out else None
    for path in (args.out, partial):
        if path and os.path.lexists(path):
            parser.error(f"--out {args.out!r}: {path!r} exists, and is never replaced")
    try:
        out = open(partial, "x") if partial else None
    except OSError as err:  # unwritable: refused before measuring, not after
        parser.error(f"--out {args.out!r}: cannot write {partial!r}: {err.strerror}")
    try:
        status = _report(args, chosen, out)
    finally:
        if out:
            out.close()
    if partial:
        try:  # a link fails where FILE appeared during the run: never replaced
            os.link(partial, args.out)
            os.remove(partial)
        except OSError as err:  # that, or a file system without hard links
            if isinstance(err, FileExistsError) or os.path.lexists(args.out):
                print(f"--out {args.out!r} appeared during the run; the report is {partial!r}")
                return 1
            os.replace(partial, args.out)
    return status


def _report(args: argparse.Namespace, chosen: list[Sweep], out: TextIO | None) -> int:
    def emit(line: str = "") -> None:
        print(line, flush=True)
        if out:
            out.write(line + "\n")

    dev = jax.devices()[0]
    on_cpu = dev.platform == "cpu"
    kind = " (exhaustive)" if args.exhaustive else ""
    flush = "yes" if device_flushes_subnormals() else "no"
    emit(
        f"jaxbce self-check{kind} on {dev.platform} ({dev.device_kind}), jax {jax.__version__},"
        f" subnormals flushed: {flush}"
    )
    for line in _LEGEND:
        emit(line)
    t0 = time.perf_counter()
    # The float64 grid and check_grads are compile-bound: they run beside the sweeps.
    with ThreadPoolExecutor(1) as background:
        host = background.submit(_host_checks, args.only, "float64" in args.dtypes, args.grads)
        results = run(
            chosen,
            chunk_log2=args.chunk_log2 or (18 if on_cpu else 24),
            workers=args.workers or _default_workers(),
            progress=not args.no_progress,
        )
        host_lines, failed = host.result()
    emit()
    emit(_COLUMNS)
    for r in results:
        if args.only and not re.search(args.only, r.sweep.row_name(r.variant, r.label)):
            continue
        failed |= not r.ok
        emit(_row(r))
    seconds = time.perf_counter() - t0
    evaluations = sum(r.inputs for r in results)
    emit(f"({evaluations:.3g} evaluations of a loss and its gradient; {seconds:.0f} s in all)")
    for line in host_lines:
        emit(line)
    emit("\nresult: " + ("FAIL" if failed else "all within bounds"))
    return 1 if failed else 0


def _host_cases(pattern: str | None, float64: bool, grads: bool) -> tuple[list[Any], list[Any]]:
    """The cases of the float64 grid (if ``float64``) and of ``check_grads`` (if ``grads``)
    that ``pattern`` selects."""
    grid = [c for c in CASES if not pattern or re.search(pattern, f"{c[0]} float64 grid")]
    checked = [c for c in CASES if not pattern or re.search(pattern, f"check_grads {c[0]}")]
    return (grid if float64 else []), (checked if grads else [])


def _host_checks(pattern: str | None, float64: bool, grads: bool) -> tuple[list[str], bool]:
    """The float64 grid against the host's extended precision and ``check_grads``: the
    report's lines and whether anything failed."""
    lines: list[str] = []
    failed = False
    cases, grad_cases = _host_cases(pattern, float64, grads)
    if cases:
        lines.append("\nfloat64 inputs: grid of 33 logits x 5 labels, host np.longdouble reference")
        lines.append(f"  {'case':34s} {'loss ulp':>9s} {'grad ulp':>9s} {'bound':>6s}  ok")
        if np.finfo(np.longdouble).nmant <= 52:
            lines.append("  skipped: this host has no extended precision for a reference")
            cases = []
        with jax.enable_x64(True):
            rows = measure(jnp.float64, cases) if cases else []
        for name, _, el, eg, bound in rows:
            ok = el <= bound and eg <= bound
            failed |= not ok
            lines.append(f"  {name:34s} {el:9.2f} {eg:9.2f} {bound:6.1f}  {'yes' if ok else 'NO'}")
    if grad_cases:
        lines.append("\ncheck_grads (order 2, fwd + rev, float64):")
        for name, ok, msg in gradient_checks(grad_cases):
            failed |= not ok
            lines.append(f"  {name:34s} {'pass' if ok else 'FAIL ' + msg}")
    elif not grads:
        lines.append(
            "\ncheck_grads (order 2, fwd + rev, float64): not run (--grads or --exhaustive)"
        )
    return lines, failed


_LEGEND = (
    "error: |got - exact| / ulp(s) in the result's dtype; ulp(s) = 2^(floor(log2 s) - (p-1)),"
    " its own spacing; below the smallest normal number: that number (flushing device) or the"
    " subnormal spacing",
    "s = |exact| for losses and hard-label gradients; max(|exact|, |each term|) for"
    " soft/smoothed/weighted gradients",
    "exact: float64 on the device (textbook formulas), options rounded to float32; NaN in ->"
    " NaN out, ±inf -> IEEE limits",
    "flushing device: a 0 result for an exact value below the smallest normal is exact;"
    " 'at': the input (x, y) of the worst error",
)


if __name__ == "__main__":
    sys.exit(main())
