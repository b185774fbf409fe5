"""The self-check CLI: it runs, measures every case and reports within bounds on this CPU."""

from __future__ import annotations

import numpy as np
import pytest

from jaxbce import check


def test_self_check_passes_and_prints_every_case(capsys):
    status = check.main(["--dtypes", "float32", "bfloat16"])
    out = capsys.readouterr().out
    assert status == 0, out
    for name, *_ in check.CASES:
        assert out.count(name) >= 3, name  # two dtypes and one check_grads line
    assert "all within bounds" in out


def test_self_check_detects_an_error(monkeypatch):
    # A loss that is off by 8 ulps must be reported as out of bounds.
    name, fn, opts, bound = check.CASES[0]

    def broken(x, y, **kw):
        return fn(x, y, **kw) * np.float32(1 + 8 * 2**-23)

    monkeypatch.setattr(check, "CASES", [(name, broken, opts, bound)])
    rows = check.measure(np.float32)
    assert rows[0][2] > bound
    assert check.main(["--dtypes", "float32"]) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ulps_are_measured_from_the_exact_value(dtype):
    one = np.array([1.0], np.float64)
    step = float(np.spacing(dtype(1.0)))
    assert check._ulps(one + 3 * step, one, dtype)[0] == pytest.approx(3.0)
    assert check._ulps(np.array([0.0]), np.array([1e-40]), np.float32)[0] < 1.0
