"""The settings of a training run: :class:`TrainConfig`, its checks and its JSON record.

The library-like code of the examples (the training loop, the optimiser, the run set-up)
takes a config, never the parsed command line; ``cli.config_from_flags`` builds one from the
flags. A script with settings of its own subclasses :class:`TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting that cannot work; the message names the flag, the value and what is expected."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What a run of ``binary_classifier.py`` or ``multilabel_classifier.py`` does.

    Attributes:
      steps: Training steps.
      batch_size: Global batch size, split over all devices.
      lr: Peak learning rate (AdamW).
      weight_decay: AdamW decoupled weight decay.
      hidden: Width of the hidden layers.
      out: Output directory: files and checkpoints.
      seed: Seed of the split, the initial weights and the data order.
      pos_weight: Up-weight positives by the train negative/positive ratio.
      eval_every: Validate and write a history row every this many steps.
      checkpoint_every: Save a checkpoint every this many steps (a multiple of ``eval_every``).
      data: A CSV or ``.npz`` to train on instead of the bundled data.
      multi_host: Call ``jax.distributed.initialize()`` before using the devices.
      shrink_batch: ``batch_size`` is a default, not the user's choice: it shrinks to the
        training rows (and to a multiple of the device count) where it does not fit, instead of
        being an error.
    """

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    hidden: int
    out: Path
    seed: int = 0
    pos_weight: bool = True
    eval_every: int = 50
    checkpoint_every: int = 100
    data: Path | None = None
    multi_host: bool = False
    shrink_batch: bool = False


# Settings that do not change what a run computes; a resumed run may differ in these. (The
# batch size a default shrank to is recorded, so whether it was a default does not matter.)
RUN_ONLY = ("out", "multi_host", "shrink_batch")


def as_json(config: Any) -> dict[str, Any]:
    """A config dataclass's fields as JSON-ready values, in field order (paths as strings)."""
    return {
        field.name: (str(v) if isinstance(v := getattr(config, field.name), Path) else v)
        for field in dataclasses.fields(config)
    }


def recorded_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that determine what a run computes, sorted by name (``config.json``).

    Args:
      config: The run's config, its batch size resolved.

    Returns:
      A dict of setting name to value, without the settings listed in ``RUN_ONLY``; with
      ``--data``, also ``data_sha256``, the file's contents' hash: a file changed in place
      is other data (its checkpoints were taken for the weights of another run).
    """
    settings = {k: v for k, v in as_json(config).items() if k not in RUN_ONLY}
    if config.data is not None and Path(config.data).is_file():
        settings["data_sha256"] = hashlib.sha256(Path(config.data).read_bytes()).hexdigest()
    return dict(sorted(settings.items()))


def check_at_least_one(config: Any, names: Iterable[str]) -> None:
    """Requires each named integer setting to be at least 1.

    Raises:
      ConfigError: Naming the first setting that is not, as its flag.
    """
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}"
            )


def check_train_config(config: TrainConfig) -> None:
    """Rejects settings the training loop cannot honour.

    Raises:
      ConfigError: The first setting that cannot work.
    """
    check_at_least_one(config, ("steps", "batch_size", "eval_every", "checkpoint_every", "hidden"))
    if config.lr <= 0:
        raise ConfigError(f"--lr must be positive, got {config.lr}")
    if config.seed < 0:
        raise ConfigError(f"--seed must be at least 0, got {config.seed}")
    if config.weight_decay < 0:
        raise ConfigError(f"--weight-decay must be at least 0, got {config.weight_decay}")
    if config.checkpoint_every % config.eval_every:
        raise ConfigError(
            f"--checkpoint-every ({config.checkpoint_every}) must be a multiple of "
            f"--eval-every ({config.eval_every}) so that a resumed history is exact"
        )


def fit_batch_to_data(config: TrainConfig, train_rows: int, devices: int) -> TrainConfig:
    """The config with a batch size that the training rows and the devices can honour.

    An explicit batch size must be a multiple of the device count and at most the number of
    training rows. A default one (``shrink_batch``) is lowered to the largest multiple of the
    device count that fits in the training rows, where it does not already fit.

    Args:
      config: The run's config.
      train_rows: Number of training rows.
      devices: Number of devices the batch is split over.

    Returns:
      The config with the batch size to use and ``shrink_batch`` False.

    Raises:
      ConfigError: An explicit batch size that does not fit, or fewer training rows than
        devices.
    """
    size = config.batch_size
    if config.shrink_batch:
        size = min(size, train_rows) // devices * devices
        if size < 1:
            raise ConfigError(
                f"{train_rows} training rows cannot fill a batch split over {devices} devices; "
                f"expected at least {devices} rows"
            )
    elif size % devices:
        raise ConfigError(f"--batch-size {size} is not a multiple of the {devices} devices")
    elif size > train_rows:
        raise ConfigError(
            f"--batch-size {size} exceeds the {train_rows} training rows; expected at most "
            f"{train_rows} (or leave --batch-size out to use a batch that fits)"
        )
    return dataclasses.replace(config, batch_size=size, shrink_batch=False)
