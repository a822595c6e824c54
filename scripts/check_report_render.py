"""Open a report.html in headless Chromium and check that it renders with every plot loaded.

    python scripts/check_report_render.py runs/quickstart/report.html [--screenshot shot.png]

A copy of the page gets a small script that writes, once the page has loaded, how many of its images decoded
(naturalWidth > 0) into the title; Chromium's --dump-dom returns that title. Exit 0 when every image rendered.
Needs Chromium (Debian: apt-get install chromium).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROBE = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
         "document.title='rendered:'+i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;});</script>")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def check(report: Path, screenshot: Path | None = None) -> tuple[int, int]:
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("Chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
        base = FLAGS + [f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000"]
        dom = subprocess.run([browser, *base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        if screenshot is not None:
            subprocess.run([browser, *base, f"--screenshot={screenshot.resolve()}", "--window-size=1200,2400", report.resolve().as_uri()],
                           capture_output=True, timeout=120)
    match = re.search(r"<title>rendered:(\d+)/(\d+)</title>", dom.stdout)
    if not match:
        raise RuntimeError(f"Chromium did not render the page: {dom.stderr[-500:]}")
    return int(match.group(1)), int(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    loaded, total = check(args.report, args.screenshot)
    print(f"{args.report}: {loaded}/{total} images rendered")
    sys.exit(0 if total and loaded == total else 1)


if __name__ == "__main__":
    main()
