"""Contrastive pairs: a two-tower Flax NNX model trained with SigLIP's pairwise sigmoid loss.

Each of scikit-learn's 8x8 handwritten digits (1797 images; no download) is cut into two
"modalities", its left half and its right half (8 x 4 pixels each), as an image and its
caption are two views of one thing. One tower embeds left halves, the other right halves,
and ``jaxbce.pairwise_sigmoid_loss`` (Zhai et al., "Sigmoid Loss for Language Image
Pre-Training", ICCV 2023) trains them: every (left i, right j) pair of a batch is a binary
problem of its own with the logit ``exp(t) <u_i, v_j> + b``, positive when the two halves
come from the same image (``--pair-ids none``) or, with ``--pair-ids class``, from images of
the same digit. The temperature ``t`` and the bias ``b`` are learned, from ``t = log 10``
and ``b = -10`` as in the paper.

The batch is split over every device JAX sees. The towers run data-parallel (parameters
replicated) and the loss runs inside ``jax.shard_map``: each device scores its own left
halves against every right half of the global batch, the right halves travelling round a
ring of devices (``axis_name``), so that no device gathers the batch.

The data are split 60/20/20 into train, validation and test, stratified by digit; pixels
are standardised with train statistics. The test set reports retrieval recall@1, @5 and @10
(left half as query, the 360 test right halves as candidates: is the query's own right half
among the k most similar?) and the nearest-neighbour class accuracy (is the most similar
right half one of the same digit?). Checkpoints let a killed run resume exactly. Run::

    python examples/contrastive_pairs.py --out runs/contrastive
    python examples/contrastive_pairs.py --pair-ids class --out runs/contrastive_class
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from common import input_pipeline, sharding
from common.cli import add_common_flags, config_from_flags, fail, prepare_run
from common.config import TrainConfig
from common.input_pipeline import Dataset, Split
from common.models import MLP
from common.outputs import atomic_write, save_params, write_json
from common.plots import plot_history, plot_retrieval, plot_series
from common.sharding import Batch
from common.train import fit, make_transform
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import jaxbce

SIDE = 8
"""The digits are SIDE x SIDE pixels; each half is SIDE x SIDE // 2."""
LEFT = np.array([p for p in range(SIDE * SIDE) if p % SIDE < SIDE // 2])
"""Pixel indices (row-major) of the left half."""
RIGHT = np.array([p for p in range(SIDE * SIDE) if p % SIDE >= SIDE // 2])
"""Pixel indices of the right half."""
RECALL_AT = (1, 5, 10)
"""The k of the reported recall@k."""


@dataclasses.dataclass(frozen=True)
class ContrastiveConfig(TrainConfig):
    """A run's settings: the shared ones, and the embedding and the labels of the pairs.

    Attributes:
      pair_ids: ``"none"``: a left half's only positive is its own right half; ``"class"``:
        every right half of the same digit is a positive.
      embed_dim: Width of the (normalised) embeddings both towers output.
      init_log_scale: Initial ``t``; the logits' scale is ``exp(t)``.
      init_bias: Initial bias ``b`` of the logits.
    """

    pair_ids: str = "none"
    embed_dim: int = 32
    init_log_scale: float = math.log(10.0)
    init_bias: float = -10.0


DEFAULTS = ContrastiveConfig(
    steps=400,
    batch_size=256,
    lr=1e-3,
    weight_decay=2.0,  # decoupled, on the weight matrices only; 1077 pairs overfit fast
    hidden=128,
    out=Path("runs/contrastive_pairs"),
    pos_weight=False,
    eval_every=20,
    checkpoint_every=100,
)
"""The settings of a run without flags."""


@dataclasses.dataclass(frozen=True)
class PairsDataset(Dataset):
    """The splits (``x`` all 64 standardised pixels, ``y`` the digit) and the raw test images.

    Attributes:
      test_images: ``[n_test, 8, 8]`` the test digits as drawn (0 to 16), for the figure.
    """

    test_images: np.ndarray


def load_data(path: Path | None, seed: int) -> PairsDataset:
    """Loads scikit-learn's digits and splits them, stratified by digit.

    Args:
      path: Must be None: the example trains on the bundled digits only.
      seed: Seed of the split.

    Returns:
      The splits, ``x`` ``float32[n, 64]`` standardised pixels (both halves; the towers take
      their half), ``y`` ``float32[n]`` the digit.
    """
    from sklearn.datasets import load_digits

    assert path is None, "contrastive_pairs.py has no --data"
    raw = load_digits()
    # The row of each image travels through the split as its label, so the digit and the
    # raw image of every row of every split can be looked up afterwards.
    row = np.arange(len(raw.target), dtype=np.float32)
    splits = input_pipeline.split_and_standardise(raw.data, row, strata=raw.target, seed=seed)
    train, val, test = (
        Split(x=s.x, y=raw.target[s.y.astype(int)].astype(np.float32), mask=s.mask) for s in splits
    )
    return PairsDataset(
        train,
        val,
        test,
        list(raw.feature_names),
        ["digit"],
        test_images=raw.images[splits[2].y.astype(int)],
    )


class TwoTower(nnx.Module):
    """Two MLP towers (left halves, right halves) and the loss's learned scale and bias."""

    def __init__(self, config: ContrastiveConfig, *, rngs: nnx.Rngs) -> None:
        """Builds the towers and the two scalars ``log_scale`` (``t``) and ``bias`` (``b``)."""
        self.left = MLP(len(LEFT), config.hidden, config.embed_dim, rngs=rngs)
        self.right = MLP(len(RIGHT), config.hidden, config.embed_dim, rngs=rngs)
        self.log_scale = nnx.Param(jnp.asarray(config.init_log_scale, jnp.float32))
        self.bias = nnx.Param(jnp.asarray(config.init_bias, jnp.float32))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Maps ``float32[batch, 64]`` pixels to unit-norm embeddings of the two halves."""

        def unit(e: jax.Array) -> jax.Array:
            return e / jnp.linalg.norm(e, axis=-1, keepdims=True)

        return unit(self.left(x[:, LEFT])), unit(self.right(x[:, RIGHT]))


def decay_kernels_only(params: Any) -> Any:
    """AdamW's decay mask: the weight matrices only, not biases, ``t`` or ``b`` (as big_vision)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_loss(mesh: Mesh, by_class: bool) -> Callable[[TwoTower, Batch], jax.Array]:
    """The loss of a batch sharded over ``mesh``: the pairwise loss inside ``shard_map``.

    Args:
      mesh: The devices, one axis ``"data"`` over which the batch is split.
      by_class: Pairs of the same digit are positives (``pair_ids`` = digit), not only the
        two halves of one image.

    Returns:
      ``loss(model, batch)``: big_vision's normalisation, the mean over the included left
      halves of the sum over every right half of the global batch.
    """

    def per_device(u, v, scale, bias, digit, mask):
        # u, v, digit, mask: this device's rows; the result: the loss of the global batch.
        return jaxbce.pairwise_sigmoid_loss(
            u,
            v,
            scale=scale,
            bias=bias,
            pair_ids=digit if by_class else None,  # None: the halves of one image only
            where=mask,
            axis_name="data",
        )

    rows = P("data")
    global_loss = jax.shard_map(
        per_device, mesh=mesh, in_specs=(rows, rows, P(), P(), rows, rows), out_specs=P()
    )

    def loss(model: TwoTower, batch: Batch) -> jax.Array:
        u, v = model(batch["x"])
        scale = jnp.exp(model.log_scale[...])
        digit = batch["y"].astype(jnp.int32)
        return global_loss(u, v, scale, model.bias[...], digit, batch["mask"])

    return loss


@functools.cache
def make_steps(mesh: Mesh, by_class: bool) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The jitted ``train_step(model, optimizer, batch)`` and ``eval_step(model, batch)``.

    ``train_step`` makes one AdamW update and returns the batch loss; ``eval_step`` returns
    the loss and the two halves' embeddings, ``[batch, embed_dim]`` each, sharded like the
    batch. Made once per mesh and label kind (``functools.cache``), so that runs in one
    process (a notebook, the tests) share their compiled programs, as the other examples'
    module-level steps do.
    """
    loss_fn = make_loss(mesh, by_class)

    @nnx.jit
    def train_step(model: TwoTower, optimizer: nnx.Optimizer, batch: Batch) -> jax.Array:
        loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def eval_step(model: TwoTower, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
        u, v = model(batch["x"])
        return loss_fn(model, batch), u, v

    return train_step, eval_step


def similarity(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``[n_u, n_v]`` inner products of the (unit-norm) embeddings, in float64 on the host."""
    return u.astype(np.float64) @ v.T.astype(np.float64)


def retrieval_metrics(u: np.ndarray, v: np.ndarray, digit: np.ndarray) -> dict[str, float]:
    """recall@k for every k of ``RECALL_AT``, and the nearest neighbour's class accuracy.

    Args:
      u: ``[n, dim]`` left-half embeddings (queries).
      v: ``[n, dim]`` right-half embeddings (candidates); ``v[i]`` is ``u[i]``'s partner.
      digit: ``[n]`` the digit of each pair.

    Returns:
      ``recall_at_<k>``: the share of queries whose own right half is among the k most
      similar (a tie with the partner counts for the partner); ``class_accuracy``: the share
      whose most similar right half shows the same digit.
    """
    s = similarity(u, v)
    rank = np.sum(s > np.diag(s)[:, None], axis=1)  # 0: the partner comes first
    metrics = {f"recall_at_{k}": float(np.mean(rank < k)) for k in RECALL_AT}
    metrics["class_accuracy"] = float(np.mean(digit[np.argmax(s, axis=1)] == digit))
    return metrics


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser, DEFAULTS, without=("data", "pos_weight"))
    parser.add_argument(
        "--pair-ids",
        choices=("none", "class"),
        default=DEFAULTS.pair_ids,
        help="positives: the two halves of one image (none), or of any image of the same "
        "digit (class)",
    )
    parser.add_argument(
        "--embed-dim", type=int, default=DEFAULTS.embed_dim, help="width of the embeddings"
    )
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
    if args.embed_dim < 1:
        fail(f"--embed-dim must be at least 1, got {args.embed_dim}")
    config, mesh, data = prepare_run(config_from_flags(args, DEFAULTS), load_data)

    model = TwoTower(config, rngs=nnx.Rngs(config.seed))
    tx = make_transform(config, decay_mask=decay_kernels_only)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    sharding.replicate(mesh, model, optimizer)
    train_step, eval_step = make_steps(mesh, config.pair_ids == "class")
    val, test = sharding.padded_batch(mesh, data.val), sharding.padded_batch(mesh, data.test)

    def embed(batch: Batch, split: Split) -> tuple[float, np.ndarray, np.ndarray]:
        loss, u, v = eval_step(model, batch)
        return float(loss), sharding.gather_rows(u, len(split)), sharding.gather_rows(v, len(split))

    def evaluate() -> dict[str, float]:
        loss, u, v = embed(val, data.val)
        return {
            "val_loss": loss,
            "val_recall_at_1": retrieval_metrics(u, v, data.val.y)["recall_at_1"],
            "temperature": float(jnp.exp(model.log_scale[...])),
            "bias": float(model.bias[...]),
        }

    history = fit(
        config,
        train_rows=len(data.train),
        nodes={"model": model, "optimizer": optimizer},
        train_step=lambda rows: {
            "train_loss": train_step(model, optimizer, sharding.batch_of(mesh, data.train, rows))
        },
        evaluate=evaluate,
        after_step=after_step,
    )

    test_loss, u, v = embed(test, data.test)
    metrics: dict[str, Any] = {
        **{f"test_{k}": value for k, value in retrieval_metrics(u, v, data.test.y).items()},
        "test_loss": test_loss,
        "temperature": float(jnp.exp(model.log_scale[...])),
        "bias": float(model.bias[...]),
        "pair_ids": config.pair_ids,
        "rows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "devices": mesh.size,
        "steps": config.steps,
        "seconds": time.perf_counter() - started,
    }
    if sharding.is_main_process():
        write_outputs(config.out, metrics, history, model, data, u, v)
        print(
            f"test recall@1 {metrics['test_recall_at_1']:.3f}"
            f"  @5 {metrics['test_recall_at_5']:.3f}  @10 {metrics['test_recall_at_10']:.3f}"
            f"  class accuracy {metrics['test_class_accuracy']:.3f}"
            f"  (temperature {metrics['temperature']:.2f}, bias {metrics['bias']:.2f})"
            f"  -> {config.out}"
        )
    return metrics


def write_outputs(
    out: Path,
    metrics: dict[str, Any],
    history: list[dict[str, float]],
    model: TwoTower,
    data: PairsDataset,
    u: np.ndarray,
    v: np.ndarray,
    *,
    queries: int = 10,
    k: int = 8,
) -> None:
    """Writes ``metrics.json``, ``loss.png``, ``temperature_bias.png``, ``retrieval.png`` and
    ``params.npz`` into ``out``, each atomically.

    The retrieval figure shows the first test image of each digit (up to ``queries``): its
    left half, then the right halves of its ``k`` nearest neighbours.
    """
    write_json(out / "metrics.json", metrics)
    atomic_write(out / "loss.png", plot_history(history))
    atomic_write(out / "temperature_bias.png", plot_series(history, ["temperature", "bias"]))
    rows = np.array([np.flatnonzero(data.test.y == d)[0] for d in np.unique(data.test.y)])
    rows = rows[:queries]
    top = np.argsort(-similarity(u[rows], v), axis=1, kind="stable")[:, :k]
    half = SIDE // 2
    figure = plot_retrieval(
        data.test_images[rows, :, :half],
        data.test_images[:, :, half:],
        top,
        rows,
        titles=("left half", "right halves"),
        row_labels=[f"digit {data.test.y[r]:.0f}" for r in rows],
    )
    atomic_write(out / "retrieval.png", figure)
    save_params(out / "params.npz", model)


if __name__ == "__main__":
    main()
