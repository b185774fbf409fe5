"""The jaxbce benchmark, one module per concern; ``benchmarks/run.py`` is its command line.

A binary cross-entropy is memory-bound: the best possible ``value_and_grad`` of a mean
loss over N float32 logits reads the logits and the labels once and writes the gradient
once, 12N bytes (9N with bool labels, 5N with bfloat16 logits and bool labels). The
benchmark times, for N elements in a ``(B, C)`` multi-label layout, the forward pass and
``jax.value_and_grad`` of the mean loss of jaxbce, optax, the naive formula, PyTorch, a
single fused elementwise pass and the bandwidth floor (an XLA copy of the same bytes).

Modules, each importing only those listed before it:

* :mod:`bench.modes`: the timed modes and the ideal byte count of a contender.
* :mod:`bench.config`: the settings of one run and the kind of run they make.
* :mod:`bench.inputs`: the elementwise benchmark's host inputs and their shape.
* :mod:`bench.machine`: the machine, the code measured, and other processes' CPU use.
* :mod:`bench.memory`: XLA's memory analysis, HLO traffic and device peaks.
* :mod:`bench.timing`: timed tasks, the round-by-round schedule, paired ratios.
* :mod:`bench.contenders`: the JAX contenders and the optional PyTorch one.
* :mod:`bench.elementwise`: one size of the elementwise benchmark, timed into rows.
* :mod:`bench.linear`: the fused linear layer + BCE benchmark.
* :mod:`bench.targets`: the speed and memory targets, checked against measured rows.
* :mod:`bench.report`: text tables, the Markdown summary and the plot.
* :mod:`bench.results`: where a run's JSON and PNG go, and what they may not replace.
* :mod:`bench.runner`: a whole run, from its settings to the JSON result.
* :mod:`bench.tables`: the command line of the stand-alone table benchmarks.
"""

from __future__ import annotations

from pathlib import Path

#: The repository root: the default output folders and ``git`` are relative to it.
ROOT = Path(__file__).resolve().parents[2]
