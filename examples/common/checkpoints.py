"""Orbax checkpoints of the training state, and the guard on resuming into ``--out``.

:class:`Checkpoints` saves named NNX objects (models, optimizers) with the history rows so far
and restores the newest readable checkpoint, setting an unreadable one aside.
:func:`check_out_dir` refuses to resume a run written with other settings.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from common.config import ConfigError
from common.outputs import write_json
from common.sharding import is_main_process


def pure_state(nodes: Mapping[str, Any]) -> dict[str, Any]:
    """The arrays of named NNX objects as nested dicts (what Orbax saves)."""
    return {name: nnx.to_pure_dict(nnx.state(node)) for name, node in nodes.items()}


class Checkpoints:
    """Orbax checkpoints of named NNX objects plus the history rows written so far."""

    def __init__(self, directory: Path, *, keep: int = 3) -> None:
        """Opens (or creates) the checkpoint directory.

        Args:
          directory: Where step directories go.
          keep: How many recent checkpoints to keep (older ones serve as fall-backs).
        """
        self.directory = directory.absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, cleanup_tmp_directories=True),
        )

    def restore_latest(self, nodes: Mapping[str, Any]) -> tuple[int, list[dict[str, float]]]:
        """Loads the newest readable checkpoint into ``nodes``.

        An unreadable checkpoint (truncated or corrupt files) is reported on stderr, moved
        aside to ``<step>.corrupt`` (``<step>.corrupt.2``, ... where one exists: kept, never
        deleted) and the previous one is tried.

        Args:
          nodes: The named NNX objects, updated in place; their current arrays give the
            shapes, dtypes and shardings to restore to.

        Returns:
          ``(step, history)``: the step reached and the history rows up to it; ``(0, [])``
          when there is nothing to resume.
        """
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, pure_state(nodes))
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target), history=ocp.args.JsonRestore()
                    ),
                )
            except Exception as e:  # Any failure to read it means: try the previous one.
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                # Never over an earlier one: a .corrupt folder is kept, not deleted.
                aside, k = self.directory / f"{step}.corrupt", 1
                while aside.exists():
                    k += 1
                    aside = self.directory / f"{step}.corrupt.{k}"
                print(
                    f"warning: checkpoint {self.directory / str(step)} is unreadable "
                    f"({type(e).__name__}: {reason}); moving it to {aside.name} and "
                    "falling back to the previous checkpoint",
                    file=sys.stderr,
                )
                if is_main_process():
                    os.replace(self.directory / str(step), aside)
                self.manager.reload()
                continue
            for name, node in nodes.items():
                state = nnx.state(node)
                nnx.replace_by_pure_dict(state, restored.state[name])
                nnx.update(node, state)
            print(f"resuming from checkpoint at step {step}", file=sys.stderr)
            return step, list(restored.history["rows"])
        return 0, []

    def save(self, step: int, nodes: Mapping[str, Any], history: list[dict[str, float]]) -> None:
        """Starts saving a checkpoint in the background (Orbax writes it atomically).

        Args:
          step: Number of steps done.
          nodes: The named NNX objects.
          history: History rows so far.
        """
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(pure_state(nodes)),
                history=ocp.args.JsonSave({"rows": history}),
            ),
            force=True,
        )

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def check_out_dir(out: Path, settings: dict[str, Any]) -> None:
    """Refuses to resume into a directory written by a run with different settings.

    The first run into ``out`` records its settings there as ``config.json``.

    Args:
      out: The ``--out`` directory (created if needed).
      settings: This run's :func:`~common.config.recorded_settings`.

    Raises:
      ConfigError: ``out`` holds a run with other settings (the message lists them), an
        unreadable ``config.json``, or other files and no ``config.json`` (a folder that is
        not a run's: its files would be replaced).
    """
    path = out / "config.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path} is not a run's settings ({e}); use a new --out") from None
        changed = sorted(k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k))
        if changed:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ConfigError(f"{out} holds a run with other settings ({diffs}); use a new --out")
    elif out.is_dir() and any(out.iterdir()):
        raise ConfigError(
            f"--out {out} holds files but no config.json, so no run of these examples wrote "
            "it, and its files would be replaced; use a new or empty --out"
        )
    elif is_main_process():
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"--out {out}: cannot be created as a folder ({e.strerror})"
            ) from None
        write_json(path, settings)
