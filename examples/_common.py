"""Plumbing shared by the jaxbce examples.

The two training scripts (``binary_classifier.py`` and ``multilabel_classifier.py``) differ in
their data, model output and loss; everything else lives here once: the common flags, reading a
user's ``--data`` file, the stratified split and standardisation, the MLP, the device mesh and
batch sharding, the resumable training loop with Orbax checkpoints, the metrics, and the files
written to ``--out`` (``metrics.json``, ``history.csv``, PNG plots, ``params.npz``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
import json
import math
import os
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

Batch = dict[str, jax.Array]
"""A batch on device: ``x`` features, ``y`` 0/1 labels, ``mask`` which labels count."""

# Settings that do not change what a run computes; a resumed run may differ in these.
_RUN_ONLY_FLAGS = ("out", "stop_after", "multi_host")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def fail(message: str) -> None:
    """Exits with status 2 and a one-line ``error:`` message on stderr, without a traceback.

    Args:
      message: What went wrong and where (file, column, row), in one line.

    Raises:
      SystemExit: Always, with code 2 (the code argparse uses for bad input).
    """
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def add_common_flags(
    parser: argparse.ArgumentParser,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    hidden: int,
    out: str,
) -> None:
    """Adds the flags both examples share.

    Args:
      parser: The script's parser.
      steps: Default number of training steps.
      batch_size: Default global batch size (split over all devices).
      lr: Default peak learning rate.
      weight_decay: Default AdamW weight decay.
      hidden: Default width of the hidden layers.
      out: Default output directory.
    """
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="train on this CSV or .npz instead of the bundled scikit-learn data "
        "(format: examples/README.md)",
    )
    parser.add_argument("--steps", type=int, default=steps, help="training steps")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="global batch size; must be a multiple of the number of devices",
    )
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate (AdamW)")
    parser.add_argument(
        "--weight-decay", type=float, default=weight_decay, help="AdamW weight decay"
    )
    parser.add_argument("--hidden", type=int, default=hidden, help="width of the hidden layers")
    parser.add_argument("--seed", type=int, default=0, help="seed for split, init and data order")
    parser.add_argument("--out", type=Path, default=Path(out), help="output directory")
    parser.add_argument(
        "--no-pos-weight",
        dest="pos_weight",
        action="store_false",
        help="do not up-weight positives by the train negative/positive ratio",
    )
    parser.add_argument("--eval-every", type=int, default=50, help="validate and log every N steps")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=100,
        help="save an Orbax checkpoint every N steps (a multiple of --eval-every)",
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="testing aid: kill the process (SIGKILL) right after this step, as a crash would",
    )
    parser.add_argument(
        "--multi-host",
        action="store_true",
        help="call jax.distributed.initialize() first (GPU clusters, TPU pods)",
    )


def check_common_flags(args: argparse.Namespace) -> None:
    """Rejects flag values the training loop cannot honour, with a one-line error.

    Args:
      args: Parsed flags from a parser built with :func:`add_common_flags`.
    """
    for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "hidden"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.lr <= 0:
        fail(f"--lr must be positive, got {args.lr}")
    if args.checkpoint_every % args.eval_every:
        fail(
            f"--checkpoint-every ({args.checkpoint_every}) must be a multiple of "
            f"--eval-every ({args.eval_every}) so that a resumed history is exact"
        )


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that determine what a run computes, as JSON-ready values.

    Args:
      args: Parsed flags.

    Returns:
      A dict of flag name to value, without the flags listed in ``_RUN_ONLY_FLAGS``.
    """
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in sorted(vars(args).items())
        if k not in _RUN_ONLY_FLAGS
    }


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class DataError(ValueError):
    """A ``--data`` file that cannot be used; the message names file, column and row."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of the data, as host NumPy arrays.

    Attributes:
      x: ``float32[n, features]`` standardised features.
      y: ``float32[n]`` (binary) or ``float32[n, labels]`` (multi-label) 0/1 labels.
      mask: ``bool`` like ``y``: which labels are observed (False = missing, excluded from
        the loss and the metrics).
    """

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits plus the names of features and labels."""

    train: Split
    val: Split
    test: Split
    feature_names: list[str]
    label_names: list[str]


def _is_label_column(name: str) -> bool:
    return name == "label" or name.startswith("label_")


def read_table(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Reads features and 0/1 labels from a CSV or ``.npz`` file and checks every value.

    CSV: a header row; columns named ``label`` or ``label_<name>`` are labels, all others are
    numeric features. ``.npz``: arrays ``x`` ``[n, features]`` and ``y`` ``[n]`` or
    ``[n, labels]``, optionally ``feature_names`` and ``label_names``.

    Args:
      path: The file.

    Returns:
      ``(x, y, feature_names, label_names)`` with ``x`` ``float32[n, f]`` and ``y``
      ``float32[n, k]``.

    Raises:
      DataError: A missing file or column, a non-number, a NaN or infinity, or a label that is
        not 0 or 1; the message names the file, the column and the row.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".npz":
        x, y, features, labels, row_name = _read_npz(path)
    else:
        x, y, features, labels, row_name = _read_csv(path)
    if len(x) == 0:
        raise DataError(f"{path}: no data rows")
    for values, names, what in ((x, features, "value"), (y, labels, "label")):
        bad = np.argwhere(~np.isfinite(values))
        if len(bad):
            i, j = bad[0]
            raise DataError(
                f"{path}: {row_name(i)}, column '{names[j]}': {what} is {values[i, j]}"
                " (NaN, infinite or empty); every cell must be a finite number"
            )
    bad = np.argwhere((y != 0) & (y != 1))
    if len(bad):
        i, j = bad[0]
        raise DataError(
            f"{path}: {row_name(i)}, column '{labels[j]}': label is {y[i, j]:g}; "
            "labels must be 0 or 1"
        )
    return x.astype(np.float32), y.astype(np.float32), features, labels


def _read_csv(
    path: Path,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str], Callable[[int], str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: empty file; expected a header row")
    header = [name.strip() for name in rows[0]]
    labels = [name for name in header if _is_label_column(name)]
    features = [name for name in header if not _is_label_column(name)]
    if not labels:
        raise DataError(
            f"{path}: no label column; name the 0/1 label column(s) 'label' or 'label_<name>'"
        )
    if not features:
        raise DataError(f"{path}: no feature column; every column is named like a label")
    values = np.empty((len(rows) - 1, len(header)), np.float64)
    for r, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise DataError(
                f"{path}: row {r} (line {r + 1}) has {len(row)} fields, header has {len(header)}"
            )
        for c, cell in enumerate(row):
            cell = cell.strip()
            try:
                values[r - 1, c] = float(cell) if cell else math.nan
            except ValueError:
                raise DataError(
                    f"{path}: row {r} (line {r + 1}), column '{header[c]}': "
                    f"{cell!r} is not a number"
                ) from None
    is_label = np.array([_is_label_column(name) for name in header])
    return (
        values[:, ~is_label],
        values[:, is_label],
        features,
        labels,
        lambda i: f"row {i + 1} (line {i + 2})",
    )


def _read_npz(
    path: Path,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str], Callable[[int], str]]:
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    with arrays:
        for key in ("x", "y"):
            if key not in arrays:
                raise DataError(
                    f"{path}: missing array '{key}' (found: {', '.join(arrays.files) or 'none'})"
                )
        x, y = arrays["x"], arrays["y"]
        if x.ndim != 2 or y.ndim not in (1, 2) or len(x) != len(y):
            raise DataError(
                f"{path}: expected x [n, features] and y [n] or [n, labels], "
                f"got x {x.shape} and y {y.shape}"
            )
        y = y.reshape(len(y), -1)
        features = _names(arrays, "feature_names", "x", x.shape[1], path)
        labels = _names(arrays, "label_names", "y", y.shape[1], path)
    try:
        x, y = x.astype(np.float64), y.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: x and y must be numeric, got {x.dtype} and {y.dtype}") from None
    return x, y, features, labels, lambda i: f"row {i} (0-based)"


def _names(arrays: Any, key: str, of: str, n: int, path: Path) -> list[str]:
    if key not in arrays:
        return [f"{of}[:, {j}]" for j in range(n)]
    names = [str(name) for name in arrays[key]]
    if len(names) != n:
        raise DataError(f"{path}: '{key}' has {len(names)} names for {n} columns of '{of}'")
    return names


def split_and_standardise(
    x: np.ndarray,
    y: np.ndarray,
    *,
    strata: np.ndarray | None,
    seed: int,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> tuple[Split, Split, Split]:
    """Splits into train/validation/test and standardises features with train statistics.

    Args:
      x: ``[n, features]`` features.
      y: ``[n]`` or ``[n, labels]`` 0/1 labels.
      strata: ``[n]`` class of each row to stratify on, or None for a plain random split.
        Falls back to a random split when a class is too small to appear in every split.
      seed: Seed of the split.
      val_fraction: Share of rows for validation.
      test_fraction: Share of rows for the test set.

    Returns:
      ``(train, val, test)``, all labels observed (``mask`` all True).
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(x))
    if strata is not None and np.unique(strata, return_counts=True)[1].min() < 5:
        strata = None
    rest, test = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=strata
    )
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        random_state=seed,
        stratify=None if strata is None else strata[rest],
    )
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std < 1e-8] = 1.0  # A column constant on train is only centred (like StandardScaler).

    def make(rows: np.ndarray) -> Split:
        return Split(
            x=((x[rows] - mean) / std).astype(np.float32),
            y=y[rows].astype(np.float32),
            mask=np.ones(y[rows].shape, bool),
        )

    return make(train), make(val), make(test)


def positive_weight(split: Split) -> np.ndarray:
    """Negatives per positive among the observed train labels, per label (PyTorch convention).

    Args:
      split: The training split.

    Returns:
      ``float32`` of the shape of one example's labels (a scalar for binary).
    """
    pos = np.where(split.mask, split.y, 0).sum(axis=0)
    neg = np.where(split.mask, 1 - split.y, 0).sum(axis=0)
    return (neg / np.maximum(pos, 1)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Model and optimiser
# --------------------------------------------------------------------------------------------


class MLP(nnx.Module):
    """A multi-layer perceptron that returns logits (no sigmoid: the loss applies it stably)."""

    def __init__(
        self, in_features: int, hidden: int, out_features: int, *, depth: int = 2, rngs: nnx.Rngs
    ) -> None:
        """Builds the layers.

        Args:
          in_features: Width of the input.
          hidden: Width of each hidden layer.
          out_features: Number of logits per example.
          depth: Number of hidden layers.
          rngs: Source of the initial weights.
        """
        widths = [in_features] + [hidden] * depth
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(widths)])
        self.head = nnx.Linear(hidden, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``float32[batch, in_features]`` to logits ``float32[batch, out_features]``."""
        for layer in self.layers:
            x = nnx.gelu(layer(x))
        return self.head(x)


def make_transform(args: argparse.Namespace) -> optax.GradientTransformation:
    """Gradient clipping, then AdamW with linear warm-up and cosine decay.

    Build it once per run and hand the same object to every ``nnx.Optimizer``: it is part of
    the optimizer's static structure, so models that share it share one compiled train step.

    Args:
      args: Flags ``lr``, ``steps`` and ``weight_decay``.

    Returns:
      The Optax transformation.
    """
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(learning_rate_schedule(args), weight_decay=args.weight_decay),
    )


def learning_rate_schedule(args: argparse.Namespace) -> optax.Schedule:
    """Linear warm-up over the first 5% of steps, then cosine decay to 1% of ``--lr``."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=args.lr,
        warmup_steps=max(1, args.steps // 20),
        decay_steps=args.steps,
        end_value=args.lr / 100,
    )


# --------------------------------------------------------------------------------------------
# Devices: one data-parallel mesh axis
# --------------------------------------------------------------------------------------------


def make_mesh(multi_host: bool) -> Mesh:
    """A 1-D mesh over every device JAX sees (all hosts with ``multi_host``).

    Args:
      multi_host: Call ``jax.distributed.initialize()`` first; it reads the coordinator
        address and process id from the cluster environment (SLURM, TPU pod, ...).

    Returns:
      A ``Mesh`` with one axis, ``"data"``, over which batches are split.
    """
    if multi_host:
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as e:
            fail(
                f"--multi-host: jax.distributed.initialize() failed ({e}); start one process per "
                "host under a launcher JAX detects (SLURM, Open MPI, Kubernetes, Cloud TPU)"
            )
    return Mesh(np.asarray(jax.devices()), ("data",))


def _global_array(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # Every process holds the same host value; each one hands over the pieces its devices own.
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def put_replicated(mesh: Mesh, value: np.ndarray) -> jax.Array:
    """A host array copied to every device of the mesh (``NamedSharding(mesh, P())``)."""
    return _global_array(value, NamedSharding(mesh, P()))


def replicate(mesh: Mesh, *nodes: Any) -> None:
    """Places every array of the given NNX objects, unchanged, on every device of the mesh.

    Args:
      mesh: The device mesh.
      *nodes: NNX modules or optimizers, updated in place.
    """
    for node in nodes:
        nnx.update(node, jax.tree.map(lambda a: put_replicated(mesh, a), nnx.state(node)))


def shard_batch(mesh: Mesh, arrays: Mapping[str, np.ndarray]) -> Batch:
    """Splits each array's leading (batch) axis over the mesh's ``"data"`` axis.

    Args:
      mesh: The device mesh.
      arrays: Host arrays with the same leading size, a multiple of the device count.

    Returns:
      The global arrays, sharded with ``NamedSharding(mesh, P("data"))``.
    """
    sharding = NamedSharding(mesh, P("data"))
    return {k: _global_array(v, sharding) for k, v in arrays.items()}


def padded_batch(mesh: Mesh, split: Split) -> Batch:
    """A whole split as one sharded batch, padded to a multiple of the device count.

    Padding rows have ``mask`` False, so the loss's ``where=`` leaves them out.

    Args:
      mesh: The device mesh.
      split: The split to evaluate.

    Returns:
      The sharded batch.
    """
    pad = -len(split) % mesh.size
    padded = Split(
        *(
            np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
            for a in (split.x, split.y, split.mask)
        )
    )
    return batch_of(mesh, padded, np.arange(len(padded)))


def batch_of(mesh: Mesh, split: Split, rows: np.ndarray) -> Batch:
    """The given rows of a split as a batch sharded over the mesh."""
    return shard_batch(mesh, {"x": split.x[rows], "y": split.y[rows], "mask": split.mask[rows]})


def loss_and_probabilities(
    outputs: tuple[jax.Array, jax.Array], n: int
) -> tuple[float, np.ndarray]:
    """Brings an eval step's ``(loss, logits)`` to the host as a float and probabilities.

    Gathers the batch-sharded logits from all devices (and hosts), drops the padding rows of a
    :func:`padded_batch` and applies the sigmoid in float64.

    Args:
      outputs: ``(loss, logits)`` from an eval step.
      n: Number of real rows.

    Returns:
      ``(loss, probability)`` with ``probability`` a NumPy array of the first ``n`` rows.
    """
    from scipy.special import expit

    loss, logits = outputs
    logits = np.asarray(multihost_utils.process_allgather(logits, tiled=True))[:n]
    return float(loss), expit(logits.astype(np.float64))


def batch_rows(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """Row indices of the training batch at ``step``, a pure function of ``(seed, step)``.

    Each epoch is a fresh permutation seeded by ``(seed, epoch)``; the tail that does not fill a
    batch is dropped. A resumed run therefore sees exactly the batches an uninterrupted one sees.

    Args:
      seed: The run's seed.
      step: The 0-based training step.
      n: Number of training rows.
      batch_size: Global batch size (at most ``n``).

    Returns:
      ``int[batch_size]`` row indices.
    """
    epoch, k = divmod(step, n // batch_size)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[k * batch_size : (k + 1) * batch_size]


# --------------------------------------------------------------------------------------------
# Checkpoints and the training loop
# --------------------------------------------------------------------------------------------


def is_main_process() -> bool:
    """Whether this process writes the output files (process 0)."""
    return jax.process_index() == 0


def pure_state(nodes: Mapping[str, Any]) -> dict[str, Any]:
    """The arrays of named NNX objects as nested dicts (what Orbax saves)."""
    return {name: nnx.to_pure_dict(nnx.state(node)) for name, node in nodes.items()}


class Checkpoints:
    """Orbax checkpoints of named NNX objects plus the history rows written so far."""

    def __init__(self, directory: Path, *, keep: int = 3) -> None:
        """Opens (or creates) the checkpoint directory.

        Args:
          directory: Where step directories go.
          keep: How many recent checkpoints to keep (older ones serve as fall-backs).
        """
        self.directory = directory.absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, cleanup_tmp_directories=True),
        )

    def restore_latest(self, nodes: Mapping[str, Any]) -> tuple[int, list[dict[str, float]]]:
        """Loads the newest readable checkpoint into ``nodes``.

        An unreadable checkpoint (truncated or corrupt files) is reported on stderr, moved
        aside to ``<step>.corrupt`` (kept, not deleted) and the previous one is tried.

        Args:
          nodes: The named NNX objects, updated in place; their current arrays give the
            shapes, dtypes and shardings to restore to.

        Returns:
          ``(step, history)``: the step reached and the history rows up to it; ``(0, [])``
          when there is nothing to resume.
        """
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, pure_state(nodes))
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target), history=ocp.args.JsonRestore()
                    ),
                )
            except Exception as e:  # Any failure to read it means: try the previous one.
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                print(
                    f"warning: checkpoint {self.directory / str(step)} is unreadable "
                    f"({type(e).__name__}: {reason}); moving it to {step}.corrupt and "
                    "falling back to the previous checkpoint",
                    file=sys.stderr,
                )
                if is_main_process():
                    aside = self.directory / f"{step}.corrupt"
                    shutil.rmtree(aside, ignore_errors=True)
                    os.replace(self.directory / str(step), aside)
                self.manager.reload()
                continue
            for name, node in nodes.items():
                state = nnx.state(node)
                nnx.replace_by_pure_dict(state, restored.state[name])
                nnx.update(node, state)
            print(f"resuming from checkpoint at step {step}", file=sys.stderr)
            return step, list(restored.history["rows"])
        return 0, []

    def save(self, step: int, nodes: Mapping[str, Any], history: list[dict[str, float]]) -> None:
        """Starts saving a checkpoint in the background (Orbax writes it atomically).

        Args:
          step: Number of steps done.
          nodes: The named NNX objects.
          history: History rows so far.
        """
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(pure_state(nodes)),
                history=ocp.args.JsonSave({"rows": history}),
            ),
            force=True,
        )

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def check_out_dir(out: Path, config: dict[str, Any]) -> None:
    """Refuses to resume into a directory written by a run with different settings.

    Args:
      out: The ``--out`` directory (created if needed).
      config: This run's :func:`config_of` flags.
    """
    path = out / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        changed = sorted(k for k in config.keys() | old.keys() if old.get(k) != config.get(k))
        if changed:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in changed)
            fail(f"{out} holds a run with other settings ({diffs}); use a new --out")
    elif is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, config)


def prepare_run(
    args: argparse.Namespace, load_data: Callable[[Path | None, int], Dataset]
) -> tuple[Mesh, Dataset]:
    """Checks the flags, sets up the devices, loads the data and claims ``--out``.

    Every problem a user can fix ends the program with a one-line error (exit status 2).

    Args:
      args: Parsed flags from a parser built with :func:`add_common_flags`.
      load_data: The script's loader, called with ``args.data`` and ``args.seed``.

    Returns:
      ``(mesh, data)``.
    """
    check_common_flags(args)
    mesh = make_mesh(args.multi_host)
    if args.batch_size % mesh.size:
        fail(f"--batch-size {args.batch_size} is not a multiple of the {mesh.size} devices")
    try:
        data = load_data(args.data, args.seed)
    except DataError as e:
        fail(str(e))
    if args.batch_size > len(data.train):
        fail(f"--batch-size {args.batch_size} exceeds the {len(data.train)} training rows")
    check_out_dir(args.out, config_of(args))
    return mesh, data


def fit(
    args: argparse.Namespace,
    *,
    train_rows: int,
    nodes: Mapping[str, Any],
    train_step: Callable[[np.ndarray], Mapping[str, jax.Array]],
    evaluate: Callable[[], Mapping[str, float]],
) -> list[dict[str, float]]:
    """Runs (or resumes) the training loop with progress bar, history and checkpoints.

    Args:
      args: Flags ``steps``, ``batch_size``, ``seed``, ``eval_every``, ``checkpoint_every``,
        ``stop_after`` and ``out``.
      train_rows: Number of training rows.
      nodes: The named NNX objects that make up the training state (models, optimizers).
      train_step: One jitted update on the batch made of the given training rows (see
        :func:`batch_rows`); returns named scalar losses.
      evaluate: Validation metrics for the current state, as floats.

    Returns:
      The history rows: ``step``, ``lr``, the mean of each training loss since the previous
      row, and the validation metrics.
    """
    checkpoints = Checkpoints(args.out / "checkpoints")
    start, history = checkpoints.restore_latest(nodes)
    schedule = learning_rate_schedule(args)
    pending: list[Mapping[str, jax.Array]] = []
    bar = tqdm(
        range(start, args.steps),
        initial=start,
        total=args.steps,
        desc=args.out.name,
        disable=not is_main_process(),
        dynamic_ncols=True,
    )
    try:
        for step in bar:
            pending.append(train_step(batch_rows(args.seed, step, train_rows, args.batch_size)))
            done = step + 1
            if done % args.eval_every == 0 or done == args.steps:
                row = {"step": done, "lr": float(schedule(step))}
                for key in pending[0]:
                    row[key] = float(np.mean([float(losses[key]) for losses in pending]))
                row.update(evaluate())
                history.append(row)
                pending = []
                bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k not in ("step", "lr")})
                if is_main_process():
                    write_csv(args.out / "history.csv", history)
            if done % args.checkpoint_every == 0 or done == args.steps:
                checkpoints.save(done, nodes, history)
            if done == args.stop_after:
                checkpoints.manager.wait_until_finished()
                bar.close()
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        bar.close()
        checkpoints.close()
    return history


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def best_threshold(y: np.ndarray, probability: np.ndarray) -> float:
    """The probability threshold with the highest F1 on the given (validation) labels.

    Args:
      y: ``[n]`` 0/1 labels.
      probability: ``[n]`` predicted probabilities.

    Returns:
      The threshold; 0.5 when ``y`` has no positives.
    """
    from sklearn.metrics import precision_recall_curve

    if y.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y, probability)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[np.argmax(f1[:-1])])


def binary_metrics(y: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC, average precision, and accuracy and F1 at ``threshold``.

    Args:
      y: ``[n]`` 0/1 labels.
      probability: ``[n]`` predicted probabilities.
      threshold: Predict positive where ``probability >= threshold``.

    Returns:
      ``roc_auc``, ``average_precision``, ``accuracy``, ``f1``, ``threshold``; the ranking
      metrics are NaN when ``y`` holds a single class.
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    predicted = probability >= threshold
    both = 0 < y.sum() < len(y)
    return {
        "roc_auc": float(roc_auc_score(y, probability)) if both else math.nan,
        "average_precision": float(average_precision_score(y, probability)) if both else math.nan,
        "accuracy": float(np.mean(predicted == y)),
        "f1": float(f1_score(y, predicted, zero_division=0.0)),
        "threshold": float(threshold),
    }


# --------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
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
    _atomic_write(path, (json.dumps(_json_ready(value), indent=2) + "\n").encode())


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes rows (dicts with the same keys) as CSV atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["step"])
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(path, text.getvalue().encode())


def save_params(path: Path, model: nnx.Module) -> None:
    """Writes the model's parameters to ``.npz`` (keys like ``layers/0/kernel``), atomically."""
    flat = {
        "/".join(str(k) for k in key): np.asarray(value)
        for key, value in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    _atomic_write(path, buffer.getvalue())


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
      history: The rows returned by :func:`fit`.
      curves: Test ROC and precision-recall curves to draw, see :func:`plot_roc_pr`.
      model: The trained model.
    """
    if not is_main_process():
        return
    write_json(out / "metrics.json", metrics)
    plot_history(history, out / "loss.png")
    plot_roc_pr(curves, out / "roc_pr.png")
    save_params(out / "params.npz", model)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    _atomic_write(path, buffer.getvalue())


def plot_history(history: Sequence[Mapping[str, float]], path: Path) -> None:
    """Training and validation loss curves (every ``*loss*`` column of the history).

    Args:
      history: The rows returned by :func:`fit`.
      path: PNG file to write.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [row["step"] for row in history]
    for key in history[0] if history else []:
        if "loss" in key:
            ax.plot(steps, [row[key] for row in history], label=key)
    ax.set(xlabel="step", ylabel="loss", title="loss", yscale="log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_roc_pr(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """ROC and precision-recall curves side by side.

    Args:
      curves: Name to ``(labels, probabilities)``, one curve per entry.
      path: PNG file to write.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, (y, probability) in curves.items():
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, probability)
            precision, recall, _ = precision_recall_curve(y, probability)
            roc.plot(fpr, tpr, label=name)
            pr.plot(recall, precision, label=name)
    roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="test ROC")
    pr.set(xlabel="recall", ylabel="precision", title="test precision-recall")
    for ax in (roc, pr):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_bars(groups: Mapping[str, Mapping[str, Mapping[str, float]]], path: Path) -> None:
    """Per-label bars of each metric, one bar per group (e.g. with and without a mask).

    Args:
      groups: Group name to label name to metric name to value.
      path: PNG file to write.
    """
    plt = _pyplot()
    first = next(iter(groups.values()))
    labels = list(first)
    metrics = ["roc_auc", "average_precision", "f1"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4), sharey=True)
    width = 0.8 / len(groups)
    for ax, metric in zip(axes, metrics, strict=True):
        for g, (group, table) in enumerate(groups.items()):
            values = [table[label][metric] for label in labels]
            ax.bar(np.arange(len(labels)) + g * width, values, width, label=group)
        ax.set_xticks(np.arange(len(labels)) + width * (len(groups) - 1) / 2, labels, rotation=45)
        ax.set(title=f"test {metric}", ylim=(0, 1.05))
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    _save_figure(fig, path)
