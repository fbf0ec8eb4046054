"""The demo's weekly page in a real browser: the first screen, and printed on A4.

Headless Chromium, driven directly (no browser library): a 1280x800 screenshot of the demo's
last week, a layout probe (the same page plus a script that records where every NEW item and
open breach decision ends, read back with --dump-dom) and print-to-PDF, whose pages are
counted from the PDF itself. Skips when chromium is not installed (Debian: `apt-get install -y
chromium`).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from m365guard.config import load_policy
from m365guard.demo import DemoResult, run_demo

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian: apt-get install -y chromium)")
WIDTH, HEIGHT = 1280, 800
A4_POINTS = (595.3, 841.9)
PROBE = """<script>
const items = [...document.querySelectorAll('.new, .breach-open')].map(el => {
  const row = el.closest('tr') || el;
  return {kind: el.classList.contains('new') ? 'new' : 'breach',
          bottom: row.getBoundingClientRect().bottom};
});
const out = document.createElement('pre');
out.id = 'probe-out';
out.textContent = JSON.stringify({height: window.innerHeight, items: items});
document.body.appendChild(out);
</script>"""


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    policy = load_policy(REPO / "policies.toml")
    return run_demo(policy, tmp_path_factory.mktemp("browser") / "out")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def pdf_pages(data: bytes) -> list[tuple[float, float]]:
    """The size of every page object in a PDF (Skia writes page dictionaries uncompressed)."""
    pages = []
    for match in re.finditer(rb"/Type\s*/Page(?![s\w]).*?endobj", data, re.S):
        box = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", match.group(0))
        assert box is not None, "a page without a MediaBox"
        pages.append((float(box.group(1)), float(box.group(2))))
    count = re.search(rb"/Type\s*/Pages.*?/Count\s+(\d+)", data, re.S)
    assert count is not None and int(count.group(1)) == len(pages)
    return pages


def test_first_screen_shows_every_new_item_and_breach_decision(demo: DemoResult,
                                                               tmp_path: Path) -> None:
    page = demo.weekly_html.read_text(encoding="utf-8")
    new_items = page.count('class="new"')
    assert new_items >= 1, "the demo's last week should have new findings"
    shot = tmp_path / "first-screen.png"
    chromium(tmp_path / "profile", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}",
             demo.weekly_html.as_uri())
    assert png_size(shot) == (WIDTH, HEIGHT)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path / "profile", f"--window-size={WIDTH},{HEIGHT}", "--dump-dom",
                   probe_page.as_uri()).stdout
    found = re.search(r'<pre id="probe-out">(.*?)</pre>', dom, re.S)
    assert found is not None, "the probe did not run"
    probe = json.loads(html.unescape(found.group(1)))
    # the viewport a 1280x800 window leaves once the browser's own bars are drawn
    visible = probe["height"]
    assert 500 < visible <= HEIGHT, probe
    kinds = [item["kind"] for item in probe["items"]]
    assert kinds.count("new") == new_items
    assert kinds.count("breach") == page.count('class="breach-open"')
    below = [item for item in probe["items"] if item["bottom"] > visible]
    assert not below, f"below the first screen: {below}"


def test_prints_on_at_most_two_a4_pages(demo: DemoResult, tmp_path: Path) -> None:
    pdf = tmp_path / "weekly.pdf"
    chromium(tmp_path / "profile", "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
             demo.weekly_html.as_uri())
    pages = pdf_pages(pdf.read_bytes())
    assert 1 <= len(pages) <= 2, f"{len(pages)} pages"
    for width, height in pages:
        assert abs(width - A4_POINTS[0]) < 2 and abs(height - A4_POINTS[1]) < 2
