"""Training: the optimiser, its learning-rate schedule and the resumable training loop.

:func:`fit` runs (or resumes) the loop of a script's jitted train step over the batches of
:func:`~common.input_pipeline.batch_rows`, validates, writes ``history.csv`` and saves
checkpoints, all as the :class:`~common.config.TrainConfig` says.
"""

from __future__ import annotations

import signal
import sys
import threading
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from common.checkpoints import Checkpoints
from common.config import TrainConfig
from common.input_pipeline import batch_rows
from common.outputs import write_csv
from common.sharding import is_main_process


def make_transform(
    config: TrainConfig, *, decay_mask: Callable[[Any], Any] | None = None
) -> optax.GradientTransformation:
    """Gradient clipping, then AdamW with linear warm-up and cosine decay.

    Build it once per run and hand the same object to every ``nnx.Optimizer``: it is part of
    the optimizer's static structure, so models that share it share one compiled train step.

    Args:
      config: Settings ``lr``, ``steps`` and ``weight_decay``.
      decay_mask: Which parameters the weight decay applies to, as Optax's ``mask``: called
        with the parameters, returns a tree of bools like them. None: all of them.

    Returns:
      The Optax transformation.
    """
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(
            learning_rate_schedule(config), weight_decay=config.weight_decay, mask=decay_mask
        ),
    )


class StopRequest:
    """Turns the first Ctrl-C (SIGINT) into a request to stop between two steps.

    A ``KeyboardInterrupt`` raised wherever the process happened to be (inside a jitted step,
    inside Flax's state update) ended the run with a traceback from that place, sometimes
    another library's error. With this, the loop finishes its step and returns cleanly; a
    second Ctrl-C interrupts at once. Only in the main thread of a single-process run: with
    several processes, one that stops alone would leave the others waiting in a collective.
    """

    def __init__(self) -> None:
        self.requested = False
        self._installed = False
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True  # the previous handler may be None (set outside Python)
        return self

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.requested:  # the second Ctrl-C
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("Ctrl-C: stopping after this step (press it again to stop at once)")

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            self._installed = False


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """Linear warm-up over the first 5% of steps, then cosine decay to 1% of ``lr``."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.lr,
        warmup_steps=max(1, config.steps // 20),
        decay_steps=config.steps,
        end_value=config.lr / 100,
    )


def fit(
    config: TrainConfig,
    *,
    train_rows: int,
    nodes: Mapping[str, Any],
    train_step: Callable[[np.ndarray], Mapping[str, jax.Array]],
    evaluate: Callable[[], Mapping[str, float]],
    after_step: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Runs (or resumes) the training loop with progress bar, history and checkpoints.

    The checkpoint at the newest step in ``config.out`` is restored first, so a run that was
    interrupted continues where its last checkpoint left it and ends as an uninterrupted run
    would.

    Args:
      config: Settings ``steps``, ``batch_size``, ``seed``, ``eval_every``,
        ``checkpoint_every`` and ``out``.
      train_rows: Number of training rows.
      nodes: The named NNX objects that make up the training state (models, optimizers).
      train_step: One jitted update on the batch made of the given training rows (see
        :func:`~common.input_pipeline.batch_rows`); returns named scalar losses.
      evaluate: Validation metrics for the current state, as floats.
      after_step: Called with the number of steps done after each step, once that step's
        history row is written and its checkpoint save (if any) has started; for instance to
        watch a run, or to interrupt it in a test.

    Returns:
      The history rows: ``step``, ``lr``, the mean of each training loss since the previous
      row, and the validation metrics.

    Raises:
      SystemExit: Status 130 after a Ctrl-C (see :class:`StopRequest`): the loop stopped
        between two steps, waited for any checkpoint being saved and said on stderr where
        the same command will resume (the last checkpoint, so that the resumed run ends as
        an uninterrupted one would).
    """
    checkpoints = Checkpoints(config.out / "checkpoints")
    start, history = checkpoints.restore_latest(nodes)
    schedule = learning_rate_schedule(config)
    pending: list[Mapping[str, jax.Array]] = []
    bar = tqdm(
        range(start, config.steps),
        initial=start,
        total=config.steps,
        desc=config.out.name,
        disable=not is_main_process(),
        dynamic_ncols=True,
    )
    saved, stopped_at = start, None
    try:
        with StopRequest() as stop:
            for step in bar:
                batch = batch_rows(config.seed, step, train_rows, config.batch_size)
                pending.append(train_step(batch))
                done = step + 1
                if done % config.eval_every == 0 or done == config.steps:
                    row = {"step": done, "lr": float(schedule(step))}
                    for key in pending[0]:
                        row[key] = float(np.mean([float(losses[key]) for losses in pending]))
                    row.update(evaluate())
                    history.append(row)
                    pending = []
                    postfix = {k: f"{v:.4f}" for k, v in row.items() if k not in ("step", "lr")}
                    bar.set_postfix(postfix)
                    if is_main_process():
                        write_csv(config.out / "history.csv", history)
                if done % config.checkpoint_every == 0 or done == config.steps:
                    checkpoints.save(done, nodes, history)
                    saved = done
                if after_step is not None:
                    after_step(done)
                if stop.requested and done < config.steps:
                    stopped_at = done
                    break
    finally:
        bar.close()
        checkpoints.close()  # waits for a save in flight: the checkpoint is whole on disk
    if stopped_at is not None:
        where = f"the checkpoint at step {saved}" if saved else "the start (no checkpoint yet)"
        print(
            f"stopped by Ctrl-C after step {stopped_at}; the same command resumes from {where}",
            file=sys.stderr,
        )
        raise SystemExit(130)
    return history
