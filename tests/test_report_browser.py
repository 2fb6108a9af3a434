"""The Snakemake report of the tiny run, opened in a real headless browser (Chromium).

`snakemake --report` builds a self-contained HTML page (a React app; every result embedded as a data
URI). The test loads a copy of it with a small probe script appended that, once the app has rendered,
opens the "4. Results" category and shows the results table and a trace plot the way the report's own
buttons do (``app.setView`` with the item's data URI), then writes what the page really displays (the
menu text, the iframe's HTML, the decoded image size) into the DOM, which ``chromium --dump-dom``
prints. A screenshot of the table view must not be blank.

Skips, naming the reason, where no Chromium is installed (``make browser-deps`` installs it as root).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_workflow import TINY_TARGETS, _snakemake  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROME_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)
#: virtual time the page gets to run its scripts (React render, probe steps, data-URI fetch)
VIRTUAL_TIME_MS = 8000
PIPELINE_CATEGORIES = ("1. Tracking", "2. Static and dynamic images", "3. Dynamic representations", "4. Results",
                       "5. Data quality")
TABLE_ITEM = "results/tiny/report/results.html"
QUALITY_ITEM = "results/tiny/report/quality.html"
TRACE_ITEM = "results/tiny/report/regression/trace_woman_video_01.png"

PROBE = """
<script>
(function () {
  const out = {steps: []};
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  function publish() {
    let pre = document.getElementById("affpipe-probe");
    if (!pre) { pre = document.createElement("pre"); pre.id = "affpipe-probe"; pre.style.display = "none";
                document.body.appendChild(pre); }
    pre.textContent = JSON.stringify(out);
  }
  async function show(path, content) {
    app.setView({content: content, contentPath: results[path].data_uri, resultPath: path});
    await wait(400);
  }
  window.addEventListener("load", async function () {
    try {
      await wait(500);
      out.categories = Object.keys(categories);
      app.showCategory("4. Results");
      await wait(400);
      out.menu_text = document.querySelector("#app").innerText;
      await show("__TABLE__", "html");
      const frame = document.querySelector("iframe");
      out.iframe = !!frame;
      out.table_html = frame ? await (await fetch(frame.src)).text() : null;
      out.steps.push("table");
      if (location.hash !== "#table") {
        await show("__TRACE__", "img");
        const img = [...document.querySelectorAll("img")].find((i) => i.src.startsWith("data:image/png"));
        out.trace_img = img ? {width: img.naturalWidth, height: img.naturalHeight, complete: img.complete} : null;
        out.steps.push("trace");
      }
    } catch (err) {
      out.error = String(err && err.stack || err);
    }
    publish();
  });
})();
</script>
"""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


BROWSER = find_browser()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROWSER is None, reason="no Chromium/Chrome on PATH (as root: `make browser-deps`, "
                       "i.e. apt-get install chromium), so the report cannot be opened in a browser"),
]


def chrome(page: Path, profile: Path, *args: str, hash_: str = "") -> subprocess.CompletedProcess:
    cmd = [BROWSER, *CHROME_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={VIRTUAL_TIME_MS}",
           *args, page.as_uri() + hash_]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report_page(tiny_run, tmp_path_factory):
    """The tiny run's report with the probe appended: ``(page, scratch dir)``."""
    work, args = tiny_run
    out = tmp_path_factory.mktemp("report")
    report = out / "report.html"
    res = _snakemake(*args, "--report", str(report), cwd=work, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    html = report.read_text()
    assert "</body>" in html
    probe = PROBE.replace("__TABLE__", TABLE_ITEM).replace("__TRACE__", TRACE_ITEM)
    page = out / "report_probe.html"
    head, _, tail = html.rpartition("</body>")  # the page's own end (data URIs may hold other pages)
    page.write_text(head + probe + "</body>" + tail)
    return page, out


def probe_result(dom: str) -> dict:
    m = re.search(r'<pre id="affpipe-probe"[^>]*>(.*?)</pre>', dom, re.S)
    assert m, "the probe wrote nothing: the report's scripts did not run to the end\n" + dom[-2000:]
    import html

    return json.loads(html.unescape(m.group(1)))


def test_report_shows_results_table_and_trace(report_page, tiny_run):
    page, out = report_page
    res = chrome(page, out / "profile-dom", "--dump-dom")
    assert res.returncode == 0, res.stderr[-3000:]
    got = probe_result(res.stdout)
    assert "error" not in got, got.get("error")
    # every category of the pipeline is in the report (the menu sorts them: numbered in pipeline order)
    assert sorted(got["categories"]) == list(PIPELINE_CATEGORIES), got["categories"]
    assert "Tables" in got["menu_text"] and "Figures" in got["menu_text"], got["menu_text"]
    # the results table is displayed: the iframe holds the table with every experiment of ccc.json
    assert got["iframe"], "no iframe shown for the results table"
    table = got["table_html"]
    assert '<table class="results">' in table and "frames concatenated over the videos" in table
    work, _ = tiny_run
    ccc = json.loads((work / "results/tiny/ccc.json").read_text())
    import html as _html

    for exp in ccc["experiments"].values():
        assert f"<td>{_html.escape(exp['label'])}</td>" in table, exp["label"]
    first = next(iter(ccc["experiments"].values()))
    v = first["partitions"]["test"]["dimensions"]["valence"]["concatenated"]["ccc"]
    assert f"{v:.3f}" in table
    # the trace plot is displayed and decoded by the browser (a real PNG, not a broken image)
    assert got["trace_img"] and got["trace_img"]["complete"], got.get("trace_img")
    assert got["trace_img"]["width"] > 500 and got["trace_img"]["height"] > 300, got["trace_img"]


def test_report_screenshot_of_table_is_not_blank(report_page):
    import numpy as np
    from PIL import Image

    page, out = report_page
    shot = out / "table.png"
    res = chrome(page, out / "profile-shot", f"--screenshot={shot}", "--window-size=1400,900", hash_="#table")
    assert res.returncode == 0 and shot.exists(), res.stderr[-3000:]
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (900, 1400)
    # the navbar and the table's text: many dark pixels and a wide spread, not a white or single-colour page
    assert img.std() > 20, img.std()
    assert (img < 100).mean() > 0.01
