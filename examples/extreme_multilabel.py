"""Extreme multi-label classification with a fused output layer and loss.

A Flax NNX model encodes each example into a ``hidden``-dimensional vector and scores every
one of ``--labels`` labels with one large linear layer. Training with
``linear_sigmoid_binary_cross_entropy`` never builds the (batch x labels) logit matrix: the
output layer and the loss are evaluated a chunk of labels at a time, and the labels stay in
their sparse form (the indices of each example's few positives). For comparison the script
trains the same model, from the same initialisation on the same batches, with the unfused
loss ``sigmoid_binary_cross_entropy(features @ kernel + bias, dense_labels)``, and reports:

* precision@1 and precision@5 on held-out data for both, next to the popularity baseline
  (always predict the most frequent labels);
* the loss of the first batch from each, against the same loss evaluated in float64
  (``first_loss_relative_error``): a check that the fused loss computes the same function;
* the memory of one compiled training step (``compiled.memory_analysis()``, exact and
  deterministic, also on CPU) for both, at the run's size and at a production size
  (``--scale-batch`` x ``--scale-labels``, compiled from abstract shapes and never run,
  where the unfused step's temporaries are the 16 GiB of float32 logits and more);
* the time per step of each.

The data (:func:`make_extreme_data`) is synthetic and documented below: power-law label
frequencies and a few positives per example, as in the Extreme Classification Repository's
datasets. Run::

    python examples/extreme_multilabel.py --out runs/extreme
    python examples/extreme_multilabel.py --labels 65536 --steps 400 --out runs/extreme_64k

and read ``runs/extreme/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxbce
from jaxbce._linear import linear_sigmoid_binary_cross_entropy

# ------------------------------------------------------------------------------------- data


class Dataset(NamedTuple):
    """Examples with sparse multi-label targets."""

    x: np.ndarray  # (n, n_features) float32 inputs
    positives: np.ndarray  # (n, max_positives) int32 label indices, padded with -1
    frequency: np.ndarray  # (n_labels,) float64: each label's sampling probability


def make_extreme_data(
    n: int,
    *,
    n_features: int,
    n_labels: int,
    max_positives: int,
    mean_positives: float,
    zipf_exponent: float,
    noise: float,
    seed: int,
    split: int,
) -> Dataset:
    """Synthetic extreme-classification data with power-law label frequencies.

    The generator, step by step:

    1. Label popularity follows Zipf's law: the label of rank r (1-based) is drawn with
       probability proportional to :math:`r^{-s}` (``zipf_exponent`` s, about 1 in real
       tagging data), and ranks are assigned to label ids by a random permutation, so
       frequent labels are spread over the whole output layer rather than packed at its
       start.
    2. Each example has :math:`k = \\min(1 + \\mathrm{Poisson}(\\bar k - 1), k_{max})`
       positive labels (``mean_positives`` :math:`\\bar k`, ``max_positives``
       :math:`k_{max}`), drawn from that distribution without repetition.
    3. Each label j has a fixed random prototype :math:`\\mu_j \\sim N(0, I/d)` in
       :math:`R^d` (``n_features`` d). An example's input is the sum of its positives'
       prototypes, scaled by :math:`1/\\sqrt{k}`, plus :math:`N(0, \\sigma^2 I/d)` noise
       (``noise`` :math:`\\sigma`): the labels are recoverable from the input, and more
       easily for the labels that are seen often.

    The positives are stored as extreme-classification data is: (n, ``max_positives``)
    indices padded with -1.

    Args:
      n: number of examples.
      n_features: d, the input dimension.
      n_labels: L, the number of labels.
      max_positives: :math:`k_{max}`, the width of the index array.
      mean_positives: :math:`\\bar k \\ge 1`, the mean number of positives (before the cap).
      zipf_exponent: s, the power-law exponent of label frequencies.
      noise: :math:`\\sigma`, the input noise level relative to one prototype's norm.
      seed: seed of the labels' frequencies and prototypes: calls with one seed share them.
      split: seed of the examples themselves (0 for training, 1 for test data, say).

    Returns:
      A :class:`Dataset`.
    """
    rng = np.random.default_rng(seed)
    rank_weight = np.arange(1, n_labels + 1, dtype=np.float64) ** -zipf_exponent
    frequency = np.empty(n_labels)
    frequency[rng.permutation(n_labels)] = rank_weight / rank_weight.sum()
    prototypes = rng.normal(size=(n_labels, n_features)) / math.sqrt(n_features)
    cdf = np.cumsum(frequency)

    data_rng = np.random.default_rng([seed, split])
    counts = np.minimum(1 + data_rng.poisson(mean_positives - 1.0, n), max_positives)
    # Draws with repetition, 4x more than needed; the first k distinct ones are kept.
    draws = np.searchsorted(cdf, data_rng.random((n, 4 * max_positives)) * cdf[-1])
    draws = np.minimum(draws, n_labels - 1)
    positives = np.full((n, max_positives), -1, np.int32)
    for i in range(n):
        _, first = np.unique(draws[i], return_index=True)
        chosen = draws[i][np.sort(first)][: counts[i]]
        positives[i, : chosen.size] = chosen
    valid = positives >= 0
    x = (prototypes[np.where(valid, positives, 0)] * valid[..., None]).sum(axis=1)
    x /= np.sqrt(valid.sum(axis=1, keepdims=True))
    x += noise * data_rng.normal(size=x.shape) / math.sqrt(n_features)
    return Dataset(x.astype(np.float32), positives, frequency)


# ------------------------------------------------------------------------------------ model


class ExtremeClassifier(nnx.Module):
    """An MLP encoder and one large output layer, kept as a bare kernel and bias.

    The output layer is not an ``nnx.Linear`` because the fused loss takes its kernel and
    bias directly: ``__call__`` (evaluation) forms logits, training never does.
    """

    def __init__(self, n_features: int, hidden: int, n_labels: int, prior: float, rngs: nnx.Rngs):
        self.encoder = nnx.Linear(n_features, hidden, rngs=rngs)
        self.project = nnx.Linear(hidden, hidden, rngs=rngs)
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (hidden, n_labels)))
        # Every label starts at its prior log-odds: rare positives, so a large negative bias.
        self.bias = nnx.Param(jnp.full((n_labels,), math.log(prior / (1 - prior))))

    def embed(self, x: jax.Array) -> jax.Array:
        """The (batch, hidden) features that the output layer scores."""
        return self.project(nnx.gelu(self.encoder(x)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """The (batch, labels) logits: for evaluating small batches only."""
        return self.embed(x) @ self.kernel[...] + self.bias[...]


def dense_labels(positives: jax.Array, n_labels: int) -> jax.Array:
    """The (batch, labels) bool matrix of the unfused loss, from the padded indices."""
    rows = jnp.arange(positives.shape[0])[:, None]
    cols = jnp.where(positives >= 0, positives, n_labels)  # padding: out of range, dropped
    dense = jnp.zeros((positives.shape[0], n_labels), jnp.bool_)
    return dense.at[rows, cols].set(True, mode="drop")


def fused_loss(model: ExtremeClassifier, x: jax.Array, positives: jax.Array) -> jax.Array:
    """Sum over labels of the BCE, averaged over the batch; no (batch, labels) array."""
    h = model.embed(x)
    total = linear_sigmoid_binary_cross_entropy(
        h, model.kernel[...], positives, bias=model.bias[...], reduction="sum"
    )
    return total / x.shape[0]


def unfused_loss(model: ExtremeClassifier, x: jax.Array, positives: jax.Array) -> jax.Array:
    """The same loss the ordinary way: the full logits and a dense label matrix."""
    logits = model(x)
    labels = dense_labels(positives, logits.shape[1])
    total = jaxbce.sigmoid_binary_cross_entropy(logits, labels, reduction="sum")
    return total / x.shape[0]


# --------------------------------------------------------------------------------- training


LossFn = Callable[[ExtremeClassifier, jax.Array, jax.Array], jax.Array]


def make_train_step(graphdef: Any, loss_fn: LossFn) -> Callable[..., tuple[Any, jax.Array]]:
    """One jitted step on the split ``(model, optimizer)`` state: loss, gradients, update.

    The pure ``jax.jit`` form (``nnx.split``/``nnx.merge``) is what lets us ``lower`` the
    step on abstract shapes and read its ``memory_analysis()``.
    """

    @partial(jax.jit, donate_argnums=0)
    def train_step(state: Any, x: jax.Array, positives: jax.Array) -> tuple[Any, jax.Array]:
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, positives)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    return train_step


def build(args: argparse.Namespace, n_labels: int, abstract: bool = False) -> tuple[Any, Any]:
    """The split ``(model, optimizer)``: graph definition and state (abstract if asked)."""

    def make() -> tuple[ExtremeClassifier, nnx.Optimizer]:
        prior = args.mean_positives / n_labels
        model = ExtremeClassifier(
            args.features, args.hidden, n_labels, prior, rngs=nnx.Rngs(args.seed)
        )
        return model, nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)

    pair = nnx.eval_shape(make) if abstract else make()
    return nnx.split(pair)


def precision_at(
    model_state: tuple[Any, Any], data: Dataset, ks: Sequence[int], batch: int = 256
) -> dict[str, float]:
    """precision@k: the fraction of the k top-scored labels that are positives, averaged."""
    graphdef, state = model_state
    model, _ = nnx.merge(graphdef, state)
    top = jax.jit(lambda x: jax.lax.top_k(model(x), max(ks))[1])
    hits = {k: 0.0 for k in ks}
    for start in range(0, data.x.shape[0], batch):
        pred = np.asarray(top(data.x[start : start + batch]))
        pos = data.positives[start : start + batch]
        is_hit = (pred[:, :, None] == pos[:, None, :]).any(axis=2)  # (rows, max k)
        for k in ks:
            hits[k] += float(is_hit[:, :k].sum()) / k
    return {f"p@{k}": hits[k] / data.x.shape[0] for k in ks}


def popularity_baseline(train: Dataset, test: Dataset, ks: Sequence[int]) -> dict[str, float]:
    """precision@k of always predicting the labels most frequent in the training data."""
    counts = np.bincount(train.positives[train.positives >= 0], minlength=train.frequency.size)
    top = np.argsort(-counts, kind="stable")[: max(ks)]
    is_hit = (top[None, :, None] == test.positives[:, None, :]).any(axis=2)
    return {f"p@{k}": float(is_hit[:, :k].sum(axis=1).mean()) / k for k in ks}


def compile_step(
    train_step: Any, state: Any, batch: int, args: argparse.Namespace
) -> tuple[Any, dict[str, int]]:
    """Compiles one training step for these shapes; returns it and its memory in bytes.

    ``memory_analysis()`` is XLA's own account of the compiled step (exact and deterministic,
    on CPU too): its arguments, outputs and temporaries.
    """
    shapes = (
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state),
        jax.ShapeDtypeStruct((batch, args.features), jnp.float32),
        jax.ShapeDtypeStruct((batch, args.max_positives), jnp.int32),
    )
    compiled = train_step.lower(*shapes).compile()
    m = compiled.memory_analysis()
    peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return compiled, {
        "temp_bytes": int(m.temp_size_in_bytes),
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        # Arguments, outputs and temporaries, less outputs that reuse an argument's buffer.
        "peak_bytes": int(peak - m.alias_size_in_bytes),
    }


def float64_loss(graphdef: Any, state: Any, x: np.ndarray, positives: np.ndarray) -> float:
    """The training loss of one batch in float64 NumPy: the yardstick for both losses.

    The features come from the float32 model; the output layer and the loss are float64.
    """
    model, _ = nnx.merge(graphdef, state)
    h = np.asarray(model.embed(jnp.asarray(x)), np.float64)
    z = h @ np.asarray(model.kernel[...], np.float64) + np.asarray(model.bias[...], np.float64)
    y = np.asarray(dense_labels(jnp.asarray(positives), z.shape[1]), np.float64)
    return float(np.sum(np.logaddexp(0.0, z) - y * z) / x.shape[0])


def train_and_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Trains the fused and the unfused model on the same batches and measures both."""

    def make(n: int, split: int) -> Dataset:
        return make_extreme_data(
            n, n_features=args.features, n_labels=args.labels, max_positives=args.max_positives,
            mean_positives=args.mean_positives, zipf_exponent=args.zipf, noise=args.noise,
            seed=args.seed, split=split,
        )  # fmt: skip

    train, test = make(args.train_examples, 0), make(args.test_examples, 1)
    ks = (1, 5)
    results: dict[str, Any] = {}
    losses: dict[str, list[float]] = {}
    batch_rng = np.random.default_rng(args.seed + 1)
    order = [batch_rng.integers(0, args.train_examples, args.batch_size) for _ in range(args.steps)]
    variants = {"fused": fused_loss} if args.no_baseline else {
        "fused": fused_loss, "unfused": unfused_loss,
    }  # fmt: skip
    for name, loss_fn in variants.items():
        graphdef, state = build(args, args.labels)
        if "first_loss_float64" not in results:
            first = order[0]
            results["first_loss_float64"] = float64_loss(
                graphdef, state, train.x[first], train.positives[first]
            )
        step, memory = compile_step(
            make_train_step(graphdef, loss_fn), state, args.batch_size, args
        )
        losses[name] = []
        start = time.perf_counter()
        for rows in order:
            state, loss = step(state, train.x[rows], train.positives[rows])
            losses[name].append(loss)
        jax.block_until_ready(state)
        seconds = time.perf_counter() - start
        losses[name] = [float(v) for v in losses[name]]
        results[name] = {
            **precision_at((graphdef, state), test, ks),
            "first_loss": losses[name][0],
            "first_loss_relative_error": abs(losses[name][0] / results["first_loss_float64"] - 1),
            "final_loss": float(np.mean(losses[name][-10:])),
            "seconds_per_step": seconds / args.steps,
            "step_memory": memory,
        }
        print(
            f"{name:8s} p@1 {results[name]['p@1']:.3f}  p@5 {results[name]['p@5']:.3f}  "
            f"loss {losses[name][0]:.2f} -> {results[name]['final_loss']:.2f}  "
            f"{1e3 * seconds / args.steps:.1f} ms/step  "
            f"step temporaries {memory['temp_bytes'] / 2**20:.1f} MiB"
        )
    results["popularity_baseline"] = popularity_baseline(train, test, ks)
    if "unfused" in losses:
        a, b = np.array(losses["fused"]), np.array(losses["unfused"])
        results["max_relative_loss_difference"] = float(np.max(np.abs(a - b) / np.abs(b)))
        results["temp_bytes_ratio_fused_over_unfused"] = (
            results["fused"]["step_memory"]["temp_bytes"]
            / results["unfused"]["step_memory"]["temp_bytes"]
        )
    if args.scale_labels:
        scale: dict[str, Any] = {"batch": args.scale_batch, "labels": args.scale_labels}
        for name, loss_fn in variants.items():
            graphdef, state = build(args, args.scale_labels, abstract=True)
            step = make_train_step(graphdef, loss_fn)
            scale[name] = compile_step(step, state, args.scale_batch, args)[1]
        results["step_memory_at_scale"] = scale
        for name in variants:
            print(
                f"at batch {args.scale_batch}, {args.scale_labels} labels: {name} step "
                f"temporaries {scale[name]['temp_bytes'] / 2**30:.2f} GiB, "
                f"peak {scale[name]['peak_bytes'] / 2**30:.2f} GiB"
            )
    results["loss_curves"] = losses
    return results


# ------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for metrics.json")
    p.add_argument("--steps", type=int, default=150, help="training steps")
    p.add_argument("--seed", type=int, default=0, help="seed of data, init and batches")
    p.add_argument("--labels", type=int, default=2**14, help="L, the number of labels")
    p.add_argument("--features", type=int, default=64, help="input dimension")
    p.add_argument("--hidden", type=int, default=128, help="width of the encoder")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--train-examples", type=int, default=8192)
    p.add_argument("--test-examples", type=int, default=1024)
    p.add_argument("--max-positives", type=int, default=8, help="K, width of the indices")
    p.add_argument("--mean-positives", type=float, default=3.0, help="mean positives/example")
    p.add_argument("--zipf", type=float, default=1.0, help="power-law exponent of labels")
    p.add_argument("--noise", type=float, default=0.3, help="input noise level")
    p.add_argument("--no-baseline", action="store_true", help="skip the unfused model")
    p.add_argument(
        "--scale-batch", type=int, default=4096, help="batch of the compile-only memory check"
    )
    p.add_argument(
        "--scale-labels", type=int, default=2**20,
        help="labels of the compile-only memory check (0 skips it)",
    )  # fmt: skip
    args = p.parse_args(argv)
    for name in ("steps", "labels", "features", "hidden", "batch_size", "train_examples",
                 "test_examples", "max_positives"):  # fmt: skip
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.mean_positives < 1:
        p.error("--mean-positives must be at least 1")
    if args.labels < 5:
        p.error("--labels must be at least 5 (precision@5)")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses the flags, trains, evaluates and writes ``OUT/metrics.json``.

    Args:
      argv: command-line arguments (``sys.argv[1:]`` when None).

    Returns:
      The metrics written.
    """
    args = parse_args(argv)
    metrics = train_and_evaluate(args)
    metrics["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {args.out / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
