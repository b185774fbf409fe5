"""Devices: one data-parallel mesh axis, sharded batches, replicated state, gathered outputs.

Every process holds the same host data; :func:`shard_batch` splits a batch's leading axis over
the mesh's ``"data"`` axis, :func:`replicate` copies parameters and optimizer state to every
device, and :func:`loss_and_probabilities` and :func:`gather_rows` bring an eval step's
sharded outputs back to the host. Only process 0 writes files (:func:`is_main_process`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from common.config import ConfigError
from common.input_pipeline import Split

Batch = dict[str, jax.Array]
"""A batch on device: ``x`` features, ``y`` 0/1 labels, ``mask`` which labels count."""


def is_main_process() -> bool:
    """Whether this process writes the output files (process 0)."""
    return jax.process_index() == 0


def make_mesh(multi_host: bool) -> Mesh:
    """A 1-D mesh over every device JAX sees (all hosts with ``multi_host``).

    Args:
      multi_host: Call ``jax.distributed.initialize()`` first; it reads the coordinator
        address and process id from the cluster environment (SLURM, TPU pod, ...).

    Returns:
      A ``Mesh`` with one axis, ``"data"``, over which batches are split.

    Raises:
      ConfigError: ``jax.distributed.initialize()`` failed; the message says what to do.
    """
    if multi_host:
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as e:
            raise ConfigError(
                f"--multi-host: jax.distributed.initialize() failed ({e}); start one process per "
                "host under a launcher JAX detects (SLURM, Open MPI, Kubernetes, Cloud TPU)"
            ) from None
    return Mesh(np.asarray(jax.devices()), ("data",))


def _global_array(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # Every process holds the same host value; each one hands over the pieces its devices own.
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def put_replicated(mesh: Mesh, value: np.ndarray) -> jax.Array:
    """A host array copied to every device of the mesh (``NamedSharding(mesh, P())``)."""
    return _global_array(value, NamedSharding(mesh, P()))


def replicate(mesh: Mesh, *nodes: Any) -> None:
    """Places every array of the given NNX objects, unchanged, on every device of the mesh.

    Args:
      mesh: The device mesh.
      *nodes: NNX modules or optimizers, updated in place.
    """
    for node in nodes:
        nnx.update(node, jax.tree.map(lambda a: put_replicated(mesh, a), nnx.state(node)))


def shard_batch(mesh: Mesh, arrays: Mapping[str, np.ndarray]) -> Batch:
    """Splits each array's leading (batch) axis over the mesh's ``"data"`` axis.

    Args:
      mesh: The device mesh.
      arrays: Host arrays with the same leading size, a multiple of the device count.

    Returns:
      The global arrays, sharded with ``NamedSharding(mesh, P("data"))``.
    """
    sharding = NamedSharding(mesh, P("data"))
    return {k: _global_array(v, sharding) for k, v in arrays.items()}


def padded_batch(mesh: Mesh, split: Split) -> Batch:
    """A whole split as one sharded batch, padded to a multiple of the device count.

    Padding rows have ``mask`` False, so the loss's ``where=`` leaves them out.

    Args:
      mesh: The device mesh.
      split: The split to evaluate.

    Returns:
      The sharded batch.
    """
    pad = -len(split) % mesh.size
    padded = Split(
        *(
            np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
            for a in (split.x, split.y, split.mask)
        )
    )
    return batch_of(mesh, padded, np.arange(len(padded)))


def batch_of(mesh: Mesh, split: Split, rows: np.ndarray) -> Batch:
    """The given rows of a split as a batch sharded over the mesh."""
    return shard_batch(mesh, {"x": split.x[rows], "y": split.y[rows], "mask": split.mask[rows]})


def loss_and_probabilities(
    outputs: tuple[jax.Array, jax.Array], n: int
) -> tuple[float, np.ndarray]:
    """Brings an eval step's ``(loss, logits)`` to the host as a float and probabilities.

    Gathers the batch-sharded logits from all devices (and hosts), drops the padding rows of a
    :func:`padded_batch` and applies the sigmoid in float64.

    Args:
      outputs: ``(loss, logits)`` from an eval step.
      n: Number of real rows.

    Returns:
      ``(loss, probability)`` with ``probability`` a NumPy array of the first ``n`` rows.
    """
    from scipy.special import expit

    loss, logits = outputs
    return float(loss), expit(gather_rows(logits, n).astype(np.float64))


def gather_rows(array: jax.Array, n: int) -> np.ndarray:
    """A batch-sharded array on the host: gathered from all devices (and hosts), the padding
    rows of a :func:`padded_batch` dropped (the first ``n`` rows kept)."""
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))[:n]
