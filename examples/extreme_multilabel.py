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

# No ``from __future__ import annotations`` here: a dataclass with string annotations looks its
# module up in sys.modules, where a file loaded by its path (tests/test_linear.py loads this
# one with importlib) is not.
import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxbce

# The examples' shared package sits beside this file. A script run as ``python examples/...``
# finds it anyway; a file loaded by its path, as tests/test_linear.py loads this one, does not.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common.checkpoints import check_out_dir
from common.cli import finite_float
from common.config import ConfigError, as_json, check_at_least_one
from common.input_pipeline import Split
from common.outputs import write_json


@dataclasses.dataclass(frozen=True)
class ExtremeConfig:
    """What a run of this script does (the flags, one field each; see ``--help``)."""

    out: Path
    steps: int = 150
    seed: int = 0
    labels: int = 2**14
    features: int = 64
    hidden: int = 128
    batch_size: int = 256
    lr: float = 3e-3
    train_examples: int = 8192
    test_examples: int = 1024
    max_positives: int = 8
    mean_positives: float = 3.0
    zipf: float = 1.0
    noise: float = 0.3
    no_baseline: bool = False
    scale_batch: int = 4096
    scale_labels: int = 2**20


# ------------------------------------------------------------------------------------- data


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
) -> Split:
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
    indices padded with -1, the sparse labels of a :class:`~common.input_pipeline.Split`.

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
      A split with ``x`` float32 (n, ``n_features``), ``y`` the int32 positive indices and
      ``mask`` where ``y`` is a label rather than padding.
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
    return Split(x=x.astype(np.float32), y=positives, mask=valid)


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
    total = jaxbce.linear_sigmoid_binary_cross_entropy(
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


def build(config: ExtremeConfig, n_labels: int, abstract: bool = False) -> tuple[Any, Any]:
    """The split ``(model, optimizer)``: graph definition and state (abstract if asked)."""

    def make() -> tuple[ExtremeClassifier, nnx.Optimizer]:
        prior = config.mean_positives / n_labels
        model = ExtremeClassifier(
            config.features, config.hidden, n_labels, prior, rngs=nnx.Rngs(config.seed)
        )
        return model, nnx.Optimizer(model, optax.adam(config.lr), wrt=nnx.Param)

    pair = nnx.eval_shape(make) if abstract else make()
    return nnx.split(pair)


def precision_at(
    model_state: tuple[Any, Any], data: Split, ks: Sequence[int], batch: int = 256
) -> dict[str, float]:
    """precision@k: the fraction of the k top-scored labels that are positives, averaged."""
    graphdef, state = model_state
    model, _ = nnx.merge(graphdef, state)
    top = jax.jit(lambda x: jax.lax.top_k(model(x), max(ks))[1])
    hits = {k: 0.0 for k in ks}
    for start in range(0, data.x.shape[0], batch):
        pred = np.asarray(top(data.x[start : start + batch]))
        pos = data.y[start : start + batch]
        is_hit = (pred[:, :, None] == pos[:, None, :]).any(axis=2)  # (rows, max k)
        for k in ks:
            hits[k] += float(is_hit[:, :k].sum()) / k
    return {f"p@{k}": hits[k] / data.x.shape[0] for k in ks}


def popularity_baseline(train: Split, test: Split, ks: Sequence[int]) -> dict[str, float]:
    """precision@k of always predicting the labels most frequent in the training data."""
    counts = np.bincount(train.y[train.mask])
    top = np.argsort(-counts, kind="stable")[: max(ks)]
    is_hit = (top[None, :, None] == test.y[:, None, :]).any(axis=2)
    return {f"p@{k}": float(is_hit[:, :k].sum(axis=1).mean()) / k for k in ks}


def compile_step(
    train_step: Any, state: Any, batch: int, config: ExtremeConfig
) -> tuple[Any, dict[str, int]]:
    """Compiles one training step for these shapes; returns it and its memory in bytes.

    ``memory_analysis()`` is XLA's own account of the compiled step (exact and deterministic,
    on CPU too): its arguments, outputs and temporaries.
    """
    shapes = (
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state),
        jax.ShapeDtypeStruct((batch, config.features), jnp.float32),
        jax.ShapeDtypeStruct((batch, config.max_positives), jnp.int32),
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


def train_and_evaluate(config: ExtremeConfig) -> dict[str, Any]:
    """Trains the fused and the unfused model on the same batches and measures both."""

    def make(n: int, split: int) -> Split:
        return make_extreme_data(
            n,
            n_features=config.features,
            n_labels=config.labels,
            max_positives=config.max_positives,
            mean_positives=config.mean_positives,
            zipf_exponent=config.zipf,
            noise=config.noise,
            seed=config.seed,
            split=split,
        )

    train, test = make(config.train_examples, 0), make(config.test_examples, 1)
    ks = (1, 5)
    results: dict[str, Any] = {}
    losses: dict[str, list[float]] = {}
    batch_rng = np.random.default_rng(config.seed + 1)
    order = [
        batch_rng.integers(0, config.train_examples, config.batch_size) for _ in range(config.steps)
    ]
    variants: dict[str, LossFn] = {"fused": fused_loss}
    if not config.no_baseline:
        variants["unfused"] = unfused_loss
    for name, loss_fn in variants.items():
        graphdef, state = build(config, config.labels)
        if "first_loss_float64" not in results:
            first = order[0]
            results["first_loss_float64"] = float64_loss(
                graphdef, state, train.x[first], train.y[first]
            )
        step, memory = compile_step(
            make_train_step(graphdef, loss_fn), state, config.batch_size, config
        )
        losses[name] = []
        start = time.perf_counter()
        for rows in order:
            state, loss = step(state, train.x[rows], train.y[rows])
            losses[name].append(loss)
        jax.block_until_ready(state)
        seconds = time.perf_counter() - start
        losses[name] = [float(v) for v in losses[name]]
        results[name] = {
            **precision_at((graphdef, state), test, ks),
            "first_loss": losses[name][0],
            "first_loss_relative_error": abs(losses[name][0] / results["first_loss_float64"] - 1),
            "final_loss": float(np.mean(losses[name][-10:])),
            "seconds_per_step": seconds / config.steps,
            "step_memory": memory,
        }
        print(
            f"{name:8s} p@1 {results[name]['p@1']:.3f}  p@5 {results[name]['p@5']:.3f}  "
            f"loss {losses[name][0]:.2f} -> {results[name]['final_loss']:.2f}  "
            f"{1e3 * seconds / config.steps:.1f} ms/step  "
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
    if config.scale_labels:
        scale: dict[str, Any] = {"batch": config.scale_batch, "labels": config.scale_labels}
        for name, loss_fn in variants.items():
            graphdef, state = build(config, config.scale_labels, abstract=True)
            step = make_train_step(graphdef, loss_fn)
            scale[name] = compile_step(step, state, config.scale_batch, config)[1]
        results["step_memory_at_scale"] = scale
        for name in variants:
            print(
                f"at batch {config.scale_batch}, {config.scale_labels} labels: {name} step "
                f"temporaries {scale[name]['temp_bytes'] / 2**30:.2f} GiB, "
                f"peak {scale[name]['peak_bytes'] / 2**30:.2f} GiB"
            )
    results["loss_curves"] = losses
    return results


# ------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> ExtremeConfig:
    """The config the command line asks for; a flag that cannot work is a usage error."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # examples/README.md says so
    )
    d = ExtremeConfig(out=Path())  # for the other flags' defaults
    p.add_argument("--out", type=Path, required=True, help="directory for metrics.json")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of data, init and batches")
    p.add_argument("--labels", type=int, default=d.labels, help="L, the number of labels")
    p.add_argument("--features", type=int, default=d.features, help="input dimension")
    p.add_argument("--hidden", type=int, default=d.hidden, help="width of the encoder")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=finite_float, default=d.lr, help="Adam learning rate")
    p.add_argument("--train-examples", type=int, default=d.train_examples)
    p.add_argument("--test-examples", type=int, default=d.test_examples)
    p.add_argument(
        "--max-positives", type=int, default=d.max_positives, help="K, width of the indices"
    )
    p.add_argument(
        "--mean-positives",
        type=finite_float,
        default=d.mean_positives,
        help="mean positives/example",
    )
    p.add_argument("--zipf", type=finite_float, default=d.zipf, help="power-law exponent of labels")
    p.add_argument("--noise", type=finite_float, default=d.noise, help="input noise level")
    p.add_argument("--no-baseline", action="store_true", help="skip the unfused model")
    p.add_argument(
        "--scale-batch",
        type=int,
        default=d.scale_batch,
        help="batch of the compile-only memory check",
    )
    p.add_argument(
        "--scale-labels",
        type=int,
        default=d.scale_labels,
        help="labels of the compile-only memory check (0 skips it)",
    )
    config = ExtremeConfig(**vars(p.parse_args(argv)))
    try:
        positive = "steps labels features hidden batch_size train_examples test_examples"
        check_at_least_one(config, [*positive.split(), "max_positives"])
    except ConfigError as e:
        p.error(str(e))
    if config.mean_positives < 1:
        p.error("--mean-positives must be at least 1")
    if config.labels < 5:
        p.error("--labels must be at least 5 (precision@5)")
    if config.scale_labels < 0 or config.seed < 0:
        p.error("--scale-labels and --seed must be at least 0")
    try:  # an --out written with other settings is refused, as in the other examples
        check_out_dir(config.out, {k: v for k, v in as_json(config).items() if k != "out"})
    except ConfigError as e:
        p.error(str(e))
    return config


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses the flags, trains, evaluates and writes ``OUT/metrics.json``.

    Args:
      argv: command-line arguments (``sys.argv[1:]`` when None).

    Returns:
      The metrics written.
    """
    config = parse_args(argv)
    metrics = train_and_evaluate(config)
    metrics["config"] = as_json(config)
    write_json(config.out / "metrics.json", metrics)
    print(f"wrote {config.out / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
