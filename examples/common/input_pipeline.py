"""Reading the data and feeding it: a user's ``--data`` file, the split, the batches' order.

:func:`read_table` reads a CSV or ``.npz`` and checks every cell, raising :class:`DataError`
with the file, row and column of the first bad one. :func:`split_and_standardise` makes the
train/validation/test :class:`Split` s; :func:`positive_weight` gives ``pos_weight``;
:func:`batch_rows` is the training batch at a step, a pure function of ``(seed, step)``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class DataError(ValueError):
    """A ``--data`` file that cannot be used; the message names file, column and row."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of the data, as host NumPy arrays.

    Attributes:
      x: ``float32[n, features]`` features (standardised, for the classifiers).
      y: The labels, dense or sparse: ``float32[n]`` (binary) or ``float32[n, labels]``
        (multi-label) 0/1 labels; or, where there are too many labels to store densely,
        ``int32[n, k]`` the indices of each row's positive labels, padded with -1
        (``extreme_multilabel.py``).
      mask: ``bool`` like ``y``: which entries count. Dense labels: which labels are observed
        (False = missing, excluded from the loss and the metrics); sparse labels: which
        indices are labels rather than padding.
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
      DataError: A missing file or column, a non-number, a NaN or infinity, a label that is
        not 0 or 1 (the message names the file, the column and the row), or labels of one
        class only.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".npz":
        x, y, features, labels, row_name = _read_npz(path)
    else:
        x, y, features, labels, row_name = _read_csv(path)
    if len(x) == 0:
        raise DataError(f"{path}: no data rows")
    if x.shape[1] == 0:
        raise DataError(f"{path}: no feature columns")
    largest = float(np.finfo(np.float32).max)  # the cells are trained on as float32
    for values, names, what in ((x, features, "value"), (y, labels, "label")):
        bad = np.argwhere(~(np.abs(values) <= largest))
        if len(bad):
            i, j = bad[0]
            raise DataError(
                f"{path}: {row_name(i)}, column '{names[j]}': {what} is {values[i, j]}"
                " (NaN, infinite, empty or beyond float32's range); every cell must be a "
                "finite float32 number"
            )
    bad = np.argwhere((y != 0) & (y != 1))
    if len(bad):
        i, j = bad[0]
        raise DataError(
            f"{path}: {row_name(i)}, column '{labels[j]}': label is {y[i, j]:g}; "
            "labels must be 0 or 1"
        )
    if y.min() == y.max():  # trained "fine", with a NaN ROC-AUC and nothing learned
        raise DataError(
            f"{path}: every label is {y.flat[0]:g}; a classifier needs rows of both classes"
        )
    return x.astype(np.float32), y.astype(np.float32), features, labels


def _read_csv(
    path: Path,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str], Callable[[int], str]]:
    try:  # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from None
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
        try:
            x, y = arrays["x"], arrays["y"]
        except ValueError as e:  # object arrays, which allow_pickle=False refuses
            raise DataError(f"{path}: x and y must be numeric arrays ({e})") from None
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

    if len(x) < 10:  # each of the three splits needs rows (sklearn's error was a traceback)
        raise DataError(f"{len(x)} data rows; at least 10 are needed for train/val/test splits")
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
