"""User-supplied strings in report.md and compare tables: escaped by one helper, fmt.md."""
import re

from harness.records import QualityDetail, Record
from harness.report.compare import compare, render
from harness.report.fmt import NA, md
from harness.report.markdown import render_report

NASTY = "a|b<script>alert(1)</script>&x\nrow"


def _r(**kw):
    base = dict(model=NASTY, variant="int8-wo@/tmp/po|licy<1>.yaml", backend="pytorch", profile="p", batch_size=1,
                prompt_tokens=8, new_tokens=4, decode_tok_s=10.0)
    base.update(kw)
    return Record(**base)


def _cells(line: str) -> list[str]:
    """Columns of a Markdown table row as GitHub splits them: on pipes not escaped by a backslash."""
    return re.split(r"(?<!\\)\|", line.strip().strip("|"))


def test_md_escapes_pipes_html_and_newlines():
    assert md("a|b<script>") == r"a\|b&lt;script&gt;"
    assert md("x & y\r\nz") == "x &amp; y  z"
    assert md(r"C:\m|x") == r"C:\\m\|x"          # a backslash cannot un-escape the pipe after it
    assert md("`code`") == r"\`code\`"
    assert md(None) == NA and md("") == "" and md(3) == "3"


def test_report_md_escapes_model_variant_reason_and_corpus():
    recs = [_r(variant="baseline"), _r(),
            _r(batch_size=2, status="failed", reason="RuntimeError: x|y\n<b>bold</b>"),
            _r(variant="int4-wo", quality_verdict="fail", quality=QualityDetail(reason="kl > 0.1 | & <b>"))]
    text = render_report(recs, {"run_id": "r<1>", "corpus": "my|corpus<i>.txt", "profile": "p|q"})
    assert "<script>" not in text and "<b>" not in text and "<i>" not in text and "<1>" not in text
    assert "&lt;script&gt;" in text and "a\\|b" in text and "my\\|corpus&lt;i&gt;.txt" in text
    results = [ln for ln in text.splitlines() if ln.startswith("| a\\|b")]
    header = next(ln for ln in text.splitlines() if ln.startswith("| model | variant | backend | batch"))
    assert results and all(len(_cells(ln)) == len(_cells(header)) for ln in results[:3])
    quality = [ln for ln in text.splitlines() if "kl &gt; 0.1" in ln]
    assert len(quality) == 1 and "\\| &amp; &lt;b&gt;" in quality[0]
    # the failure reason stays on its list item's line
    (failed,) = [ln for ln in text.splitlines() if "**failed**" in ln]
    assert "x\\|y &lt;b&gt;bold&lt;/b&gt;" in failed


def test_compare_table_escapes_names():
    text = render(compare([_r()], [_r(decode_tok_s=5.0)], {"decode_tok_s": 0.05}))
    header, _, row = text.splitlines()
    assert "<script>" not in row and len(_cells(row)) == len(_cells(header))
