"""The files a run writes to ``--out``, each atomically (a temporary file, then ``os.replace``).

``metrics.json``, ``history.csv``, the plots and ``params.npz``: a crash never leaves half a
file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from common import plots
from common.sharding import is_main_process


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then moves it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path: Path, value: Any) -> None:
    """Writes JSON atomically (temporary file, then ``os.replace``); NaN becomes null."""
    atomic_write(path, (json.dumps(_json_ready(value), indent=2) + "\n").encode())


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes rows (dicts with the same keys) as CSV atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["step"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, text.getvalue().encode())


def save_params(path: Path, model: nnx.Module) -> None:
    """Writes the model's parameters to ``.npz`` (keys like ``layers/0/kernel``), atomically."""
    flat = {
        "/".join(str(k) for k in key): np.asarray(value)
        for key, value in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    atomic_write(path, buffer.getvalue())


def write_outputs(
    out: Path,
    *,
    metrics: Mapping[str, Any],
    history: Sequence[Mapping[str, float]],
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    model: nnx.Module,
) -> None:
    """Writes ``metrics.json``, ``loss.png``, ``roc_pr.png`` and ``params.npz`` (process 0 only).

    Args:
      out: The output directory.
      metrics: The final metrics.
      history: The rows returned by :func:`~common.train.fit`.
      curves: Test ROC and precision-recall curves to draw, see
        :func:`~common.plots.plot_roc_pr`.
      model: The trained model.
    """
    if not is_main_process():
        return
    write_json(out / "metrics.json", metrics)
    atomic_write(out / "loss.png", plots.plot_history(history))
    atomic_write(out / "roc_pr.png", plots.plot_roc_pr(curves))
    save_params(out / "params.npz", model)
