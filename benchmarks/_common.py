"""Shared helpers of the benchmark scripts: the cache folder, a generated test PDF, the tiny checkpoint, tables."""
from __future__ import annotations

import io
import random
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"
# Bump when the generated PDF changes, so a stale cached file is never measured by mistake.
PDF_VERSION = 1

A4 = (595.0, 842.0)  # points
WORDS = (
    "invoice total amount customer order delivery payment account balance report quarter revenue margin "
    "shipment warehouse product service contract period statement summary analysis region market growth "
    "the of and to in for on with by from at as is are was were this that which each per net gross tax"
).split()


def setup_paths() -> None:
    """Makes the package and tests/tiny_models.py importable when a script is run from anywhere."""
    for path in (str(REPO), str(REPO / "tests")):
        if path not in sys.path:
            sys.path.insert(0, path)


def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


# ----------------------------------------------------------------------------- the test PDF


def generated_pdf(pages: int) -> Path:
    """A cached `pages`-page PDF of realistic A4 pages (built on first use)."""
    path = cache_dir() / f"doc-v{PDF_VERSION}-{pages}p.pdf"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        build_pdf(tmp, pages)
        tmp.replace(path)  # never leave a half-written file under the cached name
    return path


def build_pdf(path: Path, pages: int) -> None:
    """Text, a ruled table, a shared logo and a per-page photo; every 10th page is landscape A4."""
    import pymupdf

    doc = pymupdf.open()
    logo = _png(_logo_image())
    logo_xref = 0
    for index in range(pages):
        rng = random.Random(index)  # the same document every time it is rebuilt
        width, height = A4 if index % 10 else A4[::-1]
        page = doc.new_page(width=width, height=height)
        # The logo is stored once and referenced by every page, as real letterheads are.
        logo_xref = page.insert_image(pymupdf.Rect(width - 130, 30, width - 40, 75),
                                      stream=logo if not logo_xref else None, xref=logo_xref)
        _write_page(page, index, rng, width, height)
    doc.save(path, deflate=True)  # no garbage collection pass: it is slow on long files and finds nothing here
    doc.close()


def _write_page(page, index: int, rng: random.Random, width: float, height: float) -> None:
    import pymupdf

    page.insert_text((50, 60), f"Quarterly report, section {index + 1}", fontname="hebo", fontsize=16)
    top = _text_block(page, rng, pymupdf.Rect(50, 90, width - 50, height - 60), 3)
    bottom = _draw_table(page, rng, top=top + 15, left=50, right=width - 230)
    photo = pymupdf.Rect(width - 210, top + 15, width - 50, top + 135)
    page.insert_image(photo, stream=_jpeg(_photo_image(rng)))
    _text_block(page, rng, pymupdf.Rect(50, bottom + 20, width - 50, height - 60), 2)
    page.insert_text((width / 2 - 20, height - 30), f"Page {index + 1}", fontname="helv", fontsize=8)


def _text_block(page, rng: random.Random, rect, paragraphs: int) -> float:
    """Writes as many paragraphs as fit in rect (PyMuPDF writes nothing on overflow); returns the text's bottom."""
    texts = [_paragraph(rng) for _ in range(paragraphs)]
    while texts:
        spare = page.insert_textbox(rect, "\n\n".join(texts), fontname="helv", fontsize=9.5)
        if spare >= 0:
            return rect.y1 - spare
        texts.pop()
    return rect.y0


def _paragraph(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(60, 110))]
    return " ".join(words).capitalize() + "."


def _draw_table(page, rng: random.Random, top: float, left: float, right: float) -> float:
    """A 5-column, 12-row ruled table of items and amounts; returns its bottom edge."""
    import pymupdf

    cols, rows, row_h = 5, 12, 16.0
    col_w = (right - left) / cols
    headers = ["Item", "Qty", "Unit", "Net", "Total"]
    for row in range(rows):
        y = top + row * row_h
        for col in range(cols):
            cell = pymupdf.Rect(left + col * col_w, y, left + (col + 1) * col_w, y + row_h)
            page.draw_rect(cell, color=(0.3, 0.3, 0.3), width=0.5)
            text = headers[col] if row == 0 else _cell(rng, col)
            page.insert_text((cell.x0 + 3, cell.y1 - 4.5), text, fontname="hebo" if row == 0 else "helv",
                             fontsize=8)
    return top + rows * row_h


def _cell(rng: random.Random, col: int) -> str:
    if col == 0:
        return rng.choice(WORDS).capitalize()
    if col == 1:
        return str(rng.randint(1, 40))
    return f"{rng.uniform(1, 2000):,.2f}"


def _logo_image():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (360, 180), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 170, 170), fill=(20, 70, 160))
    draw.rectangle((190, 60, 350, 120), fill=(200, 40, 40))
    return image


def _photo_image(rng: random.Random):
    """A 320x240 photo-like picture (gradient plus noise), different on every page."""
    import numpy as np
    from PIL import Image

    gen = np.random.default_rng(rng.randint(0, 2**31))
    y, x = np.mgrid[0:240, 0:320]
    base = np.stack([x * 0.6, y * 0.8, (x + y) * 0.35], axis=-1) + gen.integers(0, 90, 3)
    noisy = base + gen.normal(0, 18, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- the tiny checkpoint


def tiny_checkpoint() -> Path:
    """tests/tiny_models.py's tiny random InternVL (real architecture), built once into the cache."""
    setup_paths()
    from tiny_models import build_tiny_native

    path = cache_dir() / "tiny-internvl"
    if not (path / "preprocessor_config.json").exists():  # written last by build_tiny_native
        build_tiny_native(path)
    return path


# ----------------------------------------------------------------------------- printing


def machine_note() -> str:
    """Cores and the current load: on a shared machine the load explains much of the run-to-run spread."""
    import os

    return f"{os.cpu_count()} CPU cores, 1-min load average {os.getloadavg()[0]:.1f} at start, no GPU used"


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """A plain, aligned text table (first column left-aligned, the figures right-aligned)."""
    cells = [headers] + [[str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [value.rjust(width) for value, width in zip(row[1:], widths[1:])]
        return "  ".join(parts)

    print(line(cells[0]))
    print("  ".join("-" * width for width in widths))
    for row in cells[1:]:
        print(line(row))
