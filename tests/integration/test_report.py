"""The HTML report of the smoke study, opened in headless Chromium.

Snakemake's report is a single-page React app: results appear in the DOM only when selected.
The test appends a small probe script to a copy of the report that selects every result
through the app's own state (``app.setView`` / ``app.showCategory``, what a click does), waits
for it to render, and writes what it found into the DOM; ``chromium --dump-dom`` returns it.
No Python package beyond the standard library is needed, only the Debian ``chromium`` package
(CI: ``apt-get install -y --no-install-recommends chromium``).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from snakemake_runner import SMOKE, run_snakemake

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def chromium_present():
    """Skip without Chromium, unless CI demands it (.ci/run sets UNLEARNBENCH_REQUIRE_CHROMIUM):
    there a missing browser is a failure, not a silent skip."""
    if CHROMIUM.exists():
        return
    message = (
        "needs headless Chromium at /usr/bin/chromium: "
        "apt-get install -y --no-install-recommends chromium (or bash .ci/system-packages.sh)"
    )
    if os.environ.get("UNLEARNBENCH_REQUIRE_CHROMIUM"):
        pytest.fail(message)
    pytest.skip(message)


TABLES = ["main_results", "claims", "dp_privacy_utility", "cost", "realworld_secrets"]
FIGURES = [
    "privacy_utility",
    "unlearning_cycles",
    "weight_changes",
    "onion_effect",
    "realworld_memorisation",
    "fisher_scaling",
]

# Runs inside the report page: select every result the way the UI does, record what renders.
PROBE = """
<script>
(async () => {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const decode = (uri) => {
    const bytes = Uint8Array.from(atob(uri.split(",", 2)[1]), (c) => c.charCodeAt(0));
    return new TextDecoder().decode(bytes);
  };
  const out = { results: {}, categories: {} };
  try {
    for (let i = 0; i < 100 && typeof app === "undefined"; i++) await sleep(100);
    for (const [path, entry] of Object.entries(results)) {
      const record = { filename: entry.filename, mime: entry.mime_type,
                       caption: (entry.caption || "").replace(/<[^>]*>/g, " ") };
      if (entry.mime_type.startsWith("image/")) {
        app.setView({ content: "img", contentPath: entry.data_uri });
        await sleep(500);
        const img = [...document.querySelectorAll("img")].find((el) => el.src === entry.data_uri);
        record.shown = !!img;
        if (img && !img.complete) await new Promise((r) => { img.onload = r; img.onerror = r; });
        record.width = img ? img.naturalWidth : 0;
        record.height = img ? img.naturalHeight : 0;
      } else if (entry.mime_type === "text/html") {
        app.setView({ content: "html", contentPath: entry.data_uri });
        await sleep(500);
        const frames = [...document.querySelectorAll("iframe")];
        record.shown = frames.some((el) => el.src === entry.data_uri);
        const doc = new DOMParser().parseFromString(decode(entry.data_uri), "text/html");
        record.rows = doc.querySelectorAll("tbody tr").length;
        record.columns = doc.querySelectorAll("thead th").length;
        record.empty_cells = [...doc.querySelectorAll("tbody td")]
          .filter((td) => !td.textContent.trim()).length;
        // One text node per line, so that adjacent table cells ("811.6", "14.0206") are not
        // read as one string that merely looks like a phone number.
        const walker = doc.createTreeWalker(doc.body, NodeFilter.SHOW_TEXT);
        const parts = [];
        while (walker.nextNode()) parts.push(walker.currentNode.nodeValue);
        record.text = parts.join("\\n");
      }
      out.results[path] = record;
    }
    for (const category of Object.keys(categories)) {
      app.setView({ navbarMode: "menu" });  // back to the menu, as the breadcrumb does
      await sleep(300);
      app.showCategory(category);
      await sleep(500);
      out.categories[category] = document.body.innerText;
    }
    // Leave the first figure on screen for the screenshot.
    const first = Object.values(results).find((e) => e.mime_type === "image/png");
    if (first) app.setView({ content: "img", contentPath: first.data_uri });
  } catch (err) {
    out.error = String(err && err.stack || err);
  }
  const pre = document.createElement("pre");
  pre.id = "unlearnbench-probe";
  pre.style.display = "none";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def chromium(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=60000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def probe_report(report: Path, screenshot: Path) -> dict:
    """Open ``report`` with the probe appended; return the probe's findings."""
    page = report.with_name(report.stem + ".probe.html")
    head, body_end, tail = report.read_text(encoding="utf-8").rpartition("</body>")
    assert body_end, f"{report}: no </body>"
    page.write_text(head + PROBE + body_end + tail, encoding="utf-8")
    dom = chromium("--dump-dom", page.as_uri())
    match = re.search(r'<pre id="unlearnbench-probe"[^>]*>(.*?)</pre>', dom.stdout, re.S)
    assert match, f"probe did not finish:\n{dom.stderr[-3000:]}"
    shot = chromium("--window-size=1400,1000", f"--screenshot={screenshot}", page.as_uri())
    assert screenshot.exists(), shot.stderr[-3000:]
    return json.loads(html.unescape(match.group(1)))


@pytest.fixture(scope="module")
def report_html(smoke_study):
    run_snakemake(smoke_study, "tables_and_figures", "--cores", "2", *SMOKE)
    run_snakemake(smoke_study, "tables_and_figures", "--report", "results/report.html", *SMOKE)
    report = smoke_study / "results/report.html"
    assert report.stat().st_size > 0
    return report


@pytest.fixture(scope="module")
def probed(report_html):
    screenshot = report_html.with_name("report_screenshot.png")
    return probe_report(report_html, screenshot), screenshot


def by_name(findings: dict, name: str, extension: str) -> dict:
    hits = [r for p, r in findings["results"].items() if Path(p).name == f"{name}.{extension}"]
    assert hits, f"{name}.{extension} is not in the report: {sorted(findings['results'])}"
    return hits[0]


def test_every_figure_renders(probed):
    findings, _ = probed
    assert "error" not in findings, findings.get("error")
    for name in FIGURES:
        record = by_name(findings, name, "png")
        assert record["shown"], f"{name}: not displayed"
        assert record["width"] > 200 and record["height"] > 200, f"{name}: {record}"
        assert record["caption"].strip(), f"{name}: no caption"


def test_every_table_renders_with_rows(probed):
    findings, _ = probed
    for name in TABLES:
        record = by_name(findings, name, "html")
        assert record["shown"], f"{name}: not displayed"
        assert record["rows"] > 0 and record["columns"] > 1, f"{name}: empty table"
        assert record["empty_cells"] == 0, f"{name}: {record['empty_cells']} empty cells"
        assert record["caption"].strip(), f"{name}: no caption"


def test_categories_list_every_result(probed):
    findings, _ = probed
    assert set(findings["categories"]) >= {"Tables", "Figures"}
    tables, figures = findings["categories"]["Tables"], findings["categories"]["Figures"]
    for name in TABLES:
        assert name.replace("_", " ") in tables or f"{name}.html" in tables, name
    for name in FIGURES:
        assert name.replace("_", " ") in figures or f"{name}.png" in figures, name


def test_no_unmasked_address_in_report(report_html, probed):
    """Neither the page nor any embedded result holds an e-mail address or phone number."""
    from unlearnbench.pii import EMAIL_RE, PHONE_RE

    findings, _ = probed
    for path, record in findings["results"].items():
        text = record.get("text", "")
        assert not EMAIL_RE.search(text), path
        assert not PHONE_RE.search(text), path
    page = report_html.read_text(encoding="utf-8")
    for uri in re.findall(r"data:text/(?:html|csv)[^,]*;base64,([A-Za-z0-9+/=]+)", page):
        assert not EMAIL_RE.search(base64.b64decode(uri).decode("utf-8", "replace"))


def test_screenshot_saved(probed):
    _, screenshot = probed
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
