"""Multi-label classifier: a Flax NNX MLP with one sigmoid output per attribute, via ``jaxbce``.

By default it reads the 8x8 handwritten-digit images that scikit-learn ships (1797 images, 64
pixels; no download) and predicts five attributes of the digit drawn, each a yes/no label, so
one image has several positive labels at once:

=================  =============  ================================================
label              digits         why
=================  =============  ================================================
``even``           0 2 4 6 8      parity
``prime``          2 3 5 7        the primes below 10
``greater_than_4`` 5 6 7 8 9      magnitude
``closed_loop``    0 6 8 9        the glyph encloses an area (4 left out: it is
                                  written both open and closed at the top)
``divisible_by_3`` 0 3 6 9        divisibility (0 counts)
=================  =============  ================================================

The labels overlap (6 is even, greater than 4, looped and divisible by 3; 5 and 7 agree on
all five), so each output is its own binary problem with its own sigmoid, not one softmax over
classes. ``--data`` trains on your own CSV or ``.npz`` with one or more 0/1 label columns
(format: ``examples/README.md``).

``--hide-fraction 0.3`` hides 30% of the train and validation labels at random, as if nobody had
annotated them. The model then trains with ``where=mask``, so hidden labels add nothing to the
loss or to the mean's denominator. For comparison the script also trains, on the same batches,
a second model that treats hidden labels as negatives (what you get without the mask) and
reports its numbers under ``without_mask`` (``--no-baseline`` skips it). Test labels are
never hidden.

The per-example loss is ``jax.vmap``-ed over the batch; each label has its own ``pos_weight``
(train negatives per positive). ``--loss focal`` uses ``jaxbce.sigmoid_focal_loss`` instead.
Run::

    python examples/multilabel_classifier.py --out runs/multilabel
    python examples/multilabel_classifier.py --hide-fraction 0.3 --out runs/multilabel_hidden
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from common import input_pipeline, sharding
from common.cli import add_common_flags, config_from_flags, fail, finite_float, prepare_run
from common.config import TrainConfig
from common.input_pipeline import Dataset, Split
from common.metrics import best_threshold, binary_metrics
from common.models import MLP
from common.outputs import atomic_write, write_outputs
from common.plots import plot_bars
from common.sharding import Batch
from common.train import fit, make_transform
from flax import nnx

import jaxbce

ATTRIBUTES: dict[str, frozenset[int]] = {
    "even": frozenset({0, 2, 4, 6, 8}),
    "prime": frozenset({2, 3, 5, 7}),
    "greater_than_4": frozenset({5, 6, 7, 8, 9}),
    "closed_loop": frozenset({0, 6, 8, 9}),
    "divisible_by_3": frozenset({0, 3, 6, 9}),
}
"""The default labels: the digits for which each attribute is true."""


@dataclasses.dataclass(frozen=True)
class MultilabelConfig(TrainConfig):
    """A run's settings: the shared ones, and missing labels and the loss.

    Attributes:
      hide_fraction: Share of train and validation labels to hide (``mask`` False).
      baseline: With ``hide_fraction``, also train a model that takes hidden labels for 0.
      loss: ``"bce"`` or ``"focal"``.
      focal_alpha: Focal loss weight of the positive class.
      focal_gamma: Focal loss focusing exponent.
    """

    hide_fraction: float = 0.0
    baseline: bool = True
    loss: str = "bce"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


DEFAULTS = MultilabelConfig(
    steps=1000,
    batch_size=128,
    lr=3e-3,
    weight_decay=1.0,
    hidden=128,
    out=Path("runs/multilabel_classifier"),
)
"""The settings of a run without flags."""


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Which loss to use; static under ``jit`` (a change recompiles).

    Attributes:
      focal: Use ``jaxbce.sigmoid_focal_loss`` instead of binary cross-entropy.
      alpha: Focal loss weight of the positive class.
      gamma: Focal loss focusing exponent.
    """

    focal: bool = False
    alpha: float = 0.25
    gamma: float = 2.0


def load_data(path: Path | None, seed: int) -> Dataset:
    """Loads the digits attributes (or ``path``) and splits them.

    Args:
      path: A CSV or ``.npz`` with one or more 0/1 label columns, or None for the digits.
      seed: Seed of the split, stratified by digit (by label combination for ``path`` when
        every combination is common enough).

    Returns:
      The standardised splits; ``y`` has shape ``[n, labels]``.

    Raises:
      DataError: The file is unusable; the message says where and why.
    """
    if path is None:
        from sklearn.datasets import load_digits

        raw = load_digits()
        digit = raw.target
        y = np.stack([np.isin(digit, sorted(ds)) for ds in ATTRIBUTES.values()], axis=1)
        x, features, labels, strata = raw.data, list(raw.feature_names), list(ATTRIBUTES), digit
    else:
        x, y, features, labels = input_pipeline.read_table(path)
        strata = np.unique(y, axis=0, return_inverse=True)[1].ravel()
    train, val, test = input_pipeline.split_and_standardise(
        x, y.astype(np.float32), strata=strata, seed=seed
    )
    return Dataset(train, val, test, features, labels)


def hide_labels(split: Split, fraction: float, rng: np.random.Generator) -> Split:
    """Marks a random ``fraction`` of the labels as missing (``mask`` False).

    Args:
      split: A split with all labels observed.
      fraction: Share of labels to hide, each independently.
      rng: Source of randomness.

    Returns:
      The split with the new mask; ``y`` keeps the true values, which the masked loss never
      reads.
    """
    return dataclasses.replace(split, mask=rng.random(split.y.shape) >= fraction)


def without_mask(split: Split) -> Split:
    """What a pipeline without a mask sees: missing labels filled in as 0, all "observed"."""
    return Split(x=split.x, y=np.where(split.mask, split.y, 0.0), mask=np.ones_like(split.mask))


def example_loss(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    pos_weight: jax.Array | None,
    config: LossConfig,
) -> jax.Array:
    """Summed loss of one example over its observed labels (all arrays ``[labels]``)."""
    if config.focal:
        return jaxbce.sigmoid_focal_loss(
            logits, labels, alpha=config.alpha, gamma=config.gamma, where=mask, reduction="sum"
        )
    return jaxbce.sigmoid_binary_cross_entropy(
        logits, labels, pos_weight=pos_weight, where=mask, reduction="sum"
    )


def loss_fn(
    model: MLP, batch: Batch, pos_weight: jax.Array | None, config: LossConfig
) -> tuple[jax.Array, jax.Array]:
    """Mean loss per observed label: per-example sums (``vmap``) over the count of observed.

    Args:
      model: Maps ``[batch, features]`` to logits ``[batch, labels]``.
      batch: ``x`` ``[batch, features]``, ``y`` and ``mask`` ``[batch, labels]``.
      pos_weight: ``[labels]`` weight of each label's positive term, or None.
      config: Which loss.

    Returns:
      ``(loss, logits)``.
    """
    logits = model(batch["x"])
    per_example = jax.vmap(functools.partial(example_loss, pos_weight=pos_weight, config=config))(
        logits, batch["y"], batch["mask"]
    )
    return per_example.sum() / jnp.maximum(batch["mask"].sum(), 1), logits


@functools.partial(nnx.jit, static_argnames="config")
def train_step(
    model: MLP,
    optimizer: nnx.Optimizer,
    batch: Batch,
    pos_weight: jax.Array | None,
    config: LossConfig,
) -> jax.Array:
    """One AdamW update on a (sharded) batch; returns the batch loss."""
    (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, pos_weight, config)
    optimizer.update(model, grads)
    return loss


@functools.partial(nnx.jit, static_argnames="config")
def eval_step(
    model: MLP, batch: Batch, pos_weight: jax.Array | None, config: LossConfig
) -> tuple[jax.Array, jax.Array]:
    """Loss and logits on a (sharded, padded) batch, without updating anything."""
    return loss_fn(model, batch, pos_weight, config)


def observed(split: Split, probability: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of label ``j`` on the rows where it is observed."""
    rows = split.mask[:, j]
    return split.y[rows, j], probability[rows, j]


def multilabel_metrics(
    test: Split, probability: np.ndarray, val: Split, p_val: np.ndarray, names: list[str]
) -> dict[str, Any]:
    """Per-label, macro and micro test metrics, thresholds chosen per label on validation.

    Args:
      test: The test split (all labels observed).
      probability: ``[n_test, labels]`` predicted probabilities.
      val: The validation split; only its observed labels choose the thresholds.
      p_val: ``[n_val, labels]`` predicted probabilities.
      names: Label names.

    Returns:
      ``test_{macro,micro}_{roc_auc,average_precision,f1}`` and a ``per_label`` table.
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    thresholds = np.array([best_threshold(*observed(val, p_val, j)) for j in range(len(names))])
    per_label = {
        name: binary_metrics(test.y[:, j], probability[:, j], thresholds[j])
        for j, name in enumerate(names)
    }
    y, predicted = test.y.ravel(), (probability >= thresholds).ravel()
    metrics: dict[str, Any] = {
        f"test_macro_{k}": float(np.nanmean([row[k] for row in per_label.values()]))
        for k in ("roc_auc", "average_precision", "f1")
    }
    metrics["test_micro_roc_auc"] = float(roc_auc_score(y, probability.ravel()))
    metrics["test_micro_average_precision"] = float(average_precision_score(y, probability.ravel()))
    metrics["test_micro_f1"] = float(f1_score(y, predicted))
    metrics["per_label"] = per_label
    return metrics


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser, DEFAULTS)
    parser.add_argument(
        "--hide-fraction",
        type=finite_float,
        default=DEFAULTS.hide_fraction,
        help="hide this share of train/validation labels and train with where=mask",
    )
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="with --hide-fraction, skip the comparison model trained without the mask",
    )
    parser.add_argument(
        "--loss", choices=("bce", "focal"), default=DEFAULTS.loss, help="loss function"
    )
    parser.add_argument(
        "--focal-alpha", type=finite_float, default=DEFAULTS.focal_alpha, help="focal loss alpha"
    )
    parser.add_argument(
        "--focal-gamma", type=finite_float, default=DEFAULTS.focal_gamma, help="focal loss gamma"
    )
    return parser


@dataclasses.dataclass
class Variant:
    """One model trained on one view of the labels (with the mask, or without it).

    Attributes:
      train: Training split as this model sees it.
      val: Validation split as this model sees it (chooses the thresholds).
      val_batch: ``val`` on the devices, padded.
      model: The network.
      optimizer: Its optimizer.
      pos_weight: ``[labels]`` replicated positive weights, or None.
    """

    train: Split
    val: Split
    val_batch: Batch
    model: MLP
    optimizer: nnx.Optimizer
    pos_weight: jax.Array | None


def main(
    argv: list[str] | None = None, *, after_step: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Trains, evaluates and writes ``metrics.json``, ``history.csv``, plots and parameters.

    Args:
      argv: Command-line flags (default: ``sys.argv[1:]``).
      after_step: Passed to :func:`~common.train.fit`: called with the steps done after each.

    Returns:
      The metrics written to ``metrics.json``.
    """
    started = time.perf_counter()
    config = config_from_flags(build_parser().parse_args(argv), DEFAULTS)
    if not 0 <= config.hide_fraction < 1:
        fail(f"--hide-fraction must be in [0, 1), got {config.hide_fraction}")
    if config.focal_gamma < 0:
        fail(f"--focal-gamma must be at least 0, got {config.focal_gamma}")
    if config.focal_alpha > 1:  # negative: no alpha weighting (jaxbce.sigmoid_focal_loss)
        fail(f"--focal-alpha must be at most 1 (negative: no weighting), got {config.focal_alpha}")
    config, mesh, data = prepare_run(config, load_data)

    rng = np.random.default_rng([config.seed, 1])
    views = {
        "with_mask": (
            hide_labels(data.train, config.hide_fraction, rng),
            hide_labels(data.val, config.hide_fraction, rng),
        )
    }
    if config.hide_fraction > 0 and config.baseline:
        views["without_mask"] = tuple(without_mask(split) for split in views["with_mask"])
    tx = make_transform(config)
    variants = {}
    for name, (train, val) in views.items():
        model = MLP(train.x.shape[1], config.hidden, train.y.shape[1], rngs=nnx.Rngs(config.seed))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        sharding.replicate(mesh, model, optimizer)
        weight = (
            sharding.put_replicated(mesh, input_pipeline.positive_weight(train))
            if config.pos_weight
            else None
        )
        variants[name] = Variant(
            train, val, sharding.padded_batch(mesh, val), model, optimizer, weight
        )
    loss_config = LossConfig(config.loss == "focal", config.focal_alpha, config.focal_gamma)

    def predict(v: Variant, batch: Batch, n: int) -> tuple[float, np.ndarray]:
        return sharding.loss_and_probabilities(
            eval_step(v.model, batch, v.pos_weight, loss_config), n
        )

    def evaluate() -> dict[str, float]:
        row = {}
        for name, v in variants.items():
            row[f"val_loss_{name}"], p = predict(v, v.val_batch, len(v.val))
            row[f"val_macro_roc_auc_{name}"] = float(
                np.nanmean(
                    [
                        binary_metrics(*observed(v.val, p, j), 0.5)["roc_auc"]
                        for j in range(p.shape[1])
                    ]
                )
            )
        return row

    history = fit(
        config,
        train_rows=len(data.train),
        nodes={
            f"{name}_{part}": getattr(v, part)
            for name, v in variants.items()
            for part in ("model", "optimizer")
        },
        train_step=lambda rows: {
            f"train_loss_{name}": train_step(
                v.model,
                v.optimizer,
                sharding.batch_of(mesh, v.train, rows),
                v.pos_weight,
                loss_config,
            )
            for name, v in variants.items()
        },
        evaluate=evaluate,
        after_step=after_step,
    )

    test_batch = sharding.padded_batch(mesh, data.test)
    results, p_test = {}, {}
    for name, v in variants.items():
        _, p_val = predict(v, v.val_batch, len(v.val))
        test_loss, p_test[name] = predict(v, test_batch, len(data.test))
        results[name] = {
            **multilabel_metrics(data.test, p_test[name], v.val, p_val, data.label_names),
            "test_loss": test_loss,
        }
    metrics: dict[str, Any] = {
        **results["with_mask"],
        "without_mask": results.get("without_mask"),
        "hide_fraction": config.hide_fraction,
        "loss": config.loss,
        "labels": (
            {name: sorted(digits) for name, digits in ATTRIBUTES.items()}
            if config.data is None
            else data.label_names
        ),
        "rows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "devices": mesh.size,
        "steps": config.steps,
        "seconds": time.perf_counter() - started,
    }
    curves = {
        name: (data.test.y[:, j], p_test["with_mask"][:, j])
        for j, name in enumerate(data.label_names)
    }
    curves["micro"] = (data.test.y.ravel(), p_test["with_mask"].ravel())
    model = variants["with_mask"].model
    write_outputs(config.out, metrics=metrics, history=history, curves=curves, model=model)
    if sharding.is_main_process():
        atomic_write(
            config.out / "per_label.png",
            plot_bars({name.replace("_", " "): r["per_label"] for name, r in results.items()}),
        )
        for name, r in results.items():
            print(
                f"{name}: test macro ROC-AUC {r['test_macro_roc_auc']:.4f}"
                f"  macro AP {r['test_macro_average_precision']:.4f}"
                f"  micro F1 {r['test_micro_f1']:.4f}"
            )
        print(f"outputs in {config.out}")
    return metrics


if __name__ == "__main__":
    main()
