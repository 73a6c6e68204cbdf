"""harness advise on crafted records and profiles: evidence, percentiles, quality, prices, no solution."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.advise.constraints import AdviseError, build
from harness.advise.measured import Quality, pick
from harness.cli.advise import advise as advise_cli
from tests.advise_fixtures import REAL, quality_run, record, write_profiles, write_run


def run(tmp_path, *args, profiles=None):
    pdir = profiles or write_profiles(tmp_path / "profiles")
    res = CliRunner().invoke(advise_cli, ["--profiles-dir", str(pdir), *map(str, args)])
    return res


def as_json(res) -> dict:
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.stdout)


def test_measured_beats_projected(tmp_path):
    rd = write_run(tmp_path / "run", [record("baseline", batch=1, tok_s=42.0)])
    d = as_json(run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "gpu-a", "--batch", "1",
                    "--variants", "baseline", "--format", "json"))
    rows = d["ranked"] + d["others"]
    mine = [r for r in rows if r["profile"] == "gpu-a" and r["variant"] == "baseline" and r["batch_size"] == 1
            and r["gpus"] == 1]
    assert len(mine) == 1, "the projection of a measured deployment must not appear beside it"
    assert mine[0]["evidence"] == "measured" and mine[0]["decode_tok_s"] == 42.0
    assert str(rd) in mine[0]["basis"]


def test_projection_says_where_it_came_from(tmp_path):
    d = as_json(run(tmp_path, "--model", "synthetic:llama-3.1-8b", "--profiles", "gpu-a", "--batch", "1",
                    "--variants", "baseline", "--format", "json"))
    row = (d["ranked"] + d["others"])[0]
    assert row["evidence"] == "projected" and row["tier"] == "ceiling" and "roofline ceiling" in row["basis"]


def test_record_shorter_than_asked_context_is_not_evidence(tmp_path):
    rd = write_run(tmp_path / "run", [record("baseline", batch=1, tok_s=42.0, prompt=128, new=32)])
    d = as_json(run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "gpu-a", "--batch", "1",
                    "--variants", "baseline", "--context", "1024", "--format", "json"))
    assert all(r["evidence"] == "projected" for r in d["ranked"] + d["others"])
    assert any("measured only at context 160" in n for n in d["notes"])


def test_pick_prefers_the_shortest_long_enough_context_then_the_median():
    rs = [record(tok_s=t, prompt=p) for t, p in ((10.0, 2048), (30.0, 128), (20.0, 128), (25.0, 128))]
    assert pick(rs, 100).decode_tok_s == 25.0
    assert pick(rs, 1000).decode_tok_s == 10.0
    assert pick(rs, 5000) is None


@pytest.mark.parametrize("flag,limit,meets", [
    ("--tpot-p90-ms", 30, False),    # p90 = 40 ms: fails although p50 (20 ms) would pass
    ("--tpot-p90-ms", 50, True),
    ("--tpot-p99-ms", 50, False),    # p99 = 60 ms
    ("--ttft-p90-ms", 150, False),   # prefill samples: nine at 100 ms, one at 1 s -> p90 190 ms
    ("--ttft-p90-ms", 200, True),
])
def test_slo_filter_at_the_percentile_asked(tmp_path, flag, limit, meets):
    rd = write_run(tmp_path / "run", [record(tpot=(0.020, 0.040, 0.060), prefill=[0.1] * 9 + [1.0])])
    res = run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "gpu-a", "--batch", "1",
              "--variants", "baseline", flag, limit, "--format", "json")
    d = as_json(res)
    row = next(r for r in d["ranked"] + d["others"] if r["evidence"] == "measured")
    assert row["meets"] is meets
    assert res.exit_code == (0 if meets else 1)
    name = flag[2:].replace("-ms", "")
    assert any(c["name"] == name for c in row["checks"])


def test_quality_unknown_never_passes(tmp_path):
    # random weights: no KL counts, so a KL budget cannot be met, and the row says why
    rd = write_run(tmp_path / "run", [record(model="synthetic:tiny", kl=0.0, verdict="pass")])
    res = run(tmp_path, "--model", "synthetic:tiny", "--records", rd, "--profiles", "gpu-a", "--max-kl", "1",
              "--format", "json")
    d = as_json(res)
    assert res.exit_code == 1 and not d["ranked"]
    kl = [c for r in d["others"] for c in r["checks"] if c["name"] == "max-kl"]
    assert kl and all(c["status"] == "unknown" and "quality not measured" in c["detail"] for c in kl)


def test_quality_borrowed_only_from_the_same_model_and_variant(tmp_path):
    rd = quality_run(tmp_path / "run")
    q = Quality(__import__("harness.records", fromlist=["load_records"]).load_records(rd), REAL)
    assert q.lookup("int8-wo", "dev-b", "-")[:3] == (0.01, 0.97, "pass")
    assert "measured on gpu-a" in q.lookup("int8-wo", "dev-b", "-")[3]
    assert q.lookup("fp8-dq", "gpu-a", "pytorch")[0] is None
    assert Quality([record(model="other", kl=0.0, verdict="pass")], REAL).lookup("baseline", "gpu-a", "pytorch")[0] is None


def test_binding_constraint_and_claims(tmp_path):
    rd = quality_run(tmp_path / "run")
    res = run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "gpu-a", "--batch", "1",
              "--variants", "baseline,int8-wo,int4-wo", "--max-kl", "0.05", "--format", "json")
    d = as_json(res)
    assert res.exit_code == 0
    assert d["choice"]["variant"] == "int8-wo" and d["choice"]["evidence"] == "measured"
    assert d["binding_constraint"] == "max-kl"
    assert "int4-wo" in d["paragraph"] and "runner-up" in d["paragraph"]
    int4 = next(c for c in d["claims"] if c.startswith("int4-wo"))
    assert "0.57x" in int4 and "misses max-kl" in int4


def test_prices_are_optional(tmp_path):
    rd = quality_run(tmp_path / "run")
    d = as_json(run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "gpu-a", "--batch", "1",
                    "--variants", "baseline", "--format", "json"))
    assert d["objective"] == "energy" and d["choice"]["cost_per_mtok"] is None
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: EUR\nper_hour:\n  gpu-a: 3.6\n")
    d = as_json(run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "gpu-a", "--batch", "1",
                    "--variants", "baseline", "--prices", prices, "--format", "json"))
    assert d["objective"] == "cost" and d["currency"] == "EUR"
    assert d["choice"]["cost_per_mtok"] == pytest.approx(3.6 / (100.0 * 3600) * 1e6)   # 10 per Mtok


def test_no_solution_lists_the_closest_with_what_they_miss(tmp_path):
    rd = quality_run(tmp_path / "run")
    res = run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "gpu-a", "--batch", "1",
              "--variants", "baseline,int8-wo,int4-wo", "--max-kl", "0.05", "--tpot-p90-ms", "1")
    assert res.exit_code == 1
    assert "No deployment meets every constraint" in res.stdout and "### Closest" in res.stdout
    assert "tpot-p90 (TPOT p90 ms 12 > 1)" in res.stdout


@pytest.mark.parametrize("args,words", [
    (["--max-kl", "-1"], "--max-kl"),
    (["--min-top1", "2"], "--min-top1"),
    (["--verdict", "maybe"], "--verdict"),
    (["--tpot-p90-ms", "0"], "--tpot-p90-ms"),
    (["--tokens-per-s", "10", "--users", "4"], "--users"),
    (["--records", "/nonexistent/run"], "--records"),
    (["--objective", "cost"], "--prices"),
    (["--batch", "0,2"], "--batch"),
    (["--model", "synthetic:nope"], "--model"),
])
def test_bad_constraints_exit_2_with_one_line(tmp_path, args, words):
    res = run(tmp_path, *(["--model", REAL] if "--model" not in args else []), *args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_bad_prices_exit_2(tmp_path):
    for text in ("per_hour:\n  no-such-card: 1.0\n", "per_hour:\n  gpu-a: -1\n", "- a list\n"):
        p = tmp_path / "p.yaml"
        p.write_text(text)
        res = run(tmp_path, "--model", REAL, "--profiles", "gpu-a", "--prices", p)
        assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output


def test_users_size_the_replicas(tmp_path):
    rd = write_run(tmp_path / "run", [record("baseline", batch=8, tok_s=800.0)])
    d = as_json(run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "gpu-a", "--batch", "8",
                    "--variants", "baseline", "--users", "20", "--max-devices", "2", "--format", "json"))
    row = next(r for r in d["ranked"] + d["others"] if r["evidence"] == "measured")
    assert row["replicas"] == 3 and row["devices"] == 3 and not row["meets"]


def test_constraints_build_presets():
    c = build(slo="mlperf-interactive")
    assert c.ttft_s == {99: 0.5} and c.tpot_s == {99: 0.03}
    c = build(slo="mlperf-server", tpot={90: 50})
    assert c.tpot_s == {99: 0.1, 90: 0.05}
    with pytest.raises(AdviseError):
        build(slo="nope")


def test_html_section_is_escaped(tmp_path):
    rd = write_run(tmp_path / "run", [record("baseline", profile="<gpu>&co")])
    res = run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "<gpu>&co", "--format", "html")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith('<section class="advice">') and "&lt;gpu&gt;&amp;co" in res.stdout
    assert "<gpu>" not in res.stdout


def test_html_section_goes_into_the_report(tmp_path):
    from harness.advise.build import Question, answer
    from harness.advise.output import to_html
    from harness.profiles.loader import load_profiles
    from harness.records import load_records
    from harness.report.html import render_html

    rd = quality_run(tmp_path / "run")
    profs = load_profiles(write_profiles(tmp_path / "profiles"))
    q = Question(model=REAL, records=[rd], profiles=list(profs.values()), profile_ids={"gpu-a"}, variants="baseline,int8-wo",
                 batches=[1], context=None, constraints=build(max_kl=0.05), objective="energy")
    section = to_html(*answer(q))
    page = render_html(load_records(rd), sections=(section,))
    assert page.count('<section class="advice">') == 1 and page.index("advice") > page.index("</table>")


def test_example_prices_are_placeholders_for_known_profiles():
    from pathlib import Path

    from harness.advise.prices import load_prices
    from harness.profiles.loader import load_profiles

    path = Path(__file__).resolve().parents[1] / "examples" / "prices.example.yaml"
    p = load_prices(path, set(load_profiles(None)))
    assert p.per_hour and set(p.per_hour.values()) == {1.0}
    assert "placeholder" in path.read_text().lower() and "placeholder" in p.currency


def test_verdict_pass_keeps_out_the_failed_variant(tmp_path):
    rd = quality_run(tmp_path / "run")
    d = as_json(run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "gpu-a", "--batch", "1",
                    "--variants", "baseline,int8-wo,int4-wo", "--verdict", "pass", "--format", "json"))
    assert {r["variant"] for r in d["ranked"]} <= {"baseline", "int8-wo"}
    int4 = next(r for r in d["others"] if r["variant"] == "int4-wo" and r["evidence"] == "measured")
    assert [c["name"] for c in int4["checks"] if not c["status"] == "pass"] == ["verdict"]


def test_unknown_profile_is_bad_input(tmp_path):
    res = run(tmp_path, "--model", REAL, "--profiles", "gpu-a,gpu-zz")
    assert res.exit_code == 2 and "gpu-zz" in res.stderr and res.stderr.count("\n") == 1


def test_report_option_writes_the_advice_into_the_runs_report_html(tmp_path):
    rd = quality_run(tmp_path / "run")
    res = run(tmp_path, "--model", REAL, "--records", rd, "--profiles", "gpu-a", "--max-kl", "0.05",
              "--report", rd, profiles=None)
    assert res.exit_code in (0, 1), res.output
    page = (rd / "report.html").read_text(encoding="utf-8")
    assert page.count('<section class="advice">') == 1
    assert (rd / "charts").is_dir()          # the rest of the report is rebuilt from the records as well
