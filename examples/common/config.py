"""The settings of a training run: :class:`TrainConfig`, its checks and its JSON record.

The library-like code of the examples (the training loop, the optimiser, the run set-up)
takes a config, never the parsed command line; ``cli.config_from_flags`` builds one from the
flags. A script with settings of its own subclasses :class:`TrainConfig`.
"""

from __future__ import annotations

import dataclasses
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


# Settings that do not change what a run computes; a resumed run may differ in these.
RUN_ONLY = ("out", "multi_host")


def as_json(config: Any) -> dict[str, Any]:
    """A config dataclass's fields as JSON-ready values, in field order (paths as strings)."""
    return {
        field.name: (str(v) if isinstance(v := getattr(config, field.name), Path) else v)
        for field in dataclasses.fields(config)
    }


def recorded_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that determine what a run computes, sorted by name (``config.json``).

    Args:
      config: The run's config.

    Returns:
      A dict of setting name to value, without the settings listed in ``RUN_ONLY``.
    """
    return {k: v for k, v in sorted(as_json(config).items()) if k not in RUN_ONLY}


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
    if config.checkpoint_every % config.eval_every:
        raise ConfigError(
            f"--checkpoint-every ({config.checkpoint_every}) must be a multiple of "
            f"--eval-every ({config.eval_every}) so that a resumed history is exact"
        )
