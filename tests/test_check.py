"""The self-check CLI: its machinery (ulps, bit-pattern chunks, argmax reporting) and its verdict.

``test_quick_check_passes_on_this_backend`` is the one that judges jaxbce itself; the others
check the checker, on injected errors and known values.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from known_gaps import assert_within_bounds_but_for_known_gaps

from jaxbce import _exact, _sweep, check


def _ulp_error(got, exact, dtype, floor=None, flush=False):
    with jax.enable_x64(True):
        f = jnp.asarray(floor, jnp.float64) if floor is not None else None
        err = _exact.ulp_error(
            jnp.asarray(got, dtype), jnp.asarray(exact, jnp.float64), dtype, f, flush=flush
        )
        return float(err)


@pytest.mark.parametrize(
    "scale, dtype, unit",
    [
        (1.0, np.float32, 2.0**-23),
        (1.9999, np.float32, 2.0**-23),
        (0.75, np.float32, 2.0**-24),
        (3.0, "bfloat16", 2.0**-6),
        (1.0, np.float16, 2.0**-10),
        (2.0**-110, np.float32, 2.0**-133),  # its own ulp, though below 2^-126
        (2.0**-126, np.float32, 2.0**-149),
        (1e-40, np.float32, 2.0**-149),  # below the smallest normal: the subnormal spacing
        (0.0, np.float32, 2.0**-149),
        (1e-6, np.float16, 2.0**-24),
    ],
)
def test_ulp_is_the_spacing_of_the_dtype(scale, dtype, unit):
    with jax.enable_x64(True):
        assert float(_exact.ulp(jnp.float64(scale), dtype)) == unit


def test_ulp_error_of_known_values():
    step = 2.0**-23
    assert _ulp_error(1 + 3 * step, 1.0, np.float32) == 3.0
    assert _ulp_error(np.float32(1.0), 1 + step / 4, np.float32) == 0.25
    # A normal result is measured in its own ulps, however small (an error of 2^-126 at
    # 2^-110 is 128 ulps; it once scored as 1).
    assert _ulp_error(2.0**-110 + 2.0**-126, 2.0**-110, np.float32) == 128.0
    # Below the smallest normal: the subnormal spacing, or on a flushing device the smallest
    # normal number, whose flush to 0 is exact.
    assert _ulp_error(0.0, 2.0**-127, np.float32) == 2.0**22
    assert _ulp_error(2.0**-126, 2.0**-127, np.float32, flush=True) == 0.5
    assert _ulp_error(0.0, 2.0**-127, np.float32, flush=True) == 0.0  # the flush of it
    # Two-term floor: a cancelled gradient is measured against the terms' magnitude.
    assert _ulp_error(1e-9 + 3 * 2.0**-24, 1e-9, np.float32, floor=0.75) == pytest.approx(3.0)
    assert _ulp_error(1e-9 + 3 * 2.0**-24, 1e-9, np.float32) > 1e6
    # Special values: NaN must meet NaN; an overflow must round to the right infinity.
    assert _ulp_error(np.nan, np.nan, np.float32) == 0.0
    assert _ulp_error(1.0, np.nan, np.float32) == np.inf
    assert _ulp_error(np.nan, 1.0, np.float32) == np.inf
    assert _ulp_error(np.inf, np.inf, np.float32) == 0.0
    assert _ulp_error(np.inf, 1e39, np.float32) == 0.0
    assert _ulp_error(-np.inf, 1e39, np.float32) == np.inf
    assert _ulp_error(np.inf, 1e5, np.float16) == 0.0  # 1e5 > float16's max, 65504


def _chunk_bits(sweep, n):
    """Every valid bit pattern the device generates for ``sweep`` in chunks of ``n``."""
    fn = jax.jit(lambda p: _sweep._inputs(sweep, n, p))
    seen = []
    with jax.enable_x64(True):
        for params in _sweep.chunk_params(sweep, n):
            x, _, valid = fn(params)
            bits = np.asarray(x).view(np.uint32 if x.dtype == jnp.float32 else np.uint16)
            seen.append(bits[np.asarray(valid)].astype(np.int64))
    return np.concatenate(seen)


@pytest.mark.parametrize(
    "dtype, ranges, n",
    [
        ("bfloat16", check.HALF_ALL, 2**10),  # every 16-bit pattern, 64 chunks
        ("float16", check.HALF_PROBS["float16"], 2**9),  # [0, 1] and -0, ragged last chunk
        ("float32", ((2**32 - 3000, 2**32),), 2**10),  # the top of the uint32 range
        ("float32", check.F32_PROBS, 2**24),  # 2^30 + 2 patterns: counted, not listed
    ],
)
def test_bit_pattern_chunks_cover_every_pattern_exactly_once(dtype, ranges, n):
    sweep = _sweep.Sweep("bce", dtype, "patterns", (1.0,), check.HARD, ranges=ranges)
    expected = sum(hi - lo for lo, hi in ranges)
    if expected > 2**20:  # the full probability range: count the chunk plan instead
        plan = list(_sweep.chunk_params(sweep, n))
        assert sum(min(n, int(p[3]) - int(p[0])) for p in plan) == expected
        assert [int(p[0]) for p in plan[:2]] == [0, n]
        return
    bits = _chunk_bits(sweep, n)
    assert len(bits) == expected
    want = np.concatenate([np.arange(lo, hi) for lo, hi in ranges])
    np.testing.assert_array_equal(np.sort(bits), want)


def test_strided_patterns_take_one_per_stride_with_varied_low_bits():
    sweep = _sweep.Sweep(
        "sigmoid_bce",
        "float32",
        "patterns",
        (1.0,),
        check.HARD,
        ranges=((0, 2**20),),
        stride_log2=12,
    )
    bits = _chunk_bits(sweep, 2**7)
    np.testing.assert_array_equal(bits >> 12, np.arange(2**8))
    assert len(np.unique(bits & 0xFFF)) > 200


def test_worst_returns_the_largest_error_and_its_index():
    err = np.zeros(1000)
    err[[3, 500, 777]] = [2.0, 7.25, 7.0]
    valid = np.ones(1000, bool)
    with jax.enable_x64(True):
        ulps, at = jax.jit(_sweep._worst)(err, valid)
        assert (float(ulps), int(at)) == (7.25, 500)
        valid[500] = False  # an input outside the chunk's range is never reported
        ulps, at = jax.jit(_sweep._worst)(err, valid)
        assert (float(ulps), int(at)) == (7.0, 777)
        # Rounded up, never down: 1 + 2^-40 must not read as 1 (within the bound).
        ulps, _ = jax.jit(_sweep._worst)(np.array([1 + 2.0**-40]), np.array([True]))
        assert 1.0 < float(ulps) <= 1 + 2.0**-20


def _float64_bce(x, y, **kw):
    """Sigmoid BCE computed in float64 and rounded to float32: within ~0.5 ulp everywhere."""
    with jax.enable_x64(True):
        z, q = x.astype(jnp.float64), y.astype(jnp.float64)
        loss = q * jnp.logaddexp(0.0, -z) + jnp.where(q == 1, 0.0, (1 - q) * jnp.logaddexp(0.0, z))
        return loss.astype(x.dtype)


def _off_by_2_ulps(lo, hi):
    """:func:`_float64_bce` with its loss 2 ulps too large for logits in [lo, hi)."""

    def broken(x, y, **kw):
        loss = _float64_bce(x, y)
        value = jax.lax.stop_gradient(loss)  # the error goes into the value only
        up2 = jnp.nextafter(jnp.nextafter(value, jnp.inf), jnp.inf)
        return loss + jnp.where((x >= lo) & (x < hi), up2 - value, 0)

    return broken


_BAND_Y1 = "sigmoid_bce - float32 y=1 1e6 band"


def test_a_correct_loss_passes_and_one_off_by_2_ulps_is_caught(monkeypatch, capsys):
    # A stand-in for the kernel, exact to ~0.5 ulp, passes the dense band; the same with
    # 2 ulps added on [0.6819, 0.6819 + 2^-12) (2^12 float32 logits, ~6 of the band's) fails
    # there, and the report names an input in that window.
    [sweep] = check.select(check.sweeps(exhaustive=False), _BAND_Y1, ["float32"])
    monkeypatch.setitem(_sweep.FUNCTIONS, "sigmoid_bce", _float64_bce)
    [good] = _sweep.run([sweep], chunk_log2=16, workers=1, progress=False)
    assert good.ok and max(good.loss.ulps, good.grad.ulps) < 0.6
    lo, width = np.float32(0.6819), 2.0**-12
    monkeypatch.setitem(_sweep.FUNCTIONS, "sigmoid_bce", _off_by_2_ulps(lo, lo + width))
    [bad] = _sweep.run([sweep], chunk_log2=16, workers=1, progress=False)
    assert not bad.ok and 1.5 < bad.loss.ulps < 2.6 and bad.grad.ulps < 0.6
    assert lo <= np.float32(bad.loss.x) < lo + width and bad.loss.y == "1.0"
    # The same through the command line, over every 2^8-th float32 pattern.
    argv = ["--exhaustive", "--only", "sigmoid_bce - float32 y=1 1/2\\^8 of", "--stride-log2", "8"]
    assert check.main([*argv, "--no-progress"]) == 1
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sigmoid")]
    assert row.endswith("NO") and lo <= np.float32(row.split("z=")[1].split()[0]) < lo + width


def test_exhaustive_runs_end_to_end_on_a_restricted_set(tmp_path, capsys):
    out_file = tmp_path / "report.txt"
    status = check.main(
        ["--exhaustive", "--only", "bfloat16 y=1", "--no-progress", "--out", str(out_file)]
    )
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "bfloat16 y=1" in line]
    assert len(rows) == 2  # logits and probabilities, every pattern
    assert all("all patterns" in row for row in rows)
    assert "check_grads" not in out  # --only selects no gradient check
    assert out_file.read_text() == out
    assert not (tmp_path / "report.txt.partial").exists()
    assert status == (0 if all(row.endswith("yes") for row in rows) else 1)


def test_an_interrupted_run_leaves_no_out_file(tmp_path, monkeypatch):
    # --out emptied FILE before measuring: interrupting a run into a committed report
    # (docs/results/) lost it. The report goes to FILE.partial until the run is done.
    out_file = tmp_path / "report.txt"

    def interrupted(args, chosen, out):
        out.write("first line\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(check, "_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        check.main(["--only", "bfloat16 y=1", "--no-progress", "--out", str(out_file)])
    assert not out_file.exists()
    assert (tmp_path / "report.txt.partial").read_text() == "first line\n"


@pytest.mark.parametrize("existing", ["report.txt", "report.txt.partial"])
def test_an_existing_out_file_is_never_replaced(tmp_path, capsys, existing):
    # A finished run replaced FILE, and a run restricted by --only or --samples wrote a
    # report that looks like a full one over the committed report (adversarial pass,
    # 2026-11-27); an existing FILE.partial was truncated.
    (tmp_path / existing).write_text("committed")
    with pytest.raises(SystemExit) as exit_info:
        check.main(["--only", "bfloat16 y=1", "--out", str(tmp_path / "report.txt")])
    assert exit_info.value.code == 2
    assert "exists, and is never replaced" in capsys.readouterr().err
    assert (tmp_path / existing).read_text() == "committed"


def test_quick_check_says_check_grads_did_not_run_and_grads_runs_it(capsys):
    # check_grads (45 of the quick check's 64 s on 2 cores) left the quick default for
    # --grads and --exhaustive; a report without it must say so, not just omit it.
    assert check.main(["--only", "^sigmoid_bce float64 grid", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "check_grads (order 2, fwd + rev, float64): not run (--grads or --exhaustive)" in out
    assert check.main(["--grads", "--only", "check_grads sigmoid_bce$", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"check_grads \(order 2, fwd \+ rev, float64\):\n  sigmoid_bce +pass", out)
    assert "not run" not in out and "float64 grid" not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--samples", "-5"], "--samples: expected a whole number >= 1"),
        (["--samples", "0"], "--samples: expected a whole number >= 1"),
        (["--samples", "inf"], "--samples: expected a whole number >= 1"),  # was a traceback
        (["--focal-samples", "1.5"], "--focal-samples: expected a whole number >= 1"),
        (["--only", "fcoal"], "--only 'fcoal' with --dtypes float32 bfloat16 float16 float64: no"),
        (["--only", "("], "--only: not a regular expression"),
        (["--only", "check_grads focal"], "only check_grads rows, which need --grads"),
        (["--dtypes", "float8"], "--dtypes: invalid choice: 'float8'"),
        (["--stride-log2", "40"], "--stride-log2: expected 0 to 31, got 40"),
        (["--workers", "0"], "--workers: expected 1 to 256, got 0"),
    ],
)
def test_arguments_that_would_measure_nothing_are_refused(tmp_path, capsys, argv, message):
    # --samples -5 ran nothing and printed "all within bounds" with exit 0, 0 was read as
    # the default, a mistyped --only passed vacuously, a bad regex ended in a traceback with
    # the exit status of a failed bound, and --out was emptied before any of this.
    out_file = tmp_path / "report.txt"
    out_file.write_text("kept")
    with pytest.raises(SystemExit) as exit_info:
        check.main([*argv, "--no-progress", "--out", str(out_file)])
    assert exit_info.value.code == 2  # argparse's usage error, not 1 (a bound failed)
    assert message in capsys.readouterr().err
    assert out_file.read_text() == "kept"


def test_nan_inputs_must_give_nan(monkeypatch):
    fn = _sweep.FUNCTIONS["sigmoid_bce"]

    def nan_to_zero(x, y, **kw):
        return jnp.nan_to_num(fn(x, y, **kw), nan=0.0)

    monkeypatch.setitem(_sweep.FUNCTIONS, "sigmoid_bce", nan_to_zero)
    nans = ((0x7FC00000, 0x7FC00010),)
    sweep = _sweep.Sweep("sigmoid_bce", "float32", "patterns", (0.0,), check.HARD, ranges=nans)
    [result] = _sweep.run([sweep], chunk_log2=4, workers=1, progress=False)
    assert result.loss.ulps == np.inf and result.loss.x.startswith("nan(0x7fc0")


def test_quick_check_is_within_bounds_but_for_the_recorded_gaps():
    # The verdict on jaxbce itself: every row of the quick check (both cross-entropies in
    # every dtype and option set, the focal loss at every gamma and alpha) within its bound,
    # or, for a recorded gap, within the figures measured for it.
    results = _sweep.run(check.sweeps(exhaustive=False), chunk_log2=20, workers=1, progress=False)
    assert_within_bounds_but_for_known_gaps(results)


def test_batched_focal_variants_score_as_one_program_per_variant():
    # The focal sweep runs its (gamma, alpha) variants in one vmapped program; each row must
    # be bit for bit the row of a sweep of that variant alone (options as Python floats).
    [focal] = [
        s for s in check.sweeps(exhaustive=False, focal_samples=2**14) if s.function == "focal"
    ]
    variants = (focal.variants[4], focal.variants[14])  # gamma 0.5 alpha 0.25; 3.7, 0.6
    both = dataclasses.replace(focal, variants=variants)
    assert _sweep._batched(both)
    batched = _sweep.run([both], chunk_log2=12, workers=1, progress=False)
    alone = [
        r
        for v in variants
        for r in _sweep.run(
            [dataclasses.replace(focal, variants=(v,))], chunk_log2=12, workers=1, progress=False
        )
    ]
    assert [(r.variant, r.label) for r in batched] == [(r.variant, r.label) for r in alone]
    for got, want in zip(batched, alone, strict=True):
        assert (got.loss, got.grad, got.inputs) == (want.loss, want.grad, want.inputs)


@pytest.mark.parametrize("where", ["folder", "missing/report.txt"])
def test_an_out_that_cannot_be_a_file_is_refused_before_measuring(tmp_path, capsys, where):
    # A folder, or a file in a missing folder, ended in a traceback with exit status 1 (a
    # failed bound's) after the run.
    (tmp_path / "folder").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        check.main(["--only", "bfloat16 y=1", "--out", str(tmp_path / where)])
    assert exit_info.value.code == 2
    assert "expected a file in an existing folder" in capsys.readouterr().err


def _reference_points(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits dense where the functions are hard (|z| < 20, tiny |z|, up to 700), soft and
    near-hard labels, probabilities dense on [0.29, 0.5] (where XLA's float64 ``log1p(-p)``
    is least accurate) and down to 1e-40; every value a float32, as the sweeps feed them."""
    rng = np.random.default_rng(seed)
    z = np.concatenate(
        [rng.uniform(-20, 20, 300), np.geomspace(1e-10, 700, 100), -np.geomspace(1e-10, 700, 100)]
    )
    y = np.concatenate(
        [
            np.zeros(100),
            np.ones(100),
            rng.uniform(0, 1, 200),
            1e-7 * rng.random(50),
            1 - 1e-7 * rng.random(50),
        ]
    )
    p = np.concatenate(
        [rng.uniform(0.29, 0.5, 200), rng.uniform(0, 1, 200), np.geomspace(1e-40, 0.25, 100)]
    )
    return tuple(a.astype(np.float32).astype(np.float64) for a in (z, y, p))


def test_the_float64_reference_is_within_2_to_the_minus_40_of_mpmath(x64):
    """The check scores float32 against _exact's float64 formulas; this bounds their own
    error against 200-bit mpmath at 2^-40 relative (of max(|exact|, the terms' size), the
    check's scale): 2^-17 of a float32 ulp, so no reported ulp figure moves by it."""
    import reference as ref

    z, y, p = _reference_points(0)
    cases = [
        ("sigmoid_bce", {}, z, ref.bce, {}),
        (
            "sigmoid_bce",
            dict(pos_weight=3.5, weights=0.75, label_smoothing=0.125),
            z,
            ref.bce,
            dict(pw=3.5, w=0.75, eps=0.125),
        ),
        (
            "binary_cross_entropy",
            dict(weights=0.75, label_smoothing=0.125),
            p,
            ref.bce_probs,
            dict(w=0.75, eps=0.125),
        ),
        ("focal", dict(gamma=2.0, alpha=0.25), z[::4], ref.focal, dict(gamma=2.0, alpha=0.25)),
        ("focal", dict(gamma=0.5, alpha=None), z[::4], ref.focal, dict(gamma=0.5, alpha=None)),
    ]
    worst = {}
    for name, options, xs, exact_fn, ref_options in cases:
        ys = y[: len(xs)]
        loss, grad, _ = getattr(_exact, name)(jnp.asarray(xs), jnp.asarray(ys), **options)
        for i, (x, label) in enumerate(zip(xs, ys, strict=True)):
            exact_loss, exact_grad = exact_fn(x, label, **ref_options)
            # The scale of a gradient that is a difference of terms: the check's floor,
            # here bounded below by |exact| and the loss' own size.
            for what, got, exact in (("loss", loss[i], exact_loss), ("grad", grad[i], exact_grad)):
                scale = max(abs(exact), abs(exact_loss) if what == "grad" else 0, 1e-300)
                err = float(abs(float(got) - exact) / scale)
                key = (name, str(options), what)
                worst[key] = max(worst.get(key, 0.0), err)
    assert max(worst.values()) <= 2.0**-40, {k: v for k, v in worst.items() if v > 2.0**-40}
