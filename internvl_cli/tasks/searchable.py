"""Step 4e, placed text: OCR records with line boxes -> a searchable PDF (the original pages with an invisible text
layer, written with PyMuPDF) or hOCR. Words within a line are spread by the font's character widths."""
from __future__ import annotations

import html
import io
from pathlib import Path

from ..documents.mupdf import import_pymupdf
from ..documents.pages import open_pages, open_pdf_document

# The invisible layer's fonts: Helvetica (a base-14 font, nothing embedded) where it has every glyph, else
# MuPDF's Droid Sans Fallback (embedded, then subset to the glyphs used).
LATIN_FONT, FALLBACK_FONT = "helv", "cjk"
_FONTS: dict = {}


def searchable_pdf(path: Path, records: list[dict], password: str | None = None, redo_ocr: bool = False) -> bytes:
    """The document with our text under each page that was grounded. PDF pages keep their content streams and
    images as they are (the text is added as a separate invisible stream); pages whose lines came from their own
    text layer are left alone; with `redo_ocr`, a page whose text was all invisible (an earlier OCR layer) has
    that text removed first. An image becomes one page per frame at its own resolution."""
    by_page = {record["page"]: record for record in records}
    if _is_pdf(path):
        doc = open_pdf_document(path, password)
        for number, record in by_page.items():
            if _grounded(record) and 1 <= number <= doc.page_count:
                page = doc[number - 1]
                if redo_ocr:
                    _remove_hidden_text(page)
                _write_lines(page, record["lines"], scale=1.0)
    else:
        doc = _image_document(path, by_page)
    return _finish(doc)


def _is_pdf(path: Path) -> bool:
    with Path(path).open("rb") as handle:
        return b"%PDF-" in handle.read(1024)


def _grounded(record: dict) -> bool:
    return not record.get("error") and record.get("lines_source") == "grounding"


def _remove_hidden_text(page) -> None:
    """Removes an earlier OCR layer (text all in render mode 3); images and drawings are not touched."""
    from ..documents.pages import hidden_text_only

    if not hidden_text_only(page):
        return
    pymupdf = import_pymupdf()
    page.add_redact_annot(page.rect)
    page.apply_redactions(images=pymupdf.PDF_REDACT_IMAGE_NONE, graphics=pymupdf.PDF_REDACT_LINE_ART_NONE,
                          text=pymupdf.PDF_REDACT_TEXT_REMOVE)


def _image_document(path: Path, by_page: dict[int, dict]):
    """One page per image frame, sized so the image keeps its resolution (its DPI, else 72: a pixel a point)."""
    pymupdf = import_pymupdf()
    doc = pymupdf.open()
    for page in open_pages(path, frames="all" if len(by_page) > 1 else None):
        record = by_page.get(page.number)
        if record is None or page.error is not None:
            continue
        image = page.native_image()
        dpi = _dpi(path)
        scale = 72.0 / dpi
        out = doc.new_page(width=image.width * scale, height=image.height * scale)
        out.insert_image(out.rect, stream=_image_bytes(path, image))
        if not record.get("error"):
            _write_lines(out, record.get("lines") or [], scale=scale)
    return doc


def _dpi(path: Path) -> float:
    from PIL import Image

    try:
        with Image.open(path) as image:
            dpi = image.info.get("dpi", (72, 72))
        value = float(dpi[0] if isinstance(dpi, tuple) else dpi)
        value = round(value) if abs(value - round(value)) < 0.05 else value  # PNG stores dots per metre
        return value if 1 <= value <= 10000 else 72.0
    except Exception:  # the pages were read already; a missing DPI just means 72
        return 72.0


def _image_bytes(path: Path, image) -> bytes:
    """The file itself when MuPDF shows it as we read it (an upright JPEG or PNG), else a lossless PNG of it."""
    from PIL import Image

    try:
        with Image.open(path) as original:
            upright = original.getexif().get(0x0112, 1) == 1
            if original.format in ("JPEG", "PNG") and upright and original.mode in ("RGB", "L"):
                return Path(path).read_bytes()
    except Exception:
        pass
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _font(name: str):
    if name not in _FONTS:
        _FONTS[name] = import_pymupdf().Font(name)
    return _FONTS[name]


def _font_for(text: str) -> str:
    latin = _font(LATIN_FONT)
    return LATIN_FONT if all(latin.has_glyph(ord(ch)) for ch in text) else FALLBACK_FONT


def _write_lines(page, lines: list[dict], scale: float) -> None:
    """Each boxed line as invisible text (render mode 3) whose glyph boxes fill its box: the font size from the
    box's height, stretched horizontally to its width. Boxes are in the page as shown; a page with /Rotate gets
    its text turned with it."""
    pymupdf = import_pymupdf()
    rotation = page.rotation
    for line in lines:
        text, box = line.get("text") or "", line.get("box")
        if not box or not text.strip():
            continue
        shown = pymupdf.Rect(*(value * scale for value in box))
        if shown.is_empty:
            continue
        fontname = _font_for(text)
        font = _font(fontname)
        size = shown.height / (font.ascender - font.descender)
        natural = font.text_length(text, fontsize=size)
        if size <= 0 or natural <= 0:
            continue
        baseline = pymupdf.Point(shown.x0, shown.y1 + font.descender * size) * page.derotation_matrix
        if fontname == FALLBACK_FONT:
            page.insert_font(fontname="internvl-fallback", fontbuffer=font.buffer)
            fontname = "internvl-fallback"
        stretch = pymupdf.Matrix(shown.width / natural, 1)
        if rotation:  # stretch along the line as shown: rotate into the shown frame, stretch, rotate back
            stretch = pymupdf.Matrix(rotation) * stretch * pymupdf.Matrix(-rotation)
        page.insert_text(baseline, text, fontsize=size, fontname=fontname, render_mode=3, rotate=rotation,
                         morph=(baseline, stretch))


def _finish(doc) -> bytes:
    if any(font[3] == "internvl-fallback" for page in doc for font in page.get_fonts()):
        doc.subset_fonts()
    data = doc.tobytes(garbage=1, deflate=True)
    doc.close()
    return data


def word_boxes(text: str, box: list[float]) -> list[tuple[str, list[float]]]:
    """The words of a line with their boxes: the line's box divided by the font's character widths."""
    font = _font(_font_for(text))
    total = font.text_length(text, fontsize=1.0) or 1.0
    x1, y1, x2, y2 = box
    words, position = [], 0
    for word in text.split():
        start = text.index(word, position)
        position = start + len(word)
        left = font.text_length(text[:start], fontsize=1.0) / total
        right = font.text_length(text[:position], fontsize=1.0) / total
        words.append((word, [x1 + left * (x2 - x1), y1, x1 + right * (x2 - x1), y2]))
    return words


def hocr_document(records: list[dict]) -> str:
    """hOCR 1.2 of a document: one ocr_page per record (bbox in the record's page units: PDF points, image
    pixels), its boxed lines as ocr_line and their words as ocrx_word."""
    pages = "".join(_hocr_page(record) for record in records)
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 "
            "Transitional//EN\" \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n"
            "<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n<head>\n<title></title>\n"
            "<meta http-equiv=\"Content-Type\" content=\"text/html;charset=utf-8\"/>\n"
            "<meta name=\"ocr-system\" content=\"internvl-cli\"/>\n"
            "<meta name=\"ocr-capabilities\" content=\"ocr_page ocr_line ocrx_word\"/>\n</head>\n<body>\n"
            f"{pages}</body>\n</html>\n")


def _bbox(box: list[float]) -> str:
    return "bbox " + " ".join(str(round(value)) for value in box)


def _hocr_page(record: dict) -> str:
    number = record["page"]
    width, height = record.get("page_size") or (0, 0)
    image = html.escape(Path(record["file"]).name, quote=True)
    title = f"image &quot;{image}&quot;; {_bbox([0, 0, width, height])}; ppageno {number - 1}"
    out = [f"<div class=\"ocr_page\" id=\"page_{number}\" title=\"{title}\">\n"]
    for index, line in enumerate(record.get("lines") or [], start=1):
        if not line.get("box"):
            continue
        out.append(f"<span class=\"ocr_line\" id=\"line_{number}_{index}\" title=\"{_bbox(line['box'])}\">")
        words = word_boxes(line["text"], line["box"])
        out.append(" ".join(f"<span class=\"ocrx_word\" id=\"word_{number}_{index}_{k}\" title=\"{_bbox(b)}\">"
                            f"{html.escape(word)}</span>" for k, (word, b) in enumerate(words, start=1)))
        out.append("</span>\n")
    out.append("</div>\n")
    return "".join(out)
