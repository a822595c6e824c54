"""The report's document model: one set of blocks, two renderings that say the same and escape every name."""

from pathlib import Path

from diffmia.evaluate.document import Bullets, Code, Document, Heading, Risk, Table, para, to_html, to_markdown


def test_one_document_two_renderings(tmp_path):
    doc = Document("audit <x>").add(
        Heading("Sign-off summary"),
        Table([], [("recipe", "no-defense|<b>"), ("verdict", "HIGH")], key_value=True),
        Risk("HIGH", "r1: HIGH measured leakage"),
        Risk("LOW", "r2: LOW"),
        Heading("Results"),
        Table(["attack", "AUC"], [["pia", "0.99"], ["pian", "0.51"]], thin=[{}, {1: True}]),
        para("rerun ", Code("diffmia report"), " on [this] folder"),
        Bullets(["a_b", "c"]),
    )
    page, md = to_html(doc), to_markdown(doc, Path(tmp_path))
    for text in ("Sign-off summary", "Results", "r1: HIGH measured leakage", "pia"):
        assert text in page and text in md
    assert "<b>" not in page and "&lt;b&gt;" in page  # names are escaped in both
    assert "\\<b\\>" in md and "no-defense\\|" in md
    assert "<table class='kv'><tr><th>recipe</th>" in page  # a key-value table: the keys are header cells
    assert "<td class='thin'>0.51</td>" in page and "0.51 (thin)" in md
    assert "<code>diffmia report</code>" in page and "`diffmia report`" in md and "\\[this\\]" in md
    assert "- r2: LOW\n\n## Results" in md  # the risk list ends before the next section
    assert page.count("<div class='scroll'>") == 2  # a wide table scrolls in its box, its words stay whole
