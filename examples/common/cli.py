"""The command line of the classifier examples: shared flags, their config, one-line errors.

A script builds its parser with :func:`add_common_flags`, turns the parsed flags into its
config with :func:`config_from_flags` and hands that to :func:`prepare_run`, which checks it,
sets up the devices, loads the data, fits the batch size to them and claims ``--out``. A
problem the user can fix ends the program with :func:`fail`: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn, TypeVar

from jax.sharding import Mesh

from common.checkpoints import check_out_dir
from common.config import (
    ConfigError,
    TrainConfig,
    check_train_config,
    fit_batch_to_data,
    recorded_settings,
)
from common.input_pipeline import DataError, Dataset
from common.sharding import is_main_process, make_mesh

Config = TypeVar("Config", bound=TrainConfig)


def finite_float(text: str) -> float:
    """``type=`` of a float flag: a finite number (NaN or inf trained to a run of NaN)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def fail(message: str) -> NoReturn:
    """Exits with status 2 and a one-line ``error:`` message on stderr, without a traceback.

    Args:
      message: What went wrong and where (file, column, row), in one line.

    Raises:
      SystemExit: Always, with code 2 (the code argparse uses for bad input).
    """
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def add_common_flags(
    parser: argparse.ArgumentParser, defaults: TrainConfig, *, without: Iterable[str] = ()
) -> None:
    """Adds the flags the examples share.

    Args:
      parser: The script's parser.
      defaults: The script's default config; each flag's default is its field.
      without: Config fields whose flags the script does not offer (``"data"``,
        ``"pos_weight"``); those settings keep their value in ``defaults``.
    """
    without = set(without)
    if "data" not in without:
        parser.add_argument(
            "--data",
            type=Path,
            default=defaults.data,
            help="train on this CSV or .npz instead of the bundled scikit-learn data "
            "(format: examples/README.md)",
        )
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"global batch size; must be a multiple of the number of devices (default "
        f"{defaults.batch_size}, or fewer to fit the training rows)",
    )
    parser.add_argument(
        "--lr", type=finite_float, default=defaults.lr, help="peak learning rate (AdamW)"
    )
    parser.add_argument(
        "--weight-decay",
        type=finite_float,
        default=defaults.weight_decay,
        help="AdamW weight decay",
    )
    parser.add_argument(
        "--hidden", type=int, default=defaults.hidden, help="width of the hidden layers"
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed for split, init and data order"
    )
    parser.add_argument("--out", type=Path, default=defaults.out, help="output directory")
    if "pos_weight" not in without:
        parser.add_argument(
            "--no-pos-weight",
            dest="pos_weight",
            action="store_false",
            help="do not up-weight positives by the train negative/positive ratio",
        )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=defaults.eval_every,
        help="validate and log every N steps",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=defaults.checkpoint_every,
        help="save an Orbax checkpoint every N steps (a multiple of --eval-every)",
    )
    parser.add_argument(
        "--multi-host",
        action="store_true",
        help="call jax.distributed.initialize() first (GPU clusters, TPU pods)",
    )


def config_from_flags(args: argparse.Namespace, defaults: Config) -> Config:
    """The config the parsed flags ask for.

    Args:
      args: Parsed flags from a parser built with :func:`add_common_flags` (and the script's
        own flags, named like the fields of its config).
      defaults: The script's default config.

    Returns:
      ``defaults`` with every field that has a flag set from it. Without ``--batch-size``, the
      default batch size is kept and marked ``shrink_batch``: it may shrink to the data.
    """
    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(defaults)
        if hasattr(args, field.name)
    }
    if given["batch_size"] is None:
        given.update(batch_size=defaults.batch_size, shrink_batch=True)
    return dataclasses.replace(defaults, **given)


def prepare_run(
    config: Config, load_data: Callable[[Path | None, int], Dataset]
) -> tuple[Config, Mesh, Dataset]:
    """Checks the config, sets up the devices, loads the data and claims ``config.out``.

    A default batch size larger than the training rows shrinks to them, with a note on stderr;
    an explicit one that does not fit is an error. Every problem a user can fix ends the
    program with a one-line error (exit status 2).

    Args:
      config: The run's config, from :func:`config_from_flags`.
      load_data: The script's loader, called with ``config.data`` and ``config.seed``.

    Returns:
      ``(config, mesh, data)``, the config with the batch size to use.
    """
    try:
        check_train_config(config)
        mesh = make_mesh(config.multi_host)
        data = load_data(config.data, config.seed)
        fitted = fit_batch_to_data(config, len(data.train), mesh.size)
        if fitted.batch_size != config.batch_size and is_main_process():
            reason = (
                f"more than the {len(data.train)} training rows"
                if config.batch_size > len(data.train)
                else f"not a multiple of the {mesh.size} devices"
            )
            print(
                f"{Path(sys.argv[0]).name}: note: the default --batch-size {config.batch_size} "
                f"is {reason}; using {fitted.batch_size}",
                file=sys.stderr,
            )
        check_out_dir(fitted.out, recorded_settings(fitted))
    except (ConfigError, DataError) as e:
        fail(str(e))
    return fitted, mesh, data
