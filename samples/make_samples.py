"""Sample inputs: (re)generates every file in samples/ deterministically, so a newcomer has real documents to try.

Run from anywhere: `python samples/make_samples.py` (or `--out DIR` to write elsewhere). Every random
choice uses a fixed seed and no file embeds a creation date, so reruns give byte-identical files.
"""
from __future__ import annotations

import argparse
import io
import math
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent
A4 = (595, 842)  # points

VENDOR = "ACME Office Supplies GmbH"
VENDOR_ADDRESS = ["Industriestraße 12", "70565 Stuttgart", "Germany", "VAT ID: DE123456789"]
CUSTOMER = ["Beispiel Architekten GmbH", "Attn. Accounts Payable", "Lindenstraße 5", "80331 München", "Germany"]
INVOICE_NO = "INV-2024-0042"
INVOICE_DATE = "2024-03-15"
DUE_DATE = "2024-04-14"
VAT_RATE = Decimal("0.19")
# (description, quantity, unit price in EUR)
LINE_ITEMS = [
    ("Copy paper A4, 80 gsm, 500 sheets", 10, Decimal("4.90")),
    ("Ballpoint pens, blue, box of 50", 2, Decimal("12.50")),
    ("Stapler, heavy duty", 1, Decimal("18.75")),
    ("Lever arch files 8 cm, pack of 10", 3, Decimal("15.20")),
    ("Whiteboard markers, set of 4", 5, Decimal("6.40")),
]


def cents(value: Decimal) -> Decimal:
    """Commercial rounding to whole cents (half up, as invoices do, not banker's rounding)."""
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def eur(value: Decimal) -> str:
    """`1,234.56` style amounts, matching the tiny test models' training text."""
    return f"{value:,.2f}"


def invoice_totals() -> tuple[Decimal, Decimal, Decimal]:
    """Subtotal, VAT and total of LINE_ITEMS; the README quotes these, so they must come from one place."""
    subtotal = sum((cents(qty * price) for _, qty, price in LINE_ITEMS), Decimal("0"))
    vat = cents(subtotal * VAT_RATE)
    return subtotal, vat, subtotal + vat


# ---------------------------------------------------------------- invoice.pdf (born-digital, text layer)

def _text_right(page: pymupdf.Page, right_x: float, y: float, text: str, font: str = "helv", size: float = 10) -> None:
    """Right-aligned text, so amount columns line up on the decimal point like a real invoice."""
    width = pymupdf.get_text_length(text, fontname=font, fontsize=size)
    page.insert_text((right_x - width, y), text, fontname=font, fontsize=size)


def _invoice_header(page: pymupdf.Page) -> None:
    page.insert_text((50, 70), VENDOR, fontname="hebo", fontsize=16)
    for i, line in enumerate(VENDOR_ADDRESS):
        page.insert_text((50, 88 + 13 * i), line, fontname="helv", fontsize=9)
    page.insert_text((400, 70), "INVOICE", fontname="hebo", fontsize=20)
    details = [("Invoice no.:", INVOICE_NO), ("Date:", INVOICE_DATE), ("Due date:", DUE_DATE), ("Currency:", "EUR")]
    for i, (label, value) in enumerate(details):
        page.insert_text((400, 92 + 14 * i), label, fontname="helv", fontsize=9)
        _text_right(page, 545, 92 + 14 * i, value, size=9)
    page.insert_text((50, 175), "Bill to:", fontname="hebo", fontsize=10)
    for i, line in enumerate(CUSTOMER):
        page.insert_text((50, 190 + 13 * i), line, fontname="helv", fontsize=10)


def _invoice_table(page: pymupdf.Page, top: float) -> float:
    """Draws the line-item table with ruled lines; returns the y just below it."""
    left, right, row_h = 50, 545, 20
    columns = [(55, "Pos."), (90, "Description"), (345, "Qty"), (400, "Unit price"), (480, "Amount")]
    page.draw_rect(pymupdf.Rect(left, top, right, top + row_h), color=(0, 0, 0), fill=(0.88, 0.88, 0.88), width=0.5)
    for x, title in columns:
        page.insert_text((x, top + 14), title, fontname="hebo", fontsize=10)
    y = top + row_h
    for pos, (desc, qty, price) in enumerate(LINE_ITEMS, start=1):
        page.insert_text((55, y + 14), str(pos), fontname="helv", fontsize=10)
        page.insert_text((90, y + 14), desc, fontname="helv", fontsize=10)
        _text_right(page, 370, y + 14, str(qty))
        _text_right(page, 455, y + 14, eur(price))
        _text_right(page, 540, y + 14, eur(cents(qty * price)))
        y += row_h
        page.draw_line((left, y), (right, y), color=(0.6, 0.6, 0.6), width=0.5)
    # Vertical rules between columns make it a real grid, which is what table OCR has to cope with.
    for x in (left, 85, 335, 380, 465, right):
        page.draw_line((x, top), (x, y), color=(0, 0, 0), width=0.5)
    page.draw_line((left, y), (right, y), color=(0, 0, 0), width=0.5)
    return y


def _invoice_totals(page: pymupdf.Page, top: float) -> None:
    subtotal, vat, total = invoice_totals()
    rows = [("Subtotal", eur(subtotal), "helv"), (f"VAT {VAT_RATE * 100:.0f}%", eur(vat), "helv"),
            ("Total (EUR)", eur(total), "hebo")]
    for i, (label, amount, font) in enumerate(rows):
        y = top + 20 + 16 * i
        page.insert_text((380, y), label, fontname=font, fontsize=10)
        _text_right(page, 540, y, amount, font=font)
    page.draw_line((380, top + 40), (545, top + 40), color=(0, 0, 0), width=0.8)
    page.insert_text((50, top + 100), "Thank you for your order!", fontname="helv", fontsize=10)
    page.insert_text((50, 800), f"{VENDOR} - Page 1 of 2", fontname="helv", fontsize=8)


def _invoice_terms(page: pymupdf.Page) -> None:
    _, _, total = invoice_totals()
    page.insert_text((50, 70), "Payment terms", fontname="hebo", fontsize=14)
    terms = [
        f"Please pay {eur(total)} EUR by {DUE_DATE} (30 days net) quoting invoice number {INVOICE_NO}.",
        "2% early-payment discount if paid within 10 days of the invoice date.",
        "Bank: Commerzbank Stuttgart   IBAN: DE89 3704 0044 0532 0130 00   BIC: COBADEFFXXX",
        "Late payments incur interest of 9 percentage points above the base rate.",
    ]
    for i, line in enumerate(terms):
        page.insert_text((50, 100 + 16 * i), line, fontname="helv", fontsize=10)
    paragraph = (
        "All goods remain our property until paid in full. Please check the delivery on receipt and report "
        "any damage or missing items within 14 days; we will replace them free of charge. Returns of unopened "
        "items are accepted within 30 days. For questions about this invoice contact accounts@acme-office.example "
        "or call +49 711 555 0100, Monday to Friday, 8:00 to 17:00."
    )
    page.insert_text((50, 200), "Terms and conditions", fontname="hebo", fontsize=12)
    page.insert_textbox(pymupdf.Rect(50, 210, 545, 330), paragraph, fontname="helv", fontsize=10, lineheight=1.4)
    page.insert_text((50, 800), f"{VENDOR} - Page 2 of 2", fontname="helv", fontsize=8)


def make_invoice(out_dir: Path) -> Path:
    """invoice.pdf: a 2-page A4 invoice with a real text layer (base-14 Helvetica, ruled table)."""
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    _invoice_header(page)
    _invoice_totals(page, _invoice_table(page, 280))
    _invoice_terms(doc.new_page(width=A4[0], height=A4[1]))
    # Empty dates and no new /ID keep the bytes identical between runs.
    doc.set_metadata({"title": f"Invoice {INVOICE_NO}", "author": VENDOR, "creationDate": "", "modDate": ""})
    path = out_dir / "invoice.pdf"
    doc.save(path, garbage=3, deflate=True, no_new_id=True)
    return path


# ---------------------------------------------------------------- scanned-letter.pdf (raster only)

def _letter_lines() -> list[tuple[str, int]]:
    """(text, font size in px at 150 DPI) per line; ASCII only, because PIL's built-in font has no umlauts."""
    _, _, total = invoice_totals()
    return [
        ("ACME Office Supplies GmbH", 40), ("Industriestrasse 12, 70565 Stuttgart, Germany", 24), ("", 24),
        ("Beispiel Architekten GmbH", 26), ("Lindenstrasse 5", 26), ("80331 Muenchen", 26), ("", 26),
        ("Stuttgart, 2 April 2024", 26), ("", 26),
        (f"Reminder: invoice {INVOICE_NO}", 30), ("", 26),
        ("Dear Sir or Madam,", 26), ("", 26),
        (f"according to our records, invoice {INVOICE_NO} of 15 March 2024", 26),
        (f"for {eur(total)} EUR is due on 14 April 2024. If you have already paid,", 26),
        ("please disregard this letter. Otherwise we kindly ask you to transfer", 26),
        ("the amount to our account at Commerzbank Stuttgart,", 26),
        ("IBAN DE89 3704 0044 0532 0130 00, quoting the invoice number.", 26), ("", 26),
        ("Should you have any questions, please call us on +49 711 555 0100.", 26), ("", 26),
        ("Kind regards,", 26), ("", 26), ("", 26),
        ("Maria Schneider", 26), ("Accounts Receivable", 26),
    ]


def _letter_page(dpi: int) -> Image.Image:
    """The clean printed page: black text on white at `dpi`, before any scanning damage."""
    width, height = round(A4[0] / 72 * dpi), round(A4[1] / 72 * dpi)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    margin, y = round(dpi * 0.9), round(dpi * 0.8)
    for text, size in _letter_lines():
        font = ImageFont.load_default(size=round(size * dpi / 150))
        draw.text((margin, y), text, fill=20, font=font)
        y += round(size * 1.55 * dpi / 150)
    return page


def _scan_damage(page: Image.Image, seed: int) -> Image.Image:
    """Tilt, grey paper, a shadowed edge, sensor noise and dust: what a cheap flatbed scan looks like."""
    rng = np.random.default_rng(seed)
    tilted = page.rotate(0.7, resample=Image.Resampling.BICUBIC, fillcolor=255)
    ink = np.asarray(tilted, dtype=np.float32) / 255.0
    height, width = ink.shape
    # Paper is grey rather than white, a little darker towards the binding edge.
    paper = 226 - 18 * np.clip(1 - np.arange(width) / (0.06 * width), 0, 1)[None, :]
    pixels = paper * ink + 25 * (1 - ink)
    pixels += rng.normal(0, 4, size=pixels.shape)
    dust = rng.random(pixels.shape) < 0.0004
    pixels[dust] = rng.uniform(40, 140, size=int(dust.sum()))
    scan = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
    return scan.filter(ImageFilter.GaussianBlur(0.6))


def make_scanned_letter(out_dir: Path, dpi: int = 150) -> Path:
    """scanned-letter.pdf: one A4 page whose only content is a grayscale JPEG scan (no text layer)."""
    scan = _scan_damage(_letter_page(dpi), seed=1503)
    buffer = io.BytesIO()
    scan.save(buffer, format="JPEG", quality=70, optimize=True)
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    # Passing the JPEG bytes through keeps them as DCTDecode, as a scanner's PDF would.
    page.insert_image(page.rect, stream=buffer.getvalue())
    doc.set_metadata({"title": "Scanned letter", "creator": "Flatbed Scanner", "creationDate": "", "modDate": ""})
    path = out_dir / "scanned-letter.pdf"
    doc.save(path, garbage=3, deflate=True, no_new_id=True)
    return path


# ---------------------------------------------------------------- receipt.jpg (photo of a receipt)

RECEIPT_ITEMS = [("Cappuccino", Decimal("3.50")), ("Croissant", Decimal("2.20")), ("Orange juice", Decimal("3.90")),
                 ("Bagel cream cheese", Decimal("4.25")), ("Water 0.5l", Decimal("1.80"))]
RECEIPT_WIDTH = 32  # characters per line, like a 58 mm till roll


def _receipt_lines() -> list[str]:
    """The receipt as fixed-width text lines; the VAT is the German 7% included in the gross prices."""
    total = sum((price for _, price in RECEIPT_ITEMS), Decimal("0"))
    vat = cents(total * Decimal("7") / Decimal("107"))

    def row(left: str, right: str) -> str:
        return left + right.rjust(RECEIPT_WIDTH - len(left))

    rule = "-" * RECEIPT_WIDTH
    return [
        "CORNER CAFE & BAKERY".center(RECEIPT_WIDTH), "Koenigstr. 28, Stuttgart".center(RECEIPT_WIDTH),
        "Tel 0711 555 0199".center(RECEIPT_WIDTH), "", row("2024-03-15", "08:42"), row("Receipt", "#0815"), rule,
        *[row(name, eur(price)) for name, price in RECEIPT_ITEMS], rule,
        row("TOTAL EUR", eur(total)), row("incl. VAT 7%", eur(vat)), "", row("Card (Visa **** 4242)", eur(total)),
        rule, "Thank you for your visit!".center(RECEIPT_WIDTH), "See you soon".center(RECEIPT_WIDTH),
    ]


def _draw_monospace(draw: ImageDraw.ImageDraw, origin: tuple[int, int], text: str, font: ImageFont.FreeTypeFont,
                    cell: int) -> None:
    """Places each character centred in a fixed-width cell: a till printer look from a proportional font."""
    x0, y = origin
    for i, ch in enumerate(text):
        if ch != " ":
            width = draw.textlength(ch, font=font)
            draw.text((x0 + i * cell + (cell - width) / 2, y), ch, fill=35, font=font)


def _receipt_paper() -> Image.Image:
    """The printed receipt on its own: warm white paper, an RGBA strip so it can be rotated onto a table."""
    font, cell, line_h, margin = ImageFont.load_default(size=22), 14, 30, 22
    lines = _receipt_lines()
    width, height = RECEIPT_WIDTH * cell + 2 * margin, len(lines) * line_h + 2 * margin + 20
    paper = Image.new("RGBA", (width, height), (250, 248, 240, 255))
    draw = ImageDraw.Draw(paper)
    for i, text in enumerate(lines):
        _draw_monospace(draw, (margin, margin + i * line_h), text, font, cell)
    return paper


def _table_texture(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A dark brown textured table top: smooth grain stripes plus blurred noise, cheap for JPEG to store."""
    width, height = size
    grain = np.sin(np.arange(height)[:, None] / 7.0 + 3 * np.sin(np.arange(width)[None, :] / 90.0))
    noise = np.asarray(Image.fromarray(rng.integers(0, 255, (height // 8, width // 8), dtype=np.uint8))
                       .resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    shade = 70 + 12 * grain + 25 * noise
    rgb = np.stack([shade, shade * 0.72, shade * 0.5], axis=-1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")


def make_receipt(out_dir: Path) -> Path:
    """receipt.jpg: a till receipt photographed on a dark table, tilted, slightly blurred and noisy."""
    rng = np.random.default_rng(4242)
    paper = _receipt_paper().rotate(-3.0, resample=Image.Resampling.BICUBIC, expand=True)
    photo = _table_texture((paper.width + 220, paper.height + 160), rng)
    # A soft shadow under the paper sells the "photo" look and gives edge detection something realistic.
    shadow = Image.new("L", photo.size, 0)
    shadow.paste(paper.getchannel("A"), (118, 88))
    photo.paste((20, 14, 10), mask=shadow.filter(ImageFilter.GaussianBlur(10)).point(lambda v: v * 0.6))
    photo.paste(paper, (105, 75), mask=paper)
    pixels = np.asarray(photo.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)
    pixels += rng.normal(0, 3, size=pixels.shape[:2])[..., None]
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    path = out_dir / "receipt.jpg"
    photo.save(path, format="JPEG", quality=85, optimize=True)
    return path


# ---------------------------------------------------------------- chart.png (bar chart)

CHART_TITLE = "Quarterly revenue (EUR million)"
CHART_DATA = [("Q1", 12.5), ("Q2", 15.0), ("Q3", 9.8), ("Q4", 18.2)]


def _centered(draw: ImageDraw.ImageDraw, x: float, y: float, text: str, font: ImageFont.FreeTypeFont,
              fill: str = "#222222") -> None:
    draw.text((x, y), text, fill=fill, font=font, anchor="ms")


def make_chart(out_dir: Path) -> Path:
    """chart.png: a labelled vertical bar chart of CHART_DATA with axes, ticks and gridlines."""
    width, height = 800, 500
    left, right, top, bottom = 90, 760, 80, 420
    y_max, step = 20.0, 5.0
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    small, label, title = (ImageFont.load_default(size=s) for s in (16, 18, 24))
    _centered(draw, width / 2, 45, CHART_TITLE, title)

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * value / y_max

    for i in range(int(y_max / step) + 1):
        y = y_of(i * step)
        draw.line([(left, y), (right, y)], fill="#dddddd", width=1)
        draw.line([(left - 6, y), (left, y)], fill="#222222", width=2)
        draw.text((left - 12, y), f"{i * step:g}", fill="#222222", font=small, anchor="rm")
    slot = (right - left) / len(CHART_DATA)
    for i, (quarter, value) in enumerate(CHART_DATA):
        cx = left + slot * (i + 0.5)
        draw.rectangle([cx - slot * 0.3, y_of(value), cx + slot * 0.3, bottom], fill="#3b6ea8")
        _centered(draw, cx, y_of(value) - 8, f"{value:.1f}", label)
        _centered(draw, cx, bottom + 28, quarter, label)
    draw.line([(left, top - 10), (left, bottom)], fill="#222222", width=2)
    draw.line([(left, bottom), (right, bottom)], fill="#222222", width=2)
    _centered(draw, (left + right) / 2, height - 18, "Quarter (2024)", small)
    axis_title = Image.new("RGBA", (200, 30), (255, 255, 255, 0))
    ImageDraw.Draw(axis_title).text((100, 15), "EUR million", fill="#222222", font=small, anchor="mm")
    axis_title = axis_title.rotate(90, expand=True)
    image.paste(axis_title, (12, round((top + bottom) / 2 - 100)), mask=axis_title)
    path = out_dir / "chart.png"
    # A palette PNG keeps the flat-colour chart tiny; anti-aliased text survives well in 64 colours.
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


MAKERS = (make_invoice, make_scanned_letter, make_receipt, make_chart)


def make_all(out_dir: Path = HERE) -> list[Path]:
    """Writes every sample into `out_dir` and returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [maker(out_dir) for maker in MAKERS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: samples/)")
    for path in make_all(parser.parse_args().out):
        print(f"{path}  {math.ceil(path.stat().st_size / 1024)} KB")


if __name__ == "__main__":
    main()
