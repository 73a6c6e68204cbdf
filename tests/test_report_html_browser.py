"""report.html opened from disk in headless Chromium (no server, no network): every image decodes
(naturalWidth > 0) and a screenshot is taken. Without a browser the test skips saying how to install
one, except under CI=true, where a missing browser fails."""
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from crafted_runs import make_records, write_run
from harness.cli import main

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]
# marks the body once every image has loaded; injected into a copy, the report itself has no script
PROBE = ("<script>window.addEventListener('load', () => { const i = [...document.images]; "
         "document.body.setAttribute('data-images', i.filter(x => x.complete && x.naturalWidth > 0).length + '/' + "
         "i.length); });</script></body>")


def _browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found:
        return found
    how = "install it with `apt-get install -y chromium` (root) or `make browser`"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no headless Chromium: {how}")
    pytest.skip(f"no headless Chromium: {how}")


def _chromium(browser, tmp_path, *args):
    out = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_report_html_loads_every_image_in_chromium(tmp_path):
    browser = _browser()
    run = write_run(tmp_path / "run", make_records())
    assert CliRunner().invoke(main, ["report", str(run)]).exit_code == 0
    html = (run / "report.html").read_text()
    n = html.count("<img ")
    assert n >= 6
    probed = run / "probed.html"
    probed.write_text(html.replace("</body>", PROBE))
    shot = tmp_path / "report.png"
    dom = _chromium(browser, tmp_path, "--virtual-time-budget=5000", "--window-size=1400,2400", f"--screenshot={shot}",
                    "--dump-dom", probed.as_uri())
    assert f'data-images="{n}/{n}"' in dom
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = os.environ.get("HARNESS_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
