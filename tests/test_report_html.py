"""report.html: self-contained, escaped, summary first; `harness report A B --out` merges runs by
machine and profile."""
import base64
import re

from click.testing import CliRunner

from crafted_runs import CPU_PROV, make_records, write_run
from harness.cli import main
from harness.report.html import render_html, summary


def test_summary_rows_per_variant_with_ratios_verdicts_and_reasons():
    rows = {s.variant: s for s in summary(make_records())}
    assert set(rows) == {"baseline", "int8-wo", "int4-wo", "fp8-wo", "sparse-2:4"}
    assert rows["int8-wo"].decode_ratio == "1.50x" and rows["int8-wo"].weights_ratio == "0.50x"
    assert rows["int8-wo"].decode_tok_s == "4,800.0 (b32)" and rows["int4-wo"].verdict == "fail"
    assert rows["sparse-2:4"].cells_ok == 0
    assert rows["sparse-2:4"].problems == ["batch 1 prompt 16: unsupported: needs <sm80> & cutlass"]


def test_html_escapes_every_user_string_and_embeds_images():
    recs = make_records(model="<script>alert(1)</script>", prov=CPU_PROV, profile="cpu-generic")
    fake_png = base64.b64encode(b"\x89PNG fake").decode()

    class C:
        name, caption, info = "x", "cap <b>", {"title": "t & <i>"}

    html = render_html(recs, [(C, fake_png)])
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "AMD EPYC &lt;test &amp; co&gt;" in html and "needs &lt;sm80&gt; &amp; cutlass" in html
    assert f'src="data:image/png;base64,{fake_png}"' in html and "cap &lt;b&gt;" in html
    assert html.index('id="summary"') < html.index('id="cells"')


def test_report_command_writes_self_contained_html(tmp_path):
    run = write_run(tmp_path / "a", make_records())
    r = CliRunner().invoke(main, ["report", str(run)])
    assert r.exit_code == 0, r.output
    html = (run / "report.html").read_text()
    imgs = re.findall(r'<img alt="[^"]*" src="([^"]+)"', html)
    assert len(imgs) == len(list((run / "charts").glob("*.png"))) >= 6
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    assert base64.b64decode(imgs[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html    # opens from disk, no network


def test_merged_report_of_a_cpu_and_a_gpu_run(tmp_path):
    gpu = write_run(tmp_path / "gpu", make_records(run_id="gpu", batches=(1,)))
    cpu = write_run(tmp_path / "cpu", make_records(run_id="cpu", profile="cpu-generic", prov=CPU_PROV, batches=(1,),
                                                   scale=0.1), profile="cpu-generic")
    r = CliRunner().invoke(main, ["report", str(gpu), str(cpu), "--out", str(tmp_path / "both")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "both" / "report.md").read_text()
    header = next(l for l in md.splitlines() if "decode tok/s" in l)
    assert "machine: ?" not in md and [c.strip() for c in header.split("|")][1:3] == ["machine", "profile"]
    assert "NVIDIA H200" in md and "AMD EPYC &lt;test &amp; co&gt;" in md and "cpu-generic" in md
    rows = [l for l in md.splitlines() if "| int8-wo" in l]
    assert len(rows) == 2 and all("1.50x" in l for l in rows)     # each against its own machine's baseline
    html = (tmp_path / "both" / "report.html").read_text()
    assert html.count("<td>int8-wo</td>") >= 2


def test_several_runs_need_out(tmp_path):
    a, b = write_run(tmp_path / "a", make_records()), write_run(tmp_path / "b", make_records())
    r = CliRunner().invoke(main, ["report", str(a), str(b)])
    assert r.exit_code == 2 and "--out" in r.output
