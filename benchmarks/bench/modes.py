"""The modes a function is timed in, and the bytes an ideal implementation moves in each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FORWARD = "forward"
VALUE_AND_GRAD = "value_and_grad"
#: The bandwidth floor's rows: a copy of a contender's ideal bytes, not a loss.
FLOOR = "floor"
MODES = (FORWARD, VALUE_AND_GRAD)


def ideal_bytes(args: Sequence[Any], mode: str) -> int:
    """Bytes an ideal implementation moves: every input read once, the gradient written once.

    Args:
      args: The arguments (the first one is the differentiated logits).
      mode: ``"forward"`` (inputs only) or ``"value_and_grad"``.

    Returns:
      The byte count.
    """
    read = sum(int(a.nbytes) for a in args)
    return read + (int(args[0].nbytes) if mode == VALUE_AND_GRAD else 0)
