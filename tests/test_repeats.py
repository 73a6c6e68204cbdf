import math
from statistics import mean, stdev

import pytest

from harness.records import Record
from harness.report import repeats
from harness.report.markdown import render_report


def _rec(rep, meters, tok, j=None, batch=1, status="ok"):
    return Record(model="m", variant="baseline", backend="pytorch", profile="p", batch_size=batch, prompt_tokens=8,
                  new_tokens=4, repetition=rep, meters=meters, decode_tok_s=tok, j_per_token_decode=j, status=status)


def test_t95_quantiles_and_bounds():
    # printed Student-t tables (two-sided 95%); a fractional Welch df lies between its neighbours
    assert repeats.t95(1) == pytest.approx(12.706, abs=1e-3) and repeats.t95(4) == pytest.approx(2.776, abs=1e-3)
    assert repeats.t95(4) > repeats.t95(4.7) > repeats.t95(5) == pytest.approx(2.571, abs=1e-3)
    assert repeats.t95(200) == pytest.approx(1.972, abs=1e-3) and repeats.t95(1e6) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        repeats.t95(0.5)


def test_spread_is_the_coefficient_of_variation_over_meters_on_repetitions():
    tok, j = [100.0, 102.0, 98.0, 101.0, 99.0], [3.0, 3.3, 2.7, 3.1, 2.9]
    recs = [_rec(i, True, t, e) for i, (t, e) in enumerate(zip(tok, j))] + [_rec(0, False, 50.0)]
    (s,) = repeats.spreads(recs)
    assert s.n == 5 and s.decode_tok_s_mean == pytest.approx(100.0)
    assert s.decode_tok_s_cv == pytest.approx(stdev(tok) / 100.0)
    assert s.j_per_token_cv == pytest.approx(stdev(j) / mean(j))
    assert (s.decode_tok_s_min, s.decode_tok_s_max) == (98.0, 102.0)
    # energy missing on one repetition: no J/token spread, never a 0
    recs[1] = _rec(1, True, 102.0, None)
    (s,) = repeats.spreads(recs)
    assert s.j_per_token_mean is None and s.j_per_token_cv is None
    # a single repetition has no spread
    assert repeats.spreads([_rec(0, True, 1.0, 1.0)]) == []


def test_overhead_welch_interval_by_hand():
    on, off = [99.0, 100.0, 101.0], [100.0, 101.0, 102.0, 101.0]
    recs = [_rec(i, True, t) for i, t in enumerate(on)] + [_rec(i, False, t) for i, t in enumerate(off)]
    recs.append(_rec(9, False, 1.0, status="failed"))   # a failed repetition is not a measurement
    (o,) = repeats.overheads(recs)
    assert (o.n_on, o.n_off) == (3, 4)
    assert o.change == pytest.approx(100.0 / 101.0 - 1)
    va, vb = stdev(on) ** 2 / 3, stdev(off) ** 2 / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    half = repeats.t95(df) * math.sqrt(va + vb)
    assert o.ci95[0] == pytest.approx((-1.0 - half) / 101.0) and o.ci95[1] == pytest.approx((-1.0 + half) / 101.0)
    assert o.within_target          # -0.99%
    far = repeats.overheads([_rec(0, True, 97.0), _rec(0, False, 100.0)])[0]
    assert not far.within_target and far.ci95 is None


def test_report_sections_appear_only_with_repetitions():
    recs = [_rec(0, False, 100.0), _rec(0, True, 99.5, 3.0), _rec(1, True, 99.7, 3.1), _rec(1, False, 100.2)]
    md = render_report(recs, {})
    assert "## Repetitions (meters on)" in md and "## Meter overhead" in md
    # the results table shows one row per cell: the first meters-on repetition
    results = md.split("## Results")[1].split("##")[0]
    assert results.count("| m | baseline |") == 1 and "99.5" in results
    plain = render_report([_rec(0, True, 100.0)], {})
    assert "Repetitions" not in plain and "Meter overhead" not in plain
