"""Binary classifier: a Flax NNX MLP trained with Optax and ``jaxbce``'s binary cross-entropy.

By default it learns to tell malignant from benign tumours in the Wisconsin breast-cancer data
that scikit-learn ships (569 rows, 30 features; no download). ``--data`` trains on your own CSV
or ``.npz`` instead (format: ``examples/README.md``).

The data are split 60/20/20 into train, validation and test, stratified by label; features are
standardised with train statistics only. Positives are up-weighted by the train
negative/positive ratio (``pos_weight``, as in PyTorch's ``BCEWithLogitsLoss``) unless
``--no-pos-weight``. The decision threshold is the one with the best F1 on validation; the test
set reports ROC-AUC, average precision, and accuracy and F1 at that threshold.

The batch is split over every device JAX sees (parameters replicated); checkpoints let a
killed run resume exactly. Run::

    python examples/binary_classifier.py --out runs/binary
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from common import input_pipeline, sharding
from common.cli import add_common_flags, config_from_flags, prepare_run
from common.config import TrainConfig
from common.input_pipeline import Dataset
from common.metrics import best_threshold, binary_metrics
from common.models import MLP
from common.outputs import write_outputs
from common.sharding import Batch
from common.train import fit, make_transform
from flax import nnx

import jaxbce

DEFAULTS = TrainConfig(
    steps=300,
    batch_size=64,
    lr=3e-3,
    weight_decay=0.5,
    hidden=32,
    out=Path("runs/binary_classifier"),
)
"""The settings of a run without flags."""


def load_data(path: Path | None, seed: int) -> Dataset:
    """Loads the breast-cancer data (or ``path``) and splits it.

    Args:
      path: A CSV or ``.npz`` with exactly one 0/1 label column, or None for the
        scikit-learn breast-cancer data with "malignant" as the positive class.
      seed: Seed of the stratified split.

    Returns:
      The standardised splits; ``y`` has shape ``[n]``.

    Raises:
      input_pipeline.DataError: The file is unusable; the message says where and why.
    """
    if path is None:
        from sklearn.datasets import load_breast_cancer

        raw = load_breast_cancer()
        # scikit-learn codes benign as 1; the class a screening test looks for is malignant.
        x, y = raw.data, (raw.target == 0).astype(np.float32)[:, None]
        features, labels = list(raw.feature_names), ["malignant"]
    else:
        x, y, features, labels = input_pipeline.read_table(path)
        if y.shape[1] != 1:
            raise input_pipeline.DataError(
                f"{path}: {y.shape[1]} label columns ({', '.join(labels)}); the binary "
                "example needs exactly one (use multilabel_classifier.py for several)"
            )
    y = y[:, 0]
    train, val, test = input_pipeline.split_and_standardise(x, y, strata=y, seed=seed)
    return Dataset(train, val, test, features, labels)


def loss_fn(model: MLP, batch: Batch, pos_weight: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Mean binary cross-entropy over the rows whose ``mask`` is set.

    Args:
      model: Maps ``[batch, features]`` to logits ``[batch, 1]``.
      batch: ``x`` ``[batch, features]``, ``y`` ``[batch]``, ``mask`` ``[batch]`` (False on
        padding rows).
      pos_weight: Scalar weight of the positive term, or None.

    Returns:
      ``(loss, logits)`` with logits of shape ``[batch]``.
    """
    logits = model(batch["x"])[:, 0]
    loss = jaxbce.sigmoid_binary_cross_entropy(
        logits, batch["y"], pos_weight=pos_weight, where=batch["mask"], reduction="mean"
    )
    return loss, logits


@nnx.jit
def train_step(
    model: MLP, optimizer: nnx.Optimizer, batch: Batch, pos_weight: jax.Array | None
) -> jax.Array:
    """One AdamW update on a (sharded) batch; returns the batch loss."""
    (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, pos_weight)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def eval_step(
    model: MLP, batch: Batch, pos_weight: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """Loss and logits on a (sharded, padded) batch, without updating anything."""
    return loss_fn(model, batch, pos_weight)


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser, DEFAULTS)
    return parser


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
    args = build_parser().parse_args(argv)
    config, mesh, data = prepare_run(config_from_flags(args, DEFAULTS), load_data)

    model = MLP(data.train.x.shape[1], config.hidden, 1, rngs=nnx.Rngs(config.seed))
    optimizer = nnx.Optimizer(model, make_transform(config), wrt=nnx.Param)
    sharding.replicate(mesh, model, optimizer)
    weight = input_pipeline.positive_weight(data.train)
    pos_weight = sharding.put_replicated(mesh, weight) if config.pos_weight else None
    val, test = sharding.padded_batch(mesh, data.val), sharding.padded_batch(mesh, data.test)

    def evaluate() -> dict[str, float]:
        loss, probability = sharding.loss_and_probabilities(
            eval_step(model, val, pos_weight), len(data.val)
        )
        return {
            "val_loss": loss,
            "val_roc_auc": binary_metrics(data.val.y, probability, 0.5)["roc_auc"],
        }

    history = fit(
        config,
        train_rows=len(data.train),
        nodes={"model": model, "optimizer": optimizer},
        train_step=lambda rows: {
            "train_loss": train_step(
                model, optimizer, sharding.batch_of(mesh, data.train, rows), pos_weight
            )
        },
        evaluate=evaluate,
        after_step=after_step,
    )

    _, p_val = sharding.loss_and_probabilities(eval_step(model, val, pos_weight), len(data.val))
    test_loss, p_test = sharding.loss_and_probabilities(
        eval_step(model, test, pos_weight), len(data.test)
    )
    threshold = best_threshold(data.val.y, p_val)
    metrics: dict[str, Any] = {
        **{f"test_{k}": v for k, v in binary_metrics(data.test.y, p_test, threshold).items()},
        "test_loss": test_loss,
        "val_roc_auc": binary_metrics(data.val.y, p_val, threshold)["roc_auc"],
        "pos_weight": float(weight) if config.pos_weight else None,
        "label": data.label_names[0],
        "rows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "devices": mesh.size,
        "steps": config.steps,
        "seconds": time.perf_counter() - started,
    }
    curves = {data.label_names[0]: (data.test.y, p_test)}
    write_outputs(config.out, metrics=metrics, history=history, curves=curves, model=model)
    if sharding.is_main_process():
        print(
            f"test ROC-AUC {metrics['test_roc_auc']:.4f}"
            f"  AP {metrics['test_average_precision']:.4f}"
            f"  accuracy {metrics['test_accuracy']:.4f}  F1 {metrics['test_f1']:.4f}"
            f"  (threshold {threshold:.3f} from validation)  -> {config.out}"
        )
    return metrics


if __name__ == "__main__":
    main()
