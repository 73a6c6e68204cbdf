import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.records import Record, append_jsonl
from harness.report.compare import CompareError, compare, parse_thresholds


def _r(**kw):
    base = dict(model="m", variant="baseline", backend="pytorch", profile="p", batch_size=1, prompt_tokens=8, new_tokens=4)
    base.update(kw)
    return Record(**base)


def test_direction_threshold_and_noise():
    t = parse_thresholds("decode_tok_s:-5%,ttft_s:+10%")
    a = [_r(decode_tok_s=100.0, decode_tok_s_stdev=1.0, ttft_s=0.10, ttft_s_iqr=0.001)]
    slower = [_r(decode_tok_s=90.0, decode_tok_s_stdev=1.0, ttft_s=0.10, ttft_s_iqr=0.001)]
    noisy = [_r(decode_tok_s=90.0, decode_tok_s_stdev=4.0, ttft_s=0.105, ttft_s_iqr=0.001)]
    faster = [_r(decode_tok_s=120.0, decode_tok_s_stdev=1.0, ttft_s=0.2, ttft_s_iqr=0.001)]
    by = lambda ds: {d.metric: d.status for d in ds}  # noqa: E731
    assert by(compare(a, slower, t)) == {"decode_tok_s": "regression", "ttft_s": "unchanged"}
    # -10% but the spreads (1 + 4) x 2 = 10% of 100 cover it: not a regression
    assert by(compare(a, noisy, t))["decode_tok_s"] == "within-noise"
    assert by(compare(a, noisy, t))["ttft_s"] == "within-threshold"          # +5% TTFT, allowed +10%
    assert by(compare(a, faster, t)) == {"decode_tok_s": "improvement", "ttft_s": "regression"}


def test_missing_figures_and_bad_thresholds():
    (d,) = compare([_r(decode_tok_s=1.0)], [_r(decode_tok_s=None)], {"decode_tok_s": 0.05})
    assert d.status == "missing" and d.a == 1.0 and d.b is None
    with pytest.raises(CompareError, match="unknown metric"):
        parse_thresholds("speed:-5%")
    with pytest.raises(CompareError, match="look like"):
        parse_thresholds("decode_tok_s:fast")


def test_cli_exit_codes(tmp_path):
    for name, tok in (("a", 100.0), ("b", 80.0), ("c", 110.0)):
        (tmp_path / name).mkdir()
        append_jsonl(tmp_path / name / "records.jsonl", _r(decode_tok_s=tok, decode_tok_s_stdev=0.5))
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.exit_code == 1 and "regression" in r.output
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "c")])
    assert r.exit_code == 0 and "improvement" in r.output
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--fail-on", "nope:-1%"])
    assert r.exit_code == 2
