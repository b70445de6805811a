"""Pages that legitimately repeat themselves, and synthetic loops, for the loop-detector tests.

Each page is the Markdown a model that reads it right would write, built the way real documents repeat: an invoice
of identical lines, an empty sign-in form, a table of zeros, a label sheet, a wide table's separator row, a hex dump
of identical lines, a table of contents with long dotted leaders. `write_pdf` prints one as a real PDF page (with a
text layer), so it can go through `internvl ocr` too.
"""
from __future__ import annotations

from pathlib import Path


def _table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(row) for row in rows])


def _pages() -> dict[str, str]:
    widget = ["Widget A, steel, 40 mm", "1", "9.99", "9.99"]
    pages = {
        "invoice-12-identical-rows": "# Invoice 2024-117\n\n" + _table(["Item", "Qty", "Price", "Amount"],
                                                                      [widget] * 12)
                                     + "\n\n**Total: 119.88 EUR**",
        "form-25-empty-rows": "# Visitor log\n\n" + _table(["Date", "Name", "Company", "Signature"],
                                                           [["", "", "", ""]] * 25),
        "zeros-14-rows": "# Quarterly adjustments\n\n" + _table([f"M{i}" for i in range(1, 13)], [["0"] * 12] * 14),
        "labels-30-identical": "# Address labels\n\n" + "\n\n".join(
            ["Jane Doe\n221B Baker Street\nLondon NW1 6XE\nUnited Kingdom"] * 30),
        "table-60-columns": "# Sensor grid\n\n" + _table([f"s{i}" for i in range(1, 61)],
                                                         [[str(i % 10) for i in range(60)]] * 2),
        "hexdump-12-identical-lines": "# Memory dump\n\n```\n" + "\n".join(
            ["00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|"] * 12) + "\n```",
        "dotted-leaders": "# Contents\n\n" + "\n".join(
            f"{title} {'.' * (70 - len(title))} {page}" for page, title in enumerate(
                ["Introduction", "Scope", "Definitions", "Requirements", "Testing", "Annex A", "Annex B",
                 "Bibliography"], start=1)) + "\nIndex " + "." * 150 + " 99",
    }
    return pages


LEGIT_PAGES: dict[str, str] = _pages()

# Loops as a degenerate model writes them: a unit repeated until the budget, after some real text.
LOOP_UNITS: dict[str, str] = {
    "one word": "the ",
    "a cell": "| 0 ",
    "a dotted leader": ".",
    "a line": "Total: 0.00\n",
    "a table row": "| Widget A, steel, 40 mm | 1 | 9.99 | 9.99 |\n",
    "a label": "Jane Doe\n221B Baker Street\nLondon NW1 6XE\n\n",
    "a paragraph": ("The supplier shall deliver the goods to the address given above within thirty days of the "
                    "order date, unless agreed otherwise in writing.\n"),
}
LOOP_PREFIX = "# Statement\n\nAccount 4711, period 2024-03.\n\n"


def write_pdf(path: Path, markdown: str) -> Path:
    """A one-page PDF printing `markdown`'s lines in a monospace font (so the page has a real text layer)."""
    import pymupdf

    lines = markdown.splitlines()
    width = max(595, 40 + 4.2 * max(len(line) for line in lines))
    height = max(842, 60 + 9 * len(lines))
    document = pymupdf.open()
    page = document.new_page(width=width, height=height)
    for number, line in enumerate(lines):
        if line:
            page.insert_text((20, 30 + 9 * number), line, fontname="cour", fontsize=7)
    document.save(path)
    document.close()
    return path
