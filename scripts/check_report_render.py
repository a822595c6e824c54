"""Open a report.html in headless Chromium and check that it renders with every plot loaded.

    python scripts/check_report_render.py runs/quickstart/report.html [--screenshot shot.png]

A copy of the page gets a small script that writes, once the page has loaded in a 1400 px wide window, how many of
its images decoded (naturalWidth > 0) and what runs off the page's right edge (the page's own horizontal overflow,
and each table, figure or image whose right edge passes the window's while no scrolling box holds it) into the title;
Chromium's --dump-dom returns that title. Exit 0 when every image rendered and nothing overflows.
Needs Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH = 1400
PROBE = (
    "<script>window.addEventListener('load',()=>{const i=[...document.images];"
    "const W=document.documentElement.clientWidth;"
    "const held=e=>{for(let p=e.parentElement;p;p=p.parentElement){const o=getComputedStyle(p).overflowX;"
    "if(o==='auto'||o==='scroll'||o==='hidden')return true;}return false;};"
    "const wide=[...document.querySelectorAll('table,img,figure,pre,svg')].filter("
    "x=>x.getBoundingClientRect().right>W+1&&!held(x)).map(x=>x.tagName.toLowerCase()+(x.id?'#'+x.id:''));"
    "if(document.documentElement.scrollWidth>W+1)wide.unshift('page:'+document.documentElement.scrollWidth+'px');"
    "document.title='rendered:'+i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length"
    "+' overflow:'+wide.join(',');});</script>"
)


def chromium() -> str | None:
    from diffmia.evaluate.report import chromium as find

    return find()


def check(report: Path, screenshot: Path | None = None) -> tuple[int, int]:
    """(images rendered, images) of the report; see overflow() for what runs off the page."""
    loaded, total, _ = probe(report, screenshot)
    return loaded, total


def overflow(report: Path) -> list[str]:
    """What runs off the right edge of a 1400 px window: 'page:WIDTHpx' and the tag (#id) of each element."""
    return probe(report)[2]


def probe(report: Path, screenshot: Path | None = None) -> tuple[int, int, list[str]]:
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("Chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
        base = FLAGS + [f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000", f"--window-size={WIDTH},2000"]
        dom = subprocess.run([browser, *base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        if screenshot is not None:
            subprocess.run(
                [
                    browser,
                    *base[:-1],
                    f"--screenshot={screenshot.resolve()}",
                    f"--window-size={WIDTH},2400",
                    report.resolve().as_uri(),
                ],
                capture_output=True,
                timeout=120,
            )
    match = re.search(r"<title>rendered:(\d+)/(\d+) overflow:([^<]*)</title>", dom.stdout)
    if not match:
        raise RuntimeError(f"Chromium did not render the page: {dom.stderr[-500:]}")
    return int(match.group(1)), int(match.group(2)), [w for w in match.group(3).split(",") if w]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    loaded, total, wide = probe(args.report, args.screenshot)
    print(
        f"{args.report}: {loaded}/{total} images rendered; "
        + (f"runs off a {WIDTH} px page: {', '.join(wide)}" if wide else f"nothing runs off a {WIDTH} px page")
    )
    sys.exit(0 if total and loaded == total and not wide else 1)


if __name__ == "__main__":
    main()
