"""The rows of the self-check still above their bounds, shared by the CPU and GPU verdicts."""

from __future__ import annotations

import jax

from jaxbce import _sweep, check

#: Rows of the quick check still above the issue's bound on this kernel, with the worst
#: (loss, grad) ulps measured when they were recorded: a regression past these fails, and
#: `python -m jaxbce.check` keeps reporting them as NO. Every row is within its bound on
#: the CPU now (the focal soft-label rows closed when the focal kernel went to pairs).
KNOWN_GAPS: dict[tuple[str, str, str, str], tuple[float, float]] = {}

#: The same on XLA:GPU (an H200, jax 0.11.2), where the gradients of the weighted, smoothed and
#: focal rows are up to 1.6 ulp worse than on the CPU, for rows the CPU also misses and four
#: it meets (`docs/results/check-exhaustive-gpu.txt` has the exhaustive figures).
KNOWN_GAPS_GPU = {
    **KNOWN_GAPS,
    # Measured before the label weights and the focal kernel became exact pairs (which
    # closed these rows on the CPU): not yet re-measured on a GPU.
    ("sigmoid_bce", "pos_weight=3.5 weights=0.7", "float32", "soft"): (2.5, 4.2),
    ("sigmoid_bce", "pos_weight=0.25 weights=1.5", "float32", "soft"): (2.7, 3.5),
    ("bce", "label_smoothing=0.1", "float32", "soft"): (2.1, 2.8),
    ("focal", "gamma=0.5 alpha=0.25", "float32", "soft"): (4.0, 4.1),
    ("focal", "gamma=2.0 alpha=0.25", "float32", "soft"): (4.0, 5.2),
    ("focal", "gamma=2.0 alpha=0.6", "float32", "hard"): (4.0, 4.1),
    ("focal", "gamma=2.0 alpha=0.6", "float32", "soft"): (4.0, 4.7),
    # z = +-88, where the result is subnormal: the GPU keeps subnormals; not yet explained.
    ("sigmoid_bce", "-", "bfloat16", "y=0"): (0.52, 0.52),
    ("sigmoid_bce", "-", "bfloat16", "y=1"): (0.52, 0.52),
}


def assert_within_bounds_but_for_known_gaps(results: list[_sweep.Result]) -> None:
    """Every row within its bound, or, for a recorded gap, within the figures measured for it."""
    gaps = KNOWN_GAPS_GPU if jax.default_backend() == "gpu" else KNOWN_GAPS
    seen = set()
    for r in results:
        key = (r.sweep.function, r.variant.text, r.sweep.dtype, _sweep.label_name(r.label))
        limit = gaps.get(key)
        if limit is None:
            assert r.ok, check._row(r)
        else:
            seen.add(key)
            assert r.loss.ulps <= limit[0] and r.grad.ulps <= limit[1], check._row(r)
    assert seen == set(gaps), set(gaps) - seen
