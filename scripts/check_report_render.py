"""Open a report.html in headless Chromium and check that it renders with every plot loaded.

    python scripts/check_report_render.py runs/quickstart/report.html [--screenshot shot.png]

A copy of the page gets a small script that writes, once the page has loaded in a 1400 px wide window, how many of
its images decoded (naturalWidth > 0) and what runs off the page's right edge (the page's own horizontal overflow,
and each table, figure or image whose right edge passes the window's while no scrolling box holds it), and the
words a table cell breaks across two lines, into the title;
Chromium's --dump-dom returns that title. Exit 0 when every image rendered, nothing overflows and no word is broken.
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
    # a word broken inside a table cell: one of its pieces (between spaces, hyphens, slashes) spans two lines
    "const broken=[];for(const c of document.querySelectorAll('td,th')){const w=document.createTreeWalker(c,4);"
    "for(let n=w.nextNode();n;n=w.nextNode()){for(const m of n.data.matchAll(/[^\\s\\-\\/_,;]+/g)){"
    "const r=document.createRange();r.setStart(n,m.index);r.setEnd(n,m.index+m[0].length);"
    "if(r.getClientRects().length>1&&broken.length<5)broken.push(m[0]);}}}"
    "document.title='rendered:'+i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length"
    "+' overflow:'+wide.join(',')+' broken:'+broken.join(',');});</script>"
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


def broken_words(report: Path) -> list[str]:
    """Words (up to 5) that a 1400 px window breaks across two lines inside a table cell."""
    return probe(report, words=True)[3]


def probe(report: Path, screenshot: Path | None = None, words: bool = False):
    """(images rendered, images, what runs off the page) of the report; with words=True also the words broken
    inside a table cell."""
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
    match = re.search(r"<title>rendered:(\d+)/(\d+) overflow:([^<]*) broken:([^<]*)</title>", dom.stdout)
    if not match:
        raise RuntimeError(f"Chromium did not render the page: {dom.stderr[-500:]}")
    found = (int(match.group(1)), int(match.group(2)), [w for w in match.group(3).split(",") if w])
    return (*found, [w for w in match.group(4).split(",") if w]) if words else found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    loaded, total, wide, broken = probe(args.report, args.screenshot, words=True)
    print(
        f"{args.report}: {loaded}/{total} images rendered; "
        + (f"runs off a {WIDTH} px page: {', '.join(wide)}" if wide else f"nothing runs off a {WIDTH} px page")
        + (f"; words broken inside a table cell: {', '.join(broken)}" if broken else "; no word broken in a cell")
    )
    sys.exit(0 if total and loaded == total and not wide and not broken else 1)


if __name__ == "__main__":
    main()
