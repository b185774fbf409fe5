"""The contenders: the JAX losses timed against each other, and the optional PyTorch one.

jaxbce (float32 logits with float32 and bool labels; bfloat16 logits with bool labels;
``where=`` masking; the focal loss), optax's losses, the naive formula autodiffed, and a
single fused elementwise pass that only computes the loss. PyTorch ``BCEWithLogitsLoss``
is timed on CPU, or on CUDA on a GPU, when torch is installed.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bench import ROOT
from bench.inputs import Batch
from bench.modes import MODES, VALUE_AND_GRAD

ArgsMaker = Callable[[Batch], tuple[Any, ...]]


@dataclasses.dataclass(frozen=True)
class JaxContender:
    """A JAX scalar loss timed as a forward pass and as ``jax.value_and_grad``.

    Attributes:
      key: Short stable identifier, used in the JSON.
      label: Name printed in the table and the plot.
      loss: Mean loss ``loss(*args) -> scalar``; differentiated in its first argument.
      make_args: Builds the device arguments from the host batch.
      ref: Key of the contender whose time divides this one's (``None``: itself).
      modes: The modes timed.
      group: ``"bce"``, ``"focal"`` or ``"reference"``.
      as_is: Time ``loss`` itself in every mode, neither reduced nor differentiated (the
        fused elementwise pass, listed under ``value_and_grad`` for its 12N bytes).
    """

    key: str
    label: str
    loss: Callable[..., jax.Array]
    make_args: ArgsMaker
    ref: str | None = "jaxbce"
    modes: tuple[str, ...] = MODES
    group: str = "bce"
    as_is: bool = False


def _f32_float(batch: Batch) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(batch.logits), jnp.asarray(batch.labels)


def _f32_bool(batch: Batch) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(batch.logits), jnp.asarray(batch.labels.astype(bool))


def _bf16_bool(batch: Batch) -> tuple[jax.Array, jax.Array]:
    return (
        jnp.asarray(batch.logits).astype(jnp.bfloat16),
        jnp.asarray(batch.labels.astype(bool)),
    )


def _f32_float_mask(batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    return jnp.asarray(batch.logits), jnp.asarray(batch.labels), jnp.asarray(batch.mask)


def naive_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The textbook formula, unstable for large ``|logits|``; here only for its speed.

    Args:
      logits: Logits.
      labels: Labels in [0, 1], same shape.

    Returns:
      The mean loss.
    """
    p = jax.nn.sigmoid(logits)
    return jnp.mean(-(labels * jnp.log(p) + (1 - labels) * jnp.log(1 - p)))


def fused_elementwise_pass(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """One elementwise pass: the stable loss per element, no reduction.

    Reads ``logits`` and ``labels`` once and writes one array of the same size: the
    same 12N bytes as an ideal ``value_and_grad`` with float32 inputs.

    Args:
      logits: Float32 logits.
      labels: Float32 labels, same shape.

    Returns:
      ``max(z, 0) - z*y + log1p(exp(-|z|))`` elementwise.
    """
    return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def jax_contenders(jaxbce: ModuleType) -> list[JaxContender]:
    """Registers the JAX contenders, in the order they run in each round.

    Args:
      jaxbce: The imported library.

    Returns:
      The contenders.
    """
    bce = jaxbce.sigmoid_binary_cross_entropy
    focal = jaxbce.sigmoid_focal_loss
    contenders = [
        JaxContender(
            "jaxbce",
            "jaxbce",
            lambda z, y: bce(z, y, reduction="mean"),
            _f32_float,
            ref=None,
        ),
        JaxContender(
            "optax",
            "optax",
            lambda z, y: jnp.mean(optax.sigmoid_binary_cross_entropy(z, y)),
            _f32_float,
        ),
        JaxContender("naive", "naive formula", naive_bce, _f32_float),
        JaxContender(
            "jaxbce_bool",
            "jaxbce bool labels",
            lambda z, y: bce(z, y, reduction="mean"),
            _f32_bool,
        ),
        JaxContender(
            "jaxbce_bf16_bool",
            "jaxbce bf16+bool",
            lambda z, y: bce(z, y, reduction="mean"),
            _bf16_bool,
        ),
        JaxContender(
            "jaxbce_where",
            "jaxbce where=",
            lambda z, y, m: bce(z, y, where=m, reduction="mean"),
            _f32_float_mask,
        ),
        JaxContender(
            "jaxbce_focal",
            "jaxbce focal",
            lambda z, y: focal(z, y, alpha=0.25, gamma=2.0, reduction="mean"),
            _f32_float,
            ref=None,
            group="focal",
        ),
        JaxContender(
            "optax_focal",
            "optax focal",
            lambda z, y: jnp.mean(optax.sigmoid_focal_loss(z, y, alpha=0.25, gamma=2.0)),
            _f32_float,
            ref="jaxbce_focal",
            group="focal",
        ),
        JaxContender(
            "fused_pass",
            "fused elementwise pass",
            fused_elementwise_pass,
            _f32_float,
            modes=(VALUE_AND_GRAD,),
            group="reference",
            as_is=True,
        ),
    ]
    return contenders


def import_jaxbce() -> ModuleType:
    """Imports jaxbce, from this checkout when it is not installed.

    Returns:
      The module.

    Raises:
      ImportError: If it cannot be imported or lacks the public losses.
    """
    try:
        module = importlib.import_module("jaxbce")
    except ImportError:
        sys.path.insert(0, str(ROOT))
        module = importlib.import_module("jaxbce")
    for name in ("sigmoid_binary_cross_entropy", "sigmoid_focal_loss"):
        if not hasattr(module, name):
            raise ImportError(f"jaxbce at {getattr(module, '__path__', '?')} has no {name!r}")
    return module


def load_torch(backend: str) -> tuple[ModuleType | None, str | None, str]:
    """Imports torch for the backend in use, or says why it is skipped.

    Args:
      backend: JAX's default backend (``"cpu"``, ``"gpu"``, ...).

    Returns:
      ``(torch or None, device or None, note)``.
    """
    try:
        torch = importlib.import_module("torch")
    except ImportError as err:
        return None, None, f"PyTorch contender skipped: import torch failed ({err})."
    if backend == "cpu":
        return (
            torch,
            "cpu",
            f"PyTorch {torch.__version__} on CPU, {torch.get_num_threads()} threads.",
        )
    if backend == "gpu" and torch.cuda.is_available():
        return torch, "cuda", f"PyTorch {torch.__version__} on {torch.cuda.get_device_name()}."
    return None, None, f"PyTorch contender skipped: torch has no CUDA for backend {backend!r}."
