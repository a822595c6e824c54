"""The report as one document model, rendered twice: HTML (report.html, which the PDF is printed from) and Markdown
(report.md). A section is written once, as blocks; every text from a results folder is escaped by the renderer, so
a recipe or file name cannot inject markup into either page.

Blocks: Heading, Para (text with inline `Code` spans and an optional small print), Table (a header row, or a
key-value table whose rows may be verdict badges), Bullets, Image, Risk (a recipe's risk summary with its level).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union


@dataclass
class Code:
    text: str


Inline = Union[str, Code]


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    parts: Sequence[Inline]
    small: bool = False


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    thin: Sequence[dict[int, bool]] = ()  # per row: columns greyed out (rates resting on few false positives)
    key_value: bool = False  # rows are (key, value) pairs: keys as header cells, no header row
    badges: Sequence[int] = ()  # key-value rows whose value is a verdict, shown as a coloured badge


@dataclass
class Bullets:
    items: Sequence[str]


@dataclass
class Image:
    path: Path
    alt: str = ""


@dataclass
class Risk:
    level: str
    text: str


@dataclass
class Document:
    title: str
    css: str = ""
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> "Document":
        self.blocks.extend(b for b in blocks if b is not None)
        return self


def para(*parts: Inline, small: bool = False) -> Para:
    return Para(parts, small)


# ---- HTML -------------------------------------------------------------------------------------------------------
def _inline_html(parts: Sequence[Inline]) -> str:
    return "".join(f"<code>{html.escape(p.text)}</code>" if isinstance(p, Code) else html.escape(p) for p in parts)


def _img_html(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).stem)}">'


def _badge_html(level: str) -> str:
    return f"<span class='badge {html.escape(level.split()[0])}'>{html.escape(level)}</span>"


def _table_html(t: Table) -> str:
    if t.key_value:
        body = "".join(
            f"<tr><th>{html.escape(k)}</th><td>"
            + (_badge_html(str(v)) if i in t.badges else html.escape(str(v)))
            + "</td></tr>"
            for i, (k, v) in enumerate(t.rows)
        )
        return f"<div class='scroll'><table class='kv'>{body}</table></div>"
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.header) + "</tr>"
    rows = []
    for i, row in enumerate(t.rows):
        grey = t.thin[i] if i < len(t.thin) else {}
        rows.append(
            "<tr>"
            + "".join(
                f"<td class='thin'>{html.escape(str(c))}</td>" if grey.get(j) else f"<td>{html.escape(str(c))}</td>"
                for j, c in enumerate(row)
            )
            + "</tr>"
        )
    return f"<div class='scroll'><table>{head}{''.join(rows)}</table></div>"


def to_html(doc: Document) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(doc.title)}</title>"
        f"<style>{doc.css}</style></head><body>"
    ]
    for b in doc.blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            text = _inline_html(b.parts)
            parts.append(f"<p><small>{text}</small></p>" if b.small else f"<p>{text}</p>")
        elif isinstance(b, Table):
            parts.append(_table_html(b))
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in b.items) + "</ul>")
        elif isinstance(b, Image):
            parts.append(_img_html(b.path))
        elif isinstance(b, Risk):
            parts.append(f"<div class='risk {html.escape(b.level)}'>{html.escape(b.text)}</div>")
        else:
            raise TypeError(f"not a report block: {b!r}")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---- Markdown ---------------------------------------------------------------------------------------------------
MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")


def md_escape(text: str) -> str:
    """Markdown text with its active characters backslash-escaped: no raw HTML (<, >), no link or image ([, ]), no
    table cell break (|), no emphasis or code (*, _, `); a newline becomes a space."""
    return MD_SPECIAL.sub(r"\\\1", str(text).replace("\r", " ").replace("\n", " "))


def _inline_md(parts: Sequence[Inline]) -> str:
    return "".join(f"`{p.text.replace('`', '')}`" if isinstance(p, Code) else md_escape(p) for p in parts)


def _row_md(cells) -> str:
    return "| " + " | ".join(md_escape(str(c)) for c in cells) + " |"


def to_markdown(doc: Document, root: Path) -> str:
    """The document in Markdown; images are linked relative to `root` (the results folder)."""
    md = [f"# {md_escape(doc.title)}", ""]
    previous = None
    for b in doc.blocks:
        if isinstance(previous, Risk) and not isinstance(b, Risk):
            md.append("")  # the end of the risk list
        previous = b
        if isinstance(b, Heading):
            if b.level == 1:
                continue  # the title
            md += ["#" * b.level + " " + md_escape(b.text), ""]
        elif isinstance(b, Para):
            md += [_inline_md(b.parts), ""]
        elif isinstance(b, Table):
            if b.key_value:
                md += [_row_md(["", ""]), "|---|---|"] + [
                    f"| {md_escape(k)} | **{md_escape(v)}** |" if i in b.badges else _row_md([k, v])
                    for i, (k, v) in enumerate(b.rows)
                ]
            else:
                md += [_row_md(b.header), "|" + "---|" * len(b.header)]
                for i, row in enumerate(b.rows):
                    grey = b.thin[i] if i < len(b.thin) else {}
                    md.append(_row_md(f"{c} (thin)" if grey.get(j) and c else c for j, c in enumerate(row)))
            md.append("")
        elif isinstance(b, Bullets):
            md += [f"- {md_escape(x)}" for x in b.items] + [""]
        elif isinstance(b, Image):
            md += [f"![{md_escape(b.alt or Path(b.path).stem)}]({Path(b.path).relative_to(root).as_posix()})", ""]
        elif isinstance(b, Risk):
            md += [f"- {md_escape(b.text)}"]
        else:
            raise TypeError(f"not a report block: {b!r}")
    return "\n".join(md).rstrip() + "\n"
