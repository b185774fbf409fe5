"""Benchmark jaxbce against optax, PyTorch and the memory-bandwidth floor.

A binary cross-entropy is memory-bound: the best possible ``value_and_grad`` of a mean
loss over N float32 logits reads the logits and the labels once and writes the gradient
once, 12N bytes (9N with bool labels, 5N with bfloat16 logits and bool labels). This
script times, for N from 2^12 to 2^24 (2^26 on a GPU) elements in a ``(B, C)``
multi-label layout, the forward pass and ``jax.value_and_grad`` of the mean loss of:

* jaxbce (float32 logits with float32, bool labels; bfloat16 logits with bool labels;
  ``where=`` masking; the focal loss),
* ``optax.sigmoid_binary_cross_entropy`` and ``optax.sigmoid_focal_loss``,
* the naive formula ``-(y*log(sigmoid(z)) + (1-y)*log(1-sigmoid(z)))``, autodiffed,
* PyTorch ``BCEWithLogitsLoss`` forward and forward+backward (CPU, or CUDA on a GPU),
* a single fused elementwise pass over the same arrays (the stable elementwise loss,
  no reduction: reads logits and labels once, writes one float32 array),
* the bandwidth floor: an XLA copy moving the same number of bytes as the ideal
  contender (read B/2 bytes, write B/2 bytes).

Method: every function is compiled ahead of time (compile time reported on its own),
warmed up, then all contenders of one size are run round by round (A B C D, A B C D, ...)
so that machine noise hits all of them alike; each result is the median over rounds,
and ratios (to jaxbce, to the floor) are medians of the per-round ratios. Every sample
blocks on its results (``jax.block_until_ready``, ``torch.cuda.synchronize``) and follows
one untimed call of the same function (see :class:`Schedule`). On CPU the JSON records
how much CPU other processes used during each size's rounds (``foreign_cpu``).

Memory: XLA's ``compiled.memory_analysis()`` for each JAX function, the peak device
memory of each JAX function on a GPU (``memory_stats()``) and
``torch.cuda.max_memory_allocated()`` for PyTorch on CUDA.

Usage::

    python benchmarks/run.py             # full run: CPU 2^12..2^24, GPU 2^12..2^26
    python benchmarks/run.py --quick     # under 2 minutes on 2 CPU cores
    python benchmarks/run.py --sizes 4096 2^26 --out /tmp/bench
    python benchmarks/run.py --summarize benchmarks/results/cpu-<date>.json  # Markdown
    python benchmarks/run.py --linear-only   # fused linear loss only (minutes on CPU)
    python benchmarks/run.py --quick --linear --linear-sizes 2^12  # both, small

Writes ``<out>/<backend>-<YYYY-MM-DD>.json`` and ``.png`` (time per element against N)
and prints a table per size, then the pass/fail lines of the targets.

Fused linear layer (``--linear`` adds it to the run, ``--linear-only`` runs only it and
writes ``<out>/<backend>-linear-<YYYY-MM-DD>.json``): ``jax.value_and_grad`` in the
features, kernel and bias of ``jaxbce.linear_sigmoid_binary_cross_entropy`` (dense bool
labels, and sparse (B, 8) positive indices) against the unfused
``sigmoid_binary_cross_entropy(features @ kernel + bias, labels)``, for B = 1024, d = 256
and L in 2^14, 2^16, 2^17 (``--linear-sizes``), timed round by round as above. The JSON
key ``fused_linear`` holds times, ratios to the unfused loss and XLA temp bytes; the
unfused loss is compiled at every L but not run where its temporaries exceed 40 % of RAM.
It is not part of the default run: on 2 CPU cores it takes several minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import hashlib
import importlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results"

FORWARD = "forward"
VALUE_AND_GRAD = "value_and_grad"
FLOOR = "floor"
MODES = (FORWARD, VALUE_AND_GRAD)

#: Targets from the issue; the numbers are checked in :func:`evaluate_targets`.
CPU_TARGET_N = 2**24
GPU_TARGET_N = 2**26


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Parses a size given as ``4096``, ``2^12`` or ``2**12``.

    Args:
      text: The command-line word.

    Returns:
      The number of elements, a positive integer.

    Raises:
      argparse.ArgumentTypeError: If the word is not a positive integer or a power of two.
    """
    match = re.fullmatch(r"\s*2\s*(?:\^|\*\*)\s*(\d+)\s*", text)
    try:
        value = 2 ** int(match.group(1)) if match else int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"size {text!r}: expected an integer such as 4096, 2^12 or 2**12"
        ) from err
    if value < 8:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected at least 8 elements")
    return value


def shape_for(n: int, classes: int) -> tuple[int, int]:
    """Returns the multi-label ``(batch, classes)`` shape used for ``n`` elements.

    Args:
      n: Total number of elements.
      classes: Preferred number of labels per example.

    Returns:
      ``(n // classes, classes)`` when ``classes`` divides ``n``, else ``(1, n)``.
    """
    if n > classes and n % classes == 0:
        return (n // classes, classes)
    return (1, n)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Host (NumPy) inputs shared by every contender at one size.

    Attributes:
      logits: Float32 logits, standard normal times 3, shape ``(B, C)``.
      labels: Float32 labels in {0, 1}, a third of them ones.
      mask: Bool mask for ``where=``, nine tenths of it True.
    """

    logits: np.ndarray
    labels: np.ndarray
    mask: np.ndarray

    @property
    def n(self) -> int:
        """The number of elements."""
        return int(self.logits.size)

    @classmethod
    def make(cls, shape: tuple[int, int], seed: int = 0) -> Batch:
        """Draws the inputs for one shape.

        Args:
          shape: ``(B, C)``.
          seed: NumPy seed.

        Returns:
          The batch.
        """
        rng = np.random.default_rng(seed)
        logits = (3.0 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        labels = (rng.random(shape, dtype=np.float32) < 1 / 3).astype(np.float32)
        mask = rng.random(shape, dtype=np.float32) < 0.9
        return cls(logits=logits, labels=labels, mask=mask)


# --------------------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------------------

ArgsMaker = Callable[[Batch], tuple[Any, ...]]


@dataclasses.dataclass(frozen=True)
class JaxContender:
    """A JAX scalar loss timed as a forward pass and as ``jax.value_and_grad``.

    Attributes:
      key: Short stable identifier, used in the JSON.
      label: Name printed in the table and the plot.
      loss: Mean loss ``loss(*args) -> scalar``; differentiated in its first argument.
      make_args: Builds the device arguments from the host batch.
      ref: Key of the contender whose time divides this one's (``None``: itself).
      modes: The modes timed.
      group: ``"bce"``, ``"focal"`` or ``"reference"``.
      as_is: Time ``loss`` itself in every mode, neither reduced nor differentiated (the
        fused elementwise pass, listed under ``value_and_grad`` for its 12N bytes).
    """

    key: str
    label: str
    loss: Callable[..., jax.Array]
    make_args: ArgsMaker
    ref: str | None = "jaxbce"
    modes: tuple[str, ...] = MODES
    group: str = "bce"
    as_is: bool = False


def _f32_float(batch: Batch) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(batch.logits), jnp.asarray(batch.labels)


def _f32_bool(batch: Batch) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(batch.logits), jnp.asarray(batch.labels.astype(bool))


def _bf16_bool(batch: Batch) -> tuple[jax.Array, jax.Array]:
    return (
        jnp.asarray(batch.logits).astype(jnp.bfloat16),
        jnp.asarray(batch.labels.astype(bool)),
    )


def _f32_float_mask(batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    return jnp.asarray(batch.logits), jnp.asarray(batch.labels), jnp.asarray(batch.mask)


def naive_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The textbook formula, unstable for large ``|logits|``; here only for its speed.

    Args:
      logits: Logits.
      labels: Labels in [0, 1], same shape.

    Returns:
      The mean loss.
    """
    p = jax.nn.sigmoid(logits)
    return jnp.mean(-(labels * jnp.log(p) + (1 - labels) * jnp.log(1 - p)))


def fused_elementwise_pass(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """One elementwise pass: the stable loss per element, no reduction.

    Reads ``logits`` and ``labels`` once and writes one array of the same size: the
    same 12N bytes as an ideal ``value_and_grad`` with float32 inputs.

    Args:
      logits: Float32 logits.
      labels: Float32 labels, same shape.

    Returns:
      ``max(z, 0) - z*y + log1p(exp(-|z|))`` elementwise.
    """
    return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def jax_contenders(jaxbce: ModuleType) -> list[JaxContender]:
    """Registers the JAX contenders, in the order they run in each round.

    Args:
      jaxbce: The imported library.

    Returns:
      The contenders.
    """
    bce = jaxbce.sigmoid_binary_cross_entropy
    focal = jaxbce.sigmoid_focal_loss
    contenders = [
        JaxContender(
            "jaxbce",
            "jaxbce",
            lambda z, y: bce(z, y, reduction="mean"),
            _f32_float,
            ref=None,
        ),
        JaxContender(
            "optax",
            "optax",
            lambda z, y: jnp.mean(optax.sigmoid_binary_cross_entropy(z, y)),
            _f32_float,
        ),
        JaxContender("naive", "naive formula", naive_bce, _f32_float),
        JaxContender(
            "jaxbce_bool",
            "jaxbce bool labels",
            lambda z, y: bce(z, y, reduction="mean"),
            _f32_bool,
        ),
        JaxContender(
            "jaxbce_bf16_bool",
            "jaxbce bf16+bool",
            lambda z, y: bce(z, y, reduction="mean"),
            _bf16_bool,
        ),
        JaxContender(
            "jaxbce_where",
            "jaxbce where=",
            lambda z, y, m: bce(z, y, where=m, reduction="mean"),
            _f32_float_mask,
        ),
        JaxContender(
            "jaxbce_focal",
            "jaxbce focal",
            lambda z, y: focal(z, y, alpha=0.25, gamma=2.0, reduction="mean"),
            _f32_float,
            ref=None,
            group="focal",
        ),
        JaxContender(
            "optax_focal",
            "optax focal",
            lambda z, y: jnp.mean(optax.sigmoid_focal_loss(z, y, alpha=0.25, gamma=2.0)),
            _f32_float,
            ref="jaxbce_focal",
            group="focal",
        ),
        JaxContender(
            "fused_pass",
            "fused elementwise pass",
            fused_elementwise_pass,
            _f32_float,
            modes=(VALUE_AND_GRAD,),
            group="reference",
            as_is=True,
        ),
    ]
    return contenders


def import_jaxbce() -> ModuleType:
    """Imports jaxbce, from this checkout when it is not installed.

    Returns:
      The module.

    Raises:
      ImportError: If it cannot be imported or lacks the public losses.
    """
    try:
        module = importlib.import_module("jaxbce")
    except ImportError:
        sys.path.insert(0, str(ROOT))
        module = importlib.import_module("jaxbce")
    for name in ("sigmoid_binary_cross_entropy", "sigmoid_focal_loss"):
        if not hasattr(module, name):
            raise ImportError(f"jaxbce at {getattr(module, '__path__', '?')} has no {name!r}")
    return module


# --------------------------------------------------------------------------------------
# Timed tasks
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Task:
    """One timed callable in the rounds.

    Attributes:
      key: Contender key (floors: ``floor_<ideal bytes>``).
      label: Printed name.
      mode: ``"forward"``, ``"value_and_grad"`` or ``"floor"``.
      run: Launches one call and returns what to block on.
      block: Waits for what ``run`` returned.
      ideal_bytes: Bytes an ideal implementation moves (reads plus writes).
      ref: Key of the contender dividing this one's time, in the same mode.
      group: Contender group.
      compile_s: Seconds to lower and compile (JAX only).
      memory: Memory analysis and peaks.
      inner: Calls per sample (small sizes: several calls, averaged).
      samples: Seconds per call, one per round.
    """

    key: str
    label: str
    mode: str
    run: Callable[[], Any]
    block: Callable[[Any], None]
    ideal_bytes: int
    ref: str | None = None
    group: str = "bce"
    compile_s: float | None = None
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)
    inner: int = 1
    samples: list[float] = dataclasses.field(default_factory=list)

    def sample(self) -> float:
        """Runs ``inner`` calls, blocks on all of them, and returns seconds per call."""
        start = time.perf_counter()
        outs = [self.run() for _ in range(self.inner)]
        self.block(outs)
        return (time.perf_counter() - start) / self.inner


def ideal_bytes(args: Sequence[Any], mode: str) -> int:
    """Bytes an ideal implementation moves: every input read once, the gradient written once.

    Args:
      args: The arguments (the first one is the differentiated logits).
      mode: ``"forward"`` (inputs only) or ``"value_and_grad"``.

    Returns:
      The byte count.
    """
    read = sum(int(a.nbytes) for a in args)
    return read + (int(args[0].nbytes) if mode == VALUE_AND_GRAD else 0)


_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
}
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")
_NOT_WORK = ("parameter(", "constant(", "tuple(", "get-tuple-element(", "bitcast(")


def _shape_bytes(text: str) -> int:
    total = 0
    for dtype, dims in _SHAPE.findall(text):
        total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def entry_hlo_stats(hlo_text: str) -> dict[str, int]:
    """Counts the work of the entry computation of an optimized HLO module.

    Args:
      hlo_text: ``compiled.as_text()``.

    Returns:
      ``fusions`` (fusion instructions), ``ops`` (all instructions except parameters,
      constants, tuples and bitcasts) and ``traffic_bytes``: for each of those ops, the
      bytes of its operands plus its outputs. That is the memory traffic of the program if
      every op reads each operand once; compare it with the ideal bytes.
    """
    start = hlo_text.find("\nENTRY")
    body = hlo_text[start:].split("\n}\n", 1)[0] if start >= 0 else ""
    shapes: dict[str, int] = {}
    fusions = ops = traffic = 0
    for line in body.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT )?(%[\w.\-]+) = (.*)$", line)
        if not match:
            continue
        name, rest = match.groups()
        head = re.split(r"\s[\w\-]+\(", rest, maxsplit=1)[0]  # The output shape.
        shapes[name] = _shape_bytes(head)
        if any(word in rest for word in _NOT_WORK):
            continue
        ops += 1
        fusions += " fusion(" in rest
        call = rest[len(head) :].split("), ", 1)[0]
        operands = re.findall(r"%[\w.\-]+", call)
        traffic += shapes[name] + sum(shapes.get(o, 0) for o in operands)
    return {"fusions": fusions, "ops": ops, "traffic_bytes": traffic}


def _memory_analysis(compiled: Any) -> dict[str, Any]:
    try:
        stats = compiled.memory_analysis()
    except Exception as err:  # Not every backend implements it.
        return {"error": repr(err)}
    if stats is None:
        return {}
    fields = ("temp_size_in_bytes", "output_size_in_bytes", "argument_size_in_bytes")
    return {name: int(getattr(stats, name)) for name in fields if hasattr(stats, name)}


def _jax_peak_bytes(call: Callable[[], Any]) -> int | None:
    """Peak device memory allocated while ``call`` runs, above what was live before.

    ``peak_bytes_in_use`` only grows and cannot be reset, so a ballast buffer first
    fills the gap between the live bytes and the process's old peak: any allocation
    made by ``call`` then raises the peak, and the rise is its own peak.

    Args:
      call: Runs and blocks on one JAX computation.

    Returns:
      Bytes, or ``None`` where the device keeps no memory statistics (CPU).
    """
    device = jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # Backends without statistics raise or return None.
        stats = None
    if not stats or "peak_bytes_in_use" not in stats:
        call()
        return None
    gap = stats["peak_bytes_in_use"] - stats["bytes_in_use"] + (1 << 20)
    ballast = jax.block_until_ready(jnp.zeros((gap,), jnp.uint8))
    live = device.memory_stats()["bytes_in_use"]
    call()
    peak = device.memory_stats()["peak_bytes_in_use"]
    del ballast
    return max(0, int(peak - live))


def jax_tasks(contender: JaxContender, batch: Batch, hlo_dir: Path | None) -> list[Task]:
    """Compiles one JAX contender's modes and returns its tasks.

    Args:
      contender: The contender.
      batch: Host inputs.
      hlo_dir: Where to write the optimized HLO text, or ``None``.

    Returns:
      One task per mode.
    """
    args = jax.block_until_ready(contender.make_args(batch))
    tasks = []
    for mode in contender.modes:
        as_is = contender.as_is or mode == FORWARD
        fn = contender.loss if as_is else jax.value_and_grad(contender.loss)
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        compile_s = time.perf_counter() - start
        text = compiled.as_text()
        memory = _memory_analysis(compiled)
        memory.update({f"hlo_{k}": v for k, v in entry_hlo_stats(text).items()})
        if hlo_dir is not None:
            hlo_dir.mkdir(parents=True, exist_ok=True)
            (hlo_dir / f"{contender.key}-{mode}-{batch.n}.hlo.txt").write_text(text)
        jax.block_until_ready(compiled(*args))  # First call: lazy initialisation.
        memory["device_peak_bytes"] = _jax_peak_bytes(
            lambda c=compiled: jax.block_until_ready(c(*args))
        )
        tasks.append(
            Task(
                key=contender.key,
                label=contender.label,
                mode=mode,
                run=lambda c=compiled: c(*args),
                block=jax.block_until_ready,
                ideal_bytes=ideal_bytes(args, mode),
                ref=contender.ref,
                group=contender.group,
                compile_s=compile_s,
                memory=memory,
            )
        )
    return tasks


def floor_task(nbytes: int) -> Task:
    """The bandwidth floor for ``nbytes`` of traffic: an XLA copy of ``nbytes / 2`` bytes.

    The copy is a bitwise NOT of uint32 words, so XLA can neither elide it nor alias its
    output to its input; like every contender it writes a freshly allocated output.

    Args:
      nbytes: Reads plus writes to match.

    Returns:
      The task.
    """
    words = max(1, math.ceil(nbytes / 8))
    x = jax.block_until_ready(jnp.arange(words, dtype=jnp.uint32))
    compiled = jax.jit(lambda a: ~a).lower(x).compile()
    jax.block_until_ready(compiled(x))
    return Task(
        key=f"floor_{nbytes}",
        label=f"copy {nbytes} B",
        mode=FLOOR,
        run=lambda: compiled(x),
        block=jax.block_until_ready,
        ideal_bytes=nbytes,
        group="floor",
    )


def torch_tasks(torch: ModuleType, device: str, batch: Batch) -> list[Task]:
    """PyTorch ``BCEWithLogitsLoss`` (mean): forward, and forward plus backward.

    Args:
      torch: The imported torch module.
      device: ``"cpu"`` or ``"cuda"``.
      batch: Host inputs.

    Returns:
      Two tasks.
    """
    criterion = torch.nn.BCEWithLogitsLoss(reduction="mean")
    logits = torch.from_numpy(batch.logits).to(device)
    labels = torch.from_numpy(batch.labels).to(device)
    leaf = logits.detach().clone().requires_grad_(True)
    cuda = device == "cuda"

    def block(_: Any) -> None:
        if cuda:
            torch.cuda.synchronize()

    def forward() -> Any:
        with torch.inference_mode():
            return criterion(logits, labels)

    def value_and_grad() -> Any:
        loss = criterion(leaf, labels)
        (grad,) = torch.autograd.grad(loss, leaf)
        return loss.detach(), grad

    tasks = []
    for mode, fn in ((FORWARD, forward), (VALUE_AND_GRAD, value_and_grad)):
        block(fn())
        memory: dict[str, Any] = {}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            live = torch.cuda.memory_allocated()
            result = fn()
            block(result)
            memory["device_peak_bytes"] = int(torch.cuda.max_memory_allocated() - live)
            del result
        nbytes = logits.numel() * 4 * (3 if mode == VALUE_AND_GRAD else 2)
        tasks.append(
            Task(
                key="torch",
                label=f"torch ({device})",
                mode=mode,
                run=fn,
                block=block,
                ideal_bytes=nbytes,
                ref="jaxbce",
                memory=memory,
            )
        )
    return tasks


def load_torch(backend: str) -> tuple[ModuleType | None, str | None, str]:
    """Imports torch for the backend in use, or says why it is skipped.

    Args:
      backend: JAX's default backend (``"cpu"``, ``"gpu"``, ...).

    Returns:
      ``(torch or None, device or None, note)``.
    """
    try:
        torch = importlib.import_module("torch")
    except ImportError as err:
        return None, None, f"PyTorch contender skipped: import torch failed ({err})."
    if backend == "cpu":
        return (
            torch,
            "cpu",
            f"PyTorch {torch.__version__} on CPU, {torch.get_num_threads()} threads.",
        )
    if backend == "gpu" and torch.cuda.is_available():
        return torch, "cuda", f"PyTorch {torch.__version__} on {torch.cuda.get_device_name()}."
    return None, None, f"PyTorch contender skipped: torch has no CUDA for backend {backend!r}."


# --------------------------------------------------------------------------------------
# Rounds
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long to time each size.

    Attributes:
      budget_s: Seconds of timed rounds per size (rounds are capped by this).
      min_rounds: Rounds at least, even past the budget.
      max_rounds: Rounds at most.
      min_sample_s: Each sample repeats the call until it lasts about this long.
      warmup: Untimed calls per task before the rounds, at least.
      warmup_s: Untimed seconds per task before the rounds, at least (PyTorch's first
        few dozen calls in a process can be 100x slower than the rest).
      settle: Make one untimed call of a task right before each of its samples, so that
        no task pays for the allocator state its predecessor left behind: on CPU, after
        optax's focal loss frees its 600 MB of temporaries, the next function's fresh
        64 MB output page-faults and a fused elementwise pass measured 35 % slower.
    """

    budget_s: float
    min_rounds: int
    max_rounds: int
    min_sample_s: float
    warmup: int = 3
    warmup_s: float = 0.05
    settle: bool = True


def run_rounds(tasks: list[Task], schedule: Schedule) -> int:
    """Warms every task up, then times them round by round in a fixed order.

    Args:
      tasks: The tasks of one size; their ``samples`` are filled in.
      schedule: Rounds and warm-up.

    Returns:
      The number of rounds.
    """
    round_s = 0.0
    for task in tasks:
        times: list[float] = []
        while len(times) < schedule.warmup or (
            sum(times) < schedule.warmup_s and len(times) < 1000
        ):
            times.append(task.sample())
        best = min(times)
        task.inner = max(1, min(1000, math.ceil(schedule.min_sample_s / max(best, 1e-9))))
        round_s += best * (task.inner + schedule.settle)
    rounds = int(schedule.budget_s / max(round_s, 1e-9))
    rounds = max(schedule.min_rounds, min(schedule.max_rounds, rounds))
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for task in tasks:
                if schedule.settle:
                    task.block(task.run())
                task.samples.append(task.sample())
    finally:
        gc.enable()
    return rounds


def paired_median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a[r] / b[r]``.

    Args:
      a: Numerators, one per round.
      b: Denominators, same rounds.

    Returns:
      The median ratio.
    """
    return float(statistics.median(x / y for x, y in zip(a, b, strict=True)))


def summarize(tasks: list[Task], n: int, shape: tuple[int, int], rounds: int) -> list[dict]:
    """Turns the timed tasks of one size into result rows.

    Args:
      tasks: Timed tasks.
      n: Elements.
      shape: ``(B, C)``.
      rounds: Rounds run.

    Returns:
      One row per task, floors included.
    """
    floors = {t.ideal_bytes: t for t in tasks if t.mode == FLOOR}
    by_key = {(t.key, t.mode): t for t in tasks}
    rows = []
    for task in tasks:
        median = float(statistics.median(task.samples))
        row: dict[str, Any] = {
            "n": n,
            "shape": list(shape),
            "mode": task.mode,
            "contender": task.key,
            "label": task.label,
            "group": task.group,
            "rounds": rounds,
            "inner": task.inner,
            "median_s": median,
            "min_s": float(min(task.samples)),
            "ns_per_element": median / n * 1e9,
            "ideal_bytes": task.ideal_bytes,
            "gbps": task.ideal_bytes / median / 1e9,
            "compile_s": task.compile_s,
            "memory": task.memory,
            "samples_s": [float(f"{s:.6g}") for s in task.samples],
        }
        if task.mode != FLOOR:
            floor = floors[task.ideal_bytes]
            row["floor_s"] = float(statistics.median(floor.samples))
            row["floor_multiple"] = paired_median_ratio(task.samples, floor.samples)
            ref = by_key.get((task.ref or task.key, task.mode))
            row["ref"] = ref.key if ref else None
            row["ratio_to_ref"] = paired_median_ratio(task.samples, ref.samples) if ref else None
        rows.append(row)
    return rows


class ForeignCpu:
    """CPU time that other processes used on this machine while a block of code ran.

    Reads the busy time of all cores from ``/proc/stat`` and subtracts this process's own
    CPU time, so a benchmark can say whether something else competed for the cores.
    """

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(x) for x in fields]
        busy = sum(ticks) - ticks[3] - ticks[4]  # Everything but idle and iowait.
        hz = os.sysconf("SC_CLK_TCK")
        return busy / hz, time.process_time(), time.perf_counter()

    def fraction(self) -> float | None:
        """Other processes' CPU time as a fraction of all cores' time since creation."""
        end = self._now()
        if self.start is None or end is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self.start, strict=True))
        return round(max(0.0, busy - own) / (wall * (os.cpu_count() or 1)), 3)


def bench_size(
    n: int,
    args: argparse.Namespace,
    contenders: list[JaxContender],
    torch_env: tuple[ModuleType | None, str | None],
    schedule: Schedule,
) -> list[dict]:
    """Compiles, warms up and times every contender at one size.

    Args:
      n: Elements.
      args: Parsed command line.
      contenders: JAX contenders.
      torch_env: ``(torch, device)`` or ``(None, None)``.
      schedule: Rounds.

    Returns:
      The result rows of this size.
    """
    shape = shape_for(n, args.classes)
    batch = Batch.make(shape, seed=args.seed)
    hlo_dir = Path(args.dump_hlo) if args.dump_hlo else None
    tasks: list[Task] = []
    for contender in contenders:
        tasks += jax_tasks(contender, batch, hlo_dir)
    torch, device = torch_env
    if torch is not None and device is not None:
        tasks += torch_tasks(torch, device, batch)
    tasks += [floor_task(b) for b in sorted({t.ideal_bytes for t in tasks})]
    foreign = ForeignCpu()
    rounds = run_rounds(tasks, schedule)
    rows = summarize(tasks, n, shape, rounds)
    busy = foreign.fraction()
    for row in rows:
        row["foreign_cpu"] = busy
    return rows


# --------------------------------------------------------------------------------------
# Fused linear layer + BCE
# --------------------------------------------------------------------------------------

#: Shape of the fused linear benchmark: features (B, d), kernel (d, L), sparse labels (B, K).
LINEAR_BATCH = 1024
LINEAR_IN_FEATURES = 256
LINEAR_POSITIVES = 8
LINEAR_SIZES = (2**14, 2**16, 2**17)
#: The issue's speed target: fused value_and_grad time / unfused, where the unfused fits.
LINEAR_TARGET_RATIO = 1.3
#: The unfused loss is compiled at every size but run only if its XLA temporaries fit in
#: this fraction of the machine's RAM.
LINEAR_MAX_RAM_FRACTION = 0.4
LINEAR_TARGET_NAME = "fused linear value_and_grad within 1.3x of unfused"


def machine_ram_bytes() -> int | None:
    """Physical memory of this machine in bytes, or ``None`` where unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def linear_inputs(n_labels: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Host inputs of the fused linear benchmark for ``L = n_labels``.

    The logits ``features @ kernel + bias`` have a standard deviation of about 3, like the
    elementwise benchmark's. The sparse labels are ``LINEAR_POSITIVES`` random positive
    indices per row (duplicates count once) and the dense bool labels are the same
    positives scattered into a (B, L) matrix, so both formats give the same loss.

    Args:
      n_labels: L.
      seed: NumPy seed.

    Returns:
      ``features``, ``kernel``, ``bias``, ``dense`` and ``sparse`` arrays.
    """
    rng = np.random.default_rng(seed)
    b, d = LINEAR_BATCH, LINEAR_IN_FEATURES
    features = rng.standard_normal((b, d), dtype=np.float32)
    kernel = (3.0 / math.sqrt(d)) * rng.standard_normal((d, n_labels), dtype=np.float32)
    bias = 0.1 * rng.standard_normal((n_labels,), dtype=np.float32)
    sparse = rng.integers(0, n_labels, (b, LINEAR_POSITIVES), dtype=np.int32)
    dense = np.zeros((b, n_labels), dtype=bool)
    np.put_along_axis(dense, sparse, True, axis=1)
    return {
        "features": features,
        "kernel": kernel.astype(np.float32),
        "bias": bias,
        "dense": dense,
        "sparse": sparse,
    }


def linear_contenders(jaxbce: ModuleType) -> list[tuple[str, str, Callable[..., jax.Array], str]]:
    """The fused linear contenders: ``(key, label, loss(h, W, b, y), labels format)``.

    Args:
      jaxbce: The imported library.

    Returns:
      Fused with dense bool labels, fused with sparse (B, K) labels, and the unfused
      ``sigmoid_binary_cross_entropy(h @ W + b, dense)``, which divides the others' times.
    """
    fused = jaxbce.linear_sigmoid_binary_cross_entropy
    bce = jaxbce.sigmoid_binary_cross_entropy
    return [
        ("fused", "fused, dense bool labels", lambda h, w, b, y: fused(h, w, y, bias=b), "dense"),
        (
            "fused_sparse",
            f"fused, sparse (B, {LINEAR_POSITIVES}) labels",
            lambda h, w, b, y: fused(h, w, y, bias=b),
            "sparse",
        ),
        (
            "unfused",
            "unfused h @ W + b, BCE",
            lambda h, w, b, y: bce(h @ w + b, y, reduction="mean"),
            "dense",
        ),
    ]


def bench_linear_size(
    n_labels: int, jaxbce: ModuleType, schedule: Schedule, seed: int
) -> list[dict[str, Any]]:
    """Compiles and times ``value_and_grad`` of the fused and unfused losses at one L.

    Gradients are taken in the features, the kernel and the bias. The contenders run
    round by round with :func:`run_rounds` (warm-up, one untimed call before each
    sample); the ratio to the unfused loss is the median of the per-round ratios.

    Args:
      n_labels: L.
      jaxbce: The imported library.
      schedule: Rounds.
      seed: NumPy seed.

    Returns:
      One row per contender.
    """
    host = linear_inputs(n_labels, seed)
    ram = machine_ram_bytes()
    common = [jnp.asarray(host[k]) for k in ("features", "kernel", "bias")]
    tasks: list[Task] = []
    rows: dict[str, dict[str, Any]] = {}
    values: dict[str, float] = {}
    for key, label, loss, fmt in linear_contenders(jaxbce):
        args = jax.block_until_ready((*common, jnp.asarray(host[fmt])))
        row: dict[str, Any] = {
            "labels": n_labels,
            "contender": key,
            "label": label,
            "label_format": fmt,
            "compile_s": None,
            "memory": {},
        }
        rows[key] = row
        start = time.perf_counter()
        try:
            vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
            compiled = vg.lower(*args).compile()
        except Exception as err:  # E.g. too large to compile; reported, not fatal.
            row["skipped"] = f"not run: does not compile ({type(err).__name__}: {err})"[:300]
            continue
        row["compile_s"] = time.perf_counter() - start
        row["memory"] = _memory_analysis(compiled)
        temp = row["memory"].get("temp_size_in_bytes")
        if ram is not None and temp is not None and temp > LINEAR_MAX_RAM_FRACTION * ram:
            row["skipped"] = (
                f"not run: XLA temporaries {temp / 2**30:.1f} GiB > "
                f"{LINEAR_MAX_RAM_FRACTION:.0%} of {ram / 2**30:.1f} GiB RAM"
            )
            continue
        value, _ = jax.block_until_ready(compiled(*args))  # First call: lazy initialisation.
        values[key] = float(value)
        row["value"] = float(value)
        tasks.append(
            Task(
                key=key,
                label=label,
                mode=VALUE_AND_GRAD,
                run=lambda c=compiled, a=args: c(*a),
                block=jax.block_until_ready,
                ideal_bytes=0,
                compile_s=row["compile_s"],
                memory=row["memory"],
            )
        )
    foreign = ForeignCpu()
    n_rounds = run_rounds(tasks, schedule) if tasks else 0
    busy = foreign.fraction()
    by_key = {t.key: t for t in tasks}
    ref = by_key.get("unfused")
    for task in tasks:
        row = rows[task.key]
        row.update(
            rounds=n_rounds,
            inner=task.inner,
            median_ms=float(statistics.median(task.samples)) * 1e3,
            min_ms=float(min(task.samples)) * 1e3,
            samples_s=[float(f"{s:.6g}") for s in task.samples],
        )
        if ref is not None:
            row["ratio_to_unfused"] = paired_median_ratio(task.samples, ref.samples)
        if "unfused" in values:
            row["value_abs_diff_to_unfused"] = abs(values[task.key] - values["unfused"])
    for row in rows.values():
        row["foreign_cpu"] = busy
    return list(rows.values())


def linear_target(section: dict[str, Any] | None) -> dict[str, Any]:
    """The issue's 1.3x target for the fused linear loss (dense labels, every L run).

    Args:
      section: The ``fused_linear`` JSON section, or ``None`` when it was not run.

    Returns:
      The target entry; its value is the worst (largest) fused / unfused ratio over the
      sizes where the unfused loss ran.
    """
    entry: dict[str, Any] = {"target": LINEAR_TARGET_NAME, "status": "not yet measured"}
    ratios = {
        r["labels"]: r["ratio_to_unfused"]
        for r in (section or {}).get("rows", [])
        if r["contender"] == "fused" and "ratio_to_unfused" in r
    }
    if not ratios:
        entry["detail"] = "needs a run with --linear (or --linear-only) where the unfused loss fits"
        return entry
    worst = max(ratios.values())
    entry.update(status="pass" if worst <= LINEAR_TARGET_RATIO else "fail", value=worst)
    entry["detail"] = "fused / unfused = " + ", ".join(
        f"{r:.3g} at L=2^{math.log2(n):g}" for n, r in sorted(ratios.items())
    )
    return entry


def format_linear_table(section: dict[str, Any]) -> str:
    """Formats the ``fused_linear`` section as a text table."""
    head = (
        f"{'L':>8}  {'contender':<28}{'median ms':>11}{'x unfused':>11}{'temp':>10}"
        f"{'compile s':>11}{'rounds':>8}{'other CPU':>11}"
    )
    lines = [
        f"Fused linear + BCE, value_and_grad in (features, kernel, bias); "
        f"B={section['batch']}, d={section['in_features']}",
        head,
        "-" * len(head),
    ]
    for row in section["rows"]:
        ratio = row.get("ratio_to_unfused")
        foreign = row.get("foreign_cpu")
        compile_s = row["compile_s"]
        if "median_ms" in row:
            timing = f"{row['median_ms']:>11.1f}{'-' if ratio is None else f'{ratio:.2f}':>11}"
        else:
            timing = f"{'not run':>11}{'-':>11}"
        lines.append(
            f"{row['labels']:>8}  {row['label']:<28}{timing}"
            f"{_fmt_bytes(row['memory'].get('temp_size_in_bytes')):>10}"
            f"{'-' if compile_s is None else f'{compile_s:.2f}':>11}"
            f"{row.get('rounds', 0):>8}"
            f"{'?' if foreign is None else f'{foreign:.0%}':>11}"
        )
    for row in section["rows"]:
        if "skipped" in row:
            lines.append(f"L={row['labels']} {row['label']}: {row['skipped']}")
    lines.append("x unfused: median of per-round ratios; temp: XLA memory_analysis() temp bytes.")
    return "\n".join(lines)


def linear_markdown(section: dict[str, Any]) -> str:
    """The ``fused_linear`` section as a Markdown table (for the README)."""
    lines = [
        f"B = {section['batch']}, d = {section['in_features']}, value_and_grad in "
        "(features, kernel, bias)",
        "",
        "| L | contender | ms / call | x unfused | temp bytes (XLA) | rounds | other CPU |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in section["rows"]:
        ratio = row.get("ratio_to_unfused")
        foreign = row.get("foreign_cpu")
        cells = [
            f"2^{math.log2(row['labels']):g}",
            row["label"],
            f"{row['median_ms']:.1f}" if "median_ms" in row else "not run",
            "-" if ratio is None else f"{ratio:.2f}",
            _fmt_bytes(row["memory"].get("temp_size_in_bytes")),
            str(row.get("rounds", 0)),
            "?" if foreign is None else f"{foreign:.0%}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_linear(args: argparse.Namespace, jaxbce: ModuleType, schedule: Schedule) -> dict:
    """Runs the fused linear benchmark at every ``--linear-sizes`` and prints its table.

    Args:
      args: Parsed command line.
      jaxbce: The imported library.
      schedule: The run's schedule; the linear section warms each function up with one
        call (they take up to seconds each).

    Returns:
      The ``fused_linear`` JSON section.
    """
    schedule = dataclasses.replace(schedule, warmup=1, warmup_s=0.0)
    sizes = sorted(set(args.linear_sizes or LINEAR_SIZES))
    started = time.perf_counter()
    rows: list[dict] = []
    for n_labels in sizes:
        rows += bench_linear_size(n_labels, jaxbce, schedule, args.seed)
    default_chunk = getattr(jaxbce, "default_chunk_size", None)
    section = {
        "batch": LINEAR_BATCH,
        "in_features": LINEAR_IN_FEATURES,
        "positives": LINEAR_POSITIVES,
        "sizes": sizes,
        "chunk_size": {
            str(n): default_chunk(LINEAR_BATCH, n) for n in sizes if default_chunk is not None
        },
        "ram_bytes": machine_ram_bytes(),
        "schedule": dataclasses.asdict(schedule),
        "rows": rows,
        "elapsed_s": time.perf_counter() - started,
    }
    print()
    print(format_linear_table(section), flush=True)
    return section


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


def _samples(rows: list[dict], n: int, mode: str, key: str) -> list[float] | None:
    for row in rows:
        if row["n"] == n and row["mode"] == mode and row["contender"] == key:
            return row["samples_s"]
    return None


@dataclasses.dataclass(frozen=True)
class RatioTarget:
    """A target on the median per-round ratio of two timings at one size.

    Attributes:
      name: The line printed.
      backend: Backend the target is about (``"cpu"`` or ``"gpu"``).
      n: Size the target is about.
      numerator: ``(mode, contender key)`` of the numerator's timings.
      denominator: ``(mode, contender key)`` of the denominator's timings.
      at_least: Pass when the ratio is at least this (else use ``at_most``).
      at_most: Pass when the ratio is at most this.
      what: How the ratio reads, e.g. ``"optax / jaxbce"``.
    """

    name: str
    backend: str
    n: int
    numerator: tuple[str, str]
    denominator: tuple[str, str]
    what: str
    at_least: float | None = None
    at_most: float | None = None

    def evaluate(self, rows: list[dict], backend: str) -> dict[str, Any]:
        """Returns the target's status, detail and value for the measured rows."""
        num = _samples(rows, self.n, *self.numerator)
        den = _samples(rows, self.n, *self.denominator)
        entry: dict[str, Any] = {"target": self.name, "status": "not yet measured"}
        if backend != self.backend or num is None or den is None:
            missing = "" if backend == self.backend else f"a {self.backend.upper()} run, "
            entry["detail"] = f"needs {missing}{self.what} at N=2^{int(math.log2(self.n))}"
            return entry
        ratio = paired_median_ratio(num, den)
        ok = ratio >= self.at_least if self.at_least is not None else ratio <= self.at_most
        entry.update(status="pass" if ok else "fail", value=ratio)
        entry["detail"] = f"{self.what} = {ratio:.3g}"
        return entry


def targets_for() -> list[RatioTarget]:
    """Returns the issue's timing targets, in the order printed."""
    vg = VALUE_AND_GRAD
    cpu, gpu = CPU_TARGET_N, GPU_TARGET_N
    prefix_cpu = "CPU N=2^24 value_and_grad:"
    prefix_gpu = "GPU N=2^26 value_and_grad:"
    return [
        RatioTarget(
            f"{prefix_cpu} jaxbce >= 3x faster than optax",
            "cpu",
            cpu,
            (vg, "optax"),
            (vg, "jaxbce"),
            "optax / jaxbce",
            at_least=3.0,
        ),
        RatioTarget(
            f"{prefix_cpu} jaxbce >= 3x faster than PyTorch",
            "cpu",
            cpu,
            (vg, "torch"),
            (vg, "jaxbce"),
            "torch / jaxbce",
            at_least=3.0,
        ),
        RatioTarget(
            f"{prefix_cpu} jaxbce within 1.5x of a fused elementwise pass",
            "cpu",
            cpu,
            (vg, "jaxbce"),
            (vg, "fused_pass"),
            "jaxbce / fused pass",
            at_most=1.5,
        ),
        RatioTarget(
            f"{prefix_gpu} jaxbce >= 90% of the 12N-byte bandwidth floor",
            "gpu",
            gpu,
            (FLOOR, f"floor_{12 * gpu}"),
            (vg, "jaxbce"),
            "floor / jaxbce",
            at_least=0.9,
        ),
        RatioTarget(
            f"{prefix_gpu} jaxbce >= 1.5x faster than optax",
            "gpu",
            gpu,
            (vg, "optax"),
            (vg, "jaxbce"),
            "optax / jaxbce",
            at_least=1.5,
        ),
        RatioTarget(
            f"{prefix_gpu} bf16 logits + bool labels >= 2x faster than f32 + f32",
            "gpu",
            gpu,
            (vg, "jaxbce"),
            (vg, "jaxbce_bf16_bool"),
            "jaxbce f32 / jaxbce bf16+bool",
            at_least=2.0,
        ),
    ]


def memory_target(rows: list[dict], backend: str) -> dict[str, Any]:
    """No temporary N-sized buffer beyond the gradient, at the largest size measured.

    Args:
      rows: All result rows.
      backend: JAX's default backend.

    Returns:
      The target entry; the value is jaxbce's ``temp_size_in_bytes / 4N``. The detail adds
      optax's value and the other jaxbce BCE variants that do hold an N-element temporary.
    """
    name = f"Memory ({backend}) value_and_grad: jaxbce needs no N-sized temporary buffer"
    temps = {
        r["contender"]: (r["label"], r["memory"]["temp_size_in_bytes"])
        for r in rows
        if r["mode"] == VALUE_AND_GRAD
        and r["n"] == max(q["n"] for q in rows)
        and "temp_size_in_bytes" in r["memory"]
    }
    if "jaxbce" not in temps:
        return {
            "target": name,
            "status": "not yet measured",
            "detail": "no memory_analysis() on this backend",
        }
    n = max(r["n"] for r in rows)
    buffers = temps["jaxbce"][1] / (4 * n)
    detail = f"jaxbce temp = {buffers:.3g} x 4N bytes at N=2^{math.log2(n):g}"
    if "optax" in temps:
        detail += f" (optax: {temps['optax'][1] / (4 * n):.3g})"
    others = [
        f"{label}: {temp / (4 * n):.3g} x 4N"
        for key, (label, temp) in temps.items()
        if key.startswith("jaxbce_") and "focal" not in key and temp >= n
    ]
    if others:
        detail += "; jaxbce variants with an N-element temporary: " + ", ".join(others)
    return {
        "target": name,
        "status": "pass" if buffers < 1 else "fail",
        "value": buffers,
        "detail": detail,
    }


def evaluate_targets(
    rows: list[dict], backend: str, linear: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Checks the issue's targets against the measured rows.

    A target needs the backend and the size it names; where those were not measured its
    status is ``not yet measured``, never an estimate.

    Args:
      rows: All result rows.
      backend: JAX's default backend.
      linear: The ``fused_linear`` section, or ``None`` when it was not run.

    Returns:
      One entry per target line: ``target``, ``status`` (``pass``, ``fail`` or
      ``not yet measured``), ``detail`` and, when measured, ``value``.
    """
    if not rows:  # A --linear-only run.
        return [linear_target(linear)]
    return (
        [t.evaluate(rows, backend) for t in targets_for()]
        + [memory_target(rows, backend)]
        + [linear_target(linear)]
    )


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def _fmt_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.1f}M" if value >= 2**20 else f"{value / 2**10:.1f}K"


def format_table(rows: list[dict]) -> str:
    """Formats the rows of one size as a text table.

    Args:
      rows: Rows of a single ``n``.

    Returns:
      The table.
    """
    n = rows[0]["n"]
    head = (
        f"{'mode':<15}{'contender':<24}{'median ms':>11}{'ns/elem':>9}{'x ref':>7}"
        f"{'x floor':>9}{'GB/s':>8}{'ideal B/N':>10}{'HLO B/N':>8}{'compile s':>10}"
        f"{'temp':>9}{'out':>9}{'peak':>9}"
    )
    foreign = rows[0].get("foreign_cpu")
    lines = [
        f"N = {n} (2^{math.log2(n):g}), shape {tuple(rows[0]['shape'])}, "
        f"{rows[0]['rounds']} rounds; other processes used "
        f"{'?' if foreign is None else f'{foreign:.0%}'} of the CPU meanwhile",
        head,
        "-" * len(head),
    ]
    for row in sorted(rows, key=lambda r: MODES.index(r["mode"]) if r["mode"] in MODES else 9):
        if row["mode"] == FLOOR:
            continue
        mem = row["memory"]
        ratio = row["ratio_to_ref"]
        compile_s = row["compile_s"]
        traffic = mem.get("hlo_traffic_bytes")
        lines.append(
            f"{row['mode']:<15}{row['label']:<24}{row['median_s'] * 1e3:>11.3f}"
            f"{row['ns_per_element']:>9.3f}"
            f"{(f'{ratio:.2f}' if ratio is not None else '-'):>7}"
            f"{row['floor_multiple']:>9.2f}{row['gbps']:>8.1f}"
            f"{row['ideal_bytes'] / n:>10.3g}"
            f"{(f'{traffic / n:.3g}' if traffic is not None else '-'):>8}"
            f"{(f'{compile_s:.2f}' if compile_s is not None else '-'):>10}"
            f"{_fmt_bytes(mem.get('temp_size_in_bytes')):>9}"
            f"{_fmt_bytes(mem.get('output_size_in_bytes')):>9}"
            f"{_fmt_bytes(mem.get('device_peak_bytes')):>9}"
        )
    floors = ", ".join(
        f"{r['ideal_bytes'] / n:g}N: {r['gbps']:.1f} GB/s" for r in rows if r["mode"] == FLOOR
    )
    lines.append(f"bandwidth floor (XLA copy, reads + writes): {floors}")
    lines.append(
        "x ref: time / jaxbce's (focal rows: / jaxbce focal's); x floor: time / the "
        "copy of the row's ideal bytes; both medians of per-round ratios. GB/s: ideal "
        "bytes / median time. HLO B/N: bytes read and written by the optimized program's "
        "ops, per element. temp, out: XLA memory_analysis(); peak: device peak."
    )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Writes the log-log plot of time per element against N.

    Args:
      rows: All rows.
      path: PNG to write.
      title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 7), sharey=True)
    order = dict.fromkeys(r["contender"] for r in rows if r["mode"] != FLOOR)
    colors = {key: f"C{i % 10}" for i, key in enumerate(order)}
    for ax, mode, floor_bytes in ((axes[0], FORWARD, 8), (axes[1], VALUE_AND_GRAD, 12)):
        keys = list(dict.fromkeys(r["contender"] for r in rows if r["mode"] == mode))
        for key in keys:
            pts = sorted(
                (r["n"], r["ns_per_element"], r["label"])
                for r in rows
                if r["mode"] == mode and r["contender"] == key
            )
            group = next(r["group"] for r in rows if r["contender"] == key)
            style = {"reference": "--", "focal": "-."}.get(group, "-")
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                style,
                marker="o",
                markersize=3,
                color=colors[key],
                linewidth=2.2 if key == "jaxbce" else 1.2,
                label=pts[0][2],
            )
        floor = sorted(
            (r["n"], r["ns_per_element"])
            for r in rows
            if r["mode"] == FLOOR and r["ideal_bytes"] == floor_bytes * r["n"]
        )
        if floor:
            ax.plot(
                [p[0] for p in floor],
                [p[1] for p in floor],
                "k:",
                linewidth=2.5,
                label=f"bandwidth floor ({floor_bytes}N-byte copy)",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (elements)")
        ax.set_title(f"{mode} of the mean loss")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    axes[0].set_ylabel("time per element (ns, median)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_info(backend: str) -> dict[str, Any]:
    """Describes the machine and the software versions.

    Args:
      backend: JAX's default backend.

    Returns:
      A JSON-ready dict.
    """
    cpu = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    device = jax.devices()[0]
    import jaxlib

    return {
        "backend": backend,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
    }


def source_digest(module: ModuleType) -> str | None:
    """SHA-256 of a package's ``.py`` files, so results name the exact code measured.

    Args:
      module: An imported package.

    Returns:
      The hex digest of the sorted files' names and contents, or ``None``.
    """
    paths = list(getattr(module, "__path__", []))
    if not paths:
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(paths[0]).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def git_state() -> str | None:
    """``<commit>`` of this checkout, with ``+dirty`` when ``jaxbce/`` has local changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "jaxbce"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def host_memcpy_gbps(nbytes: int = 1 << 27) -> float:
    """NumPy copy into a preallocated buffer (reads plus writes), for context only.

    Args:
      nbytes: Bytes to copy.

    Returns:
      GB/s, the best of five.
    """
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best / 1e9


def build_parser() -> argparse.ArgumentParser:
    """Returns the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short run: sizes 2^12, 2^16, 2^20 and few rounds"
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=None,
        help="elements, e.g. 4096 2^20 2**26 (default: 2^12..2^24 on CPU, 2^12..2^26 on GPU)",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=16384,
        help="labels per example C; shape is (N // C, C), or (1, N) for N < C",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="directory for JSON and PNG")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed rounds per size (default 25, quick 2)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        help="re-time a size up to this many times while other processes used more than "
        "--max-foreign of the CPU during its rounds, keeping the quietest attempt",
    )
    parser.add_argument("--max-foreign", type=float, default=0.05, help="see --retries")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch contender")
    parser.add_argument(
        "--dump-hlo",
        default=None,
        metavar="DIR",
        help="write each JAX function's optimized HLO text into DIR",
    )
    parser.add_argument("--seed", type=int, default=0, help="NumPy seed of the inputs")
    parser.add_argument(
        "--linear",
        action="store_true",
        help="also benchmark the fused linear loss (linear_sigmoid_binary_cross_entropy) "
        "against the unfused h @ W + b and BCE (minutes on CPU, so not part of the default run)",
    )
    parser.add_argument(
        "--linear-only",
        action="store_true",
        help="only the fused linear benchmark; writes <out>/<backend>-linear-<date>.json",
    )
    parser.add_argument(
        "--linear-sizes",
        nargs="+",
        type=parse_size,
        default=None,
        metavar="L",
        help="label counts L of the fused linear benchmark (default 2^14 2^16 2^17), "
        f"with B={LINEAR_BATCH}, d={LINEAR_IN_FEATURES}",
    )
    parser.add_argument(
        "--summarize",
        default=None,
        metavar="JSON",
        help="print the Markdown summary of a results file (for the README) and exit",
    )
    return parser


def make_schedule(args: argparse.Namespace) -> Schedule:
    """The rounds for a full or a ``--quick`` run.

    Args:
      args: Parsed command line.

    Returns:
      The schedule.
    """
    if args.quick:
        return Schedule(budget_s=args.budget or 2.0, min_rounds=3, max_rounds=15, min_sample_s=1e-3)
    return Schedule(budget_s=args.budget or 25.0, min_rounds=5, max_rounds=50, min_sample_s=5e-3)


def default_sizes(args: argparse.Namespace, backend: str) -> list[int]:
    """The sizes to run: ``--sizes``, the quick ones, or 2^12..2^24 (CPU) / 2^26 (GPU).

    Args:
      args: Parsed command line.
      backend: JAX's default backend.

    Returns:
      Sorted sizes.
    """
    if args.sizes:
        return sorted(set(args.sizes))
    if args.quick:
        return [2**12, 2**16, 2**20]
    return [2**k for k in range(12, 27 if backend == "gpu" else 25)]


def markdown_summary(result: dict[str, Any], sizes: Sequence[int] | None = None) -> str:
    """A Markdown summary of a results JSON, as pasted into ``benchmarks/README.md``.

    Args:
      result: The parsed JSON written by :func:`main`.
      sizes: Sizes to tabulate (default: 2^20 and the largest measured).

    Returns:
      Markdown: one table per size (``value_and_grad`` then ``forward``), then targets.
    """
    rows = result["results"]
    measured = sorted({r["n"] for r in rows})
    lines = []
    if sizes is None:
        sizes = [n for n in (2**20,) if n in measured] + measured[-1:]
    for n in dict.fromkeys(sizes):
        size_rows = [r for r in rows if r["n"] == n and r["mode"] in MODES]
        if not size_rows:
            continue
        foreign = size_rows[0].get("foreign_cpu")
        lines += [
            f"**N = 2^{math.log2(n):g}** (shape {tuple(size_rows[0]['shape'])}, "
            f"{size_rows[0]['rounds']} rounds"
            + ("" if foreign is None else f"; other processes: {foreign:.0%} CPU")
            + ")",
            "",
            "| mode | contender | ns / element | x jaxbce | x floor | GB/s "
            "| ideal B/N | HLO B/N | temp / 4N | compile s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in sorted(size_rows, key=lambda r: -MODES.index(r["mode"])):
            temp = row["memory"].get("temp_size_in_bytes")
            traffic = row["memory"].get("hlo_traffic_bytes")
            ratio = row.get("ratio_to_ref")
            ref = "" if row.get("ref") in (None, "jaxbce", row["contender"]) else " (focal)"
            cells = [
                row["mode"],
                row["label"],
                f"{row['ns_per_element']:.3g}",
                "-" if ratio is None else f"{ratio:.2f}{ref}",
                f"{row['floor_multiple']:.2f}",
                f"{row['gbps']:.3g}",
                f"{row['ideal_bytes'] / n:g}",
                "-" if traffic is None else f"{traffic / n:.3g}",
                "-" if temp is None else f"{temp / (4 * n):.2f}",
                "-" if row["compile_s"] is None else f"{row['compile_s']:.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if "fused_linear" in result:
        lines += [linear_markdown(result["fused_linear"])]
    lines.append("Targets:")
    lines.append("")
    for target in result["targets"]:
        lines.append(f"- **{target['status']}**: {target['target']} ({target['detail']})")
    return "\n".join(lines) + "\n"


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every size, prints the tables and the targets, and returns the JSON result.

    Args:
      args: Parsed command line.

    Returns:
      The result written to the JSON file.
    """
    backend = jax.default_backend()
    sizes = [] if args.linear_only else default_sizes(args, backend)
    schedule = make_schedule(args)
    jaxbce = import_jaxbce()
    contenders = jax_contenders(jaxbce)
    notes = []
    torch, device = None, None
    if args.linear_only:
        notes.append("Fused linear benchmark only (--linear-only).")
    elif args.no_torch:
        notes.append("PyTorch contender skipped: --no-torch.")
    else:
        torch, device, note = load_torch(backend)
        notes.append(note)
    info = machine_info(backend)
    info["jaxbce"] = str(getattr(jaxbce, "__version__", "unknown"))
    info["jaxbce_source_sha256"] = source_digest(jaxbce)
    info["git"] = git_state()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    if backend == "cpu":
        info["numpy_memcpy_gbps"] = host_memcpy_gbps()
    print(
        f"jaxbce benchmark on {backend} ({info['device_kind']}; CPU {info['cpu_model']}, "
        f"{info['cpu_cores']} cores); " + (f"sizes {sizes}" if sizes else "fused linear loss only")
    )
    for note in notes:
        print(note)

    rows: list[dict] = []
    started = time.perf_counter()
    for n in sizes:
        size_rows = bench_size(n, args, contenders, (torch, device), schedule)
        for attempt in range(args.retries):
            foreign = size_rows[0]["foreign_cpu"]
            if foreign is None or foreign <= args.max_foreign:
                break
            print(f"N = {n}: other processes used {foreign:.0%} of the CPU; retry {attempt + 1}")
            again = bench_size(n, args, contenders, (torch, device), schedule)
            if again[0]["foreign_cpu"] < foreign:
                size_rows = again
        rows += size_rows
        print()
        print(format_table(size_rows), flush=True)
    linear = run_linear(args, jaxbce, schedule) if args.linear or args.linear_only else None
    elapsed = time.perf_counter() - started
    busiest = max((r["foreign_cpu"] or 0.0 for r in rows), default=0.0)
    if busiest > 0.05:
        notes.append(
            f"Warning: other processes used up to {busiest:.0%} of the CPU during the rounds "
            "of one size; those timings are inflated and scattered (see foreign_cpu)."
        )
        print(notes[-1])

    targets = evaluate_targets(rows, backend, linear)
    print("\nTargets")
    for target in targets:
        print(f"  [{target['status'].upper():>16}] {target['target']}: {target['detail']}")
    print(f"\n{elapsed:.0f} s of measurement.")
    result = {
        "schema": 1,
        "backend": backend,
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
        "machine": info,
        "method": {
            "sizes": sizes,
            "classes": args.classes,
            "schedule": dataclasses.asdict(schedule),
            "floor": "XLA bitwise NOT of uint32 words, reading and writing half the ideal "
            "bytes each; ratios are medians of per-round ratios",
        },
        "notes": notes,
        "contenders": sorted({r["contender"] for r in rows if r["mode"] != FLOOR}),
        "targets": targets,
        "results": rows,
        "elapsed_s": elapsed,
    }
    if linear is not None:
        result["fused_linear"] = linear
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark, or summarizes a results file with ``--summarize``.

    Args:
      argv: Command-line words (default ``sys.argv[1:]``).

    Returns:
      Exit status 0.
    """
    args = build_parser().parse_args(argv)
    if args.summarize:
        print(markdown_summary(json.loads(Path(args.summarize).read_text())), end="")
        return 0
    result = run_benchmark(args)
    words = sys.argv[1:] if argv is None else list(argv)
    result["command"] = " ".join(["python", "benchmarks/run.py", *words])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = "-linear" if args.linear_only else ""
    stem = f"{result['backend']}{kind}-{result['timestamp_utc'][:10]}"
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    if not result["results"]:
        print(f"Wrote {json_path}")
        return 0
    png_path = out / f"{stem}.png"
    device = result["machine"]["device_kind"]
    plot(result["results"], png_path, f"jaxbce benchmark, {stem} ({device})")
    print(f"Wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
