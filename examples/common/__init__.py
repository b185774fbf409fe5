"""The pieces the jaxbce examples share, one concern per module.

- ``config``: :class:`~common.config.TrainConfig`, the settings of a run, and their checks.
- ``cli``: the shared command-line flags, their conversion to a config, one-line errors and
  :func:`~common.cli.prepare_run` (checks, devices, data, output directory).
- ``input_pipeline``: reading and checking a user's ``--data`` file, the split, the
  standardisation, the positive weights and the order of the training batches.
- ``models``: the MLP that returns logits.
- ``sharding``: the device mesh, batches split over it, replicated state, and the gathering of
  sharded outputs back to the host.
- ``train``: the optimiser, the learning-rate schedule and the resumable training loop.
- ``checkpoints``: Orbax checkpoints and the guard against resuming another run's ``--out``.
- ``metrics``: ROC-AUC, average precision, accuracy and F1, and the threshold choice.
- ``plots``: the figures, as PNG bytes.
- ``outputs``: the files a run writes to ``--out``, each written atomically.

Imports go one way, with no cycles: ``config``, ``input_pipeline``, ``models``, ``metrics`` and
``plots`` import nothing from this package; ``sharding`` builds on the first two, ``outputs`` on
``plots`` and ``sharding``, ``checkpoints`` on ``outputs``; ``train`` and ``cli`` are the top,
and nothing here imports them.
"""
