"""Step 1, input -> pages: opens PDFs (PyMuPDF) and images (Pillow) and yields pages that render on demand."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputFileError, PasswordError, UsageError, short_reason


# PDF pages are measured as if scanned at this resolution; it only matters for InternVL's grid tie-break,
# and it is what `inspect` reports. 200 DPI is the usual archival scan resolution.
PDF_NOMINAL_DPI = 200
# Refuse images over this many pixels before decoding them (a 100-megapixel page is already a 10,000 px square).
MAX_IMAGE_PIXELS = 100_000_000
# PDF user space is 1/72 inch; the spec's largest page is 14,400 units. Bigger ones are refused.
MAX_PDF_PAGE_POINTS = 14_400.0
# A text layer counts as usable when it has at least this many non-space characters.
MIN_TEXT_LAYER_CHARS = 20


@dataclass
class Page:
    """One page of a document: its nominal pixel size, an optional text layer, and a renderer."""

    doc_path: Path
    index: int  # 0-based
    count: int  # pages in the document (after --pages selection is applied this stays the document's total)
    width: int
    height: int
    kind: str  # "pdf" or "image"
    text_layer: str | None = None
    repaired: bool = False  # MuPDF had to repair the file: pages may be missing or blank
    error: InputFileError | None = None  # set when this page alone cannot be read; the others still can
    _render: Callable[[int, int], Image.Image] = field(repr=False, default=None)  # type: ignore[assignment]
    _native: Callable[[], Image.Image] | None = field(repr=False, default=None)

    @property
    def number(self) -> int:
        return self.index + 1

    def render(self, width: int, height: int) -> Image.Image:
        """The page as an RGB image of exactly width x height pixels."""
        return self._render(width, height)

    def native_image(self) -> Image.Image:
        """The page at its nominal resolution (images: the decoded, upright RGB image)."""
        if self._native is not None:
            return self._native()
        return self._render(self.width, self.height)


def parse_page_ranges(spec: str | None) -> Callable[[int], list[int]] | None:
    """`1-3,7,10-` -> a function from page count to the selected 0-based indices (in document order)."""
    if not spec:
        return None
    parts: list[tuple[int, int | None]] = []
    for chunk in spec.replace(" ", "").split(","):
        if not chunk:
            continue
        try:
            if "-" in chunk:
                first, _, last = chunk.partition("-")
                start = int(first) if first else 1
                end = int(last) if last else None
            else:
                start = end = int(chunk)
        except ValueError:
            raise UsageError(f"--pages: '{chunk}' is not a page number or range like 1-3,7") from None
        if start < 1 or (end is not None and end < start):
            raise UsageError(f"--pages: '{chunk}' is not a valid range (pages count from 1)")
        parts.append((start, end))

    def select(count: int) -> list[int]:
        chosen = set()
        for start, end in parts:
            chosen.update(range(start - 1, min(end if end is not None else count, count)))
        return sorted(chosen)

    return select


def open_pages(path: Path, *, password: str | None = None, pages: str | None = None) -> Iterator[Page]:
    """Yields the selected pages of a PDF or image file lazily; raises InputFileError for unreadable files.

    A PDF stays open as long as one of its pages is referenced, so pages may be rendered after iterating.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError("file not found", path=path)
    if path.is_dir():
        raise InputFileError("is a directory", path=path)
    try:
        with path.open("rb") as handle:
            head = handle.read(1024)
    except OSError as exc:
        raise InputFileError(f"cannot read the file ({exc.strerror})", path=path) from None
    if not head:
        raise InputFileError("file is empty (0 bytes)", path=path)
    select = parse_page_ranges(pages)
    if b"%PDF-" in head:
        return _pdf_pages(path, password, select)
    if path.suffix.lower() == ".pdf":
        raise InputFileError("not a PDF (no %PDF header; wrong extension or not a document)", path=path)
    return _image_pages(path, select)


# ---------------------------------------------------------------- PDF


def _open_pdf(path: Path, password: str | None):
    from .mupdf import import_pymupdf

    pymupdf = import_pymupdf()

    pymupdf.TOOLS.mupdf_display_warnings(False)  # MuPDF would print repair chatter on our stderr
    pymupdf.TOOLS.mupdf_display_errors(False)
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception as exc:  # PyMuPDF raises its own FileDataError/RuntimeError family
        raise InputFileError(f"corrupt or unreadable PDF ({short_reason(exc)})", path=path) from None
    if doc.needs_pass:
        # An empty user password (owner-only protection) opens silently, as every viewer does.
        if not doc.authenticate(""):
            if password is None:
                doc.close()
                raise PasswordError("PDF is encrypted and needs a password", path=path)
            if not doc.authenticate(password):
                doc.close()
                raise PasswordError("wrong password for this encrypted PDF", path=path)
    if doc.page_count == 0:
        doc.close()
        raise InputFileError("PDF has no pages", path=path)
    return doc


def _pdf_pages(path: Path, password: str | None, select) -> Iterator[Page]:
    doc = _open_pdf(path, password)
    count = doc.page_count
    indices = select(count) if select else list(range(count))
    if not indices:
        doc.close()
        raise InputFileError(f"--pages selects none of the document's {count} pages", path=path)
    return _iter_pdf(doc, path, count, indices)


def _iter_pdf(doc, path: Path, count: int, indices: list[int]) -> Iterator[Page]:
    # The document is not closed here: yielded pages may still be rendered after the loop ends (a task that
    # groups pages into windows does). It is freed with its last page, by reference counting.
    for index in indices:
        try:
            yield _pdf_page(doc, path, count, index)
        except InputFileError as exc:
            yield Page(doc_path=path, index=index, count=count, width=1, height=1, kind="pdf", error=exc)


def _pdf_page(doc, path: Path, count: int, index: int) -> Page:
    try:
        page = doc.load_page(index)
        rect = page.rect  # already accounts for /Rotate
        text = page.get_text("text")
    except Exception as exc:
        raise InputFileError(f"page {index + 1} cannot be read ({short_reason(exc)})", path=path) from None
    if rect.width <= 0.5 or rect.height <= 0.5:
        raise InputFileError(f"page {index + 1} has an empty page area", path=path)
    if max(rect.width, rect.height) > MAX_PDF_PAGE_POINTS:
        raise InputFileError(
            f"page {index + 1} is {rect.width / 72:.0f}x{rect.height / 72:.0f} inches, "
            f"over the PDF maximum of {MAX_PDF_PAGE_POINTS / 72:.0f} inches",
            path=path,
        )
    scale = PDF_NOMINAL_DPI / 72
    width, height = max(1, round(rect.width * scale)), max(1, round(rect.height * scale))

    def render(target_w: int, target_h: int) -> Image.Image:
        return _render_pdf_page(page, target_w, target_h)

    return Page(
        doc_path=path, index=index, count=count, width=width, height=height, kind="pdf",
        text_layer=_usable_text(text), repaired=bool(doc.is_repaired), _render=render,
    )


def _render_pdf_page(page, width: int, height: int) -> Image.Image:
    """Rasterises straight at the requested pixel size (no oversized raster followed by a resize)."""
    from .mupdf import import_pymupdf

    pymupdf = import_pymupdf()

    rect = page.rect
    matrix = pymupdf.Matrix(width / rect.width, height / rect.height)
    pix = page.get_pixmap(matrix=matrix, alpha=False, colorspace=pymupdf.csRGB)
    image = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    if image.size != (width, height):  # PyMuPDF rounds the pixmap box; never seen off by more than a pixel
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image


def _usable_text(text: str) -> str | None:
    stripped = text.strip()
    visible = sum(1 for ch in stripped if not ch.isspace())
    if visible < MIN_TEXT_LAYER_CHARS:
        return None
    garbage = stripped.count("\ufffd") + sum(1 for ch in stripped if ord(ch) < 32 and ch not in "\n\t\r")
    if garbage > 0.1 * visible:  # broken font encodings produce replacement/control characters
        return None
    return stripped


# ---------------------------------------------------------------- images


def _image_pages(path: Path, select) -> Iterator[Page]:
    image = _open_image(path)
    frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1  # GIF/WebP animation is not a page
    indices = select(frames) if select else list(range(frames))
    if not indices:
        raise InputFileError(f"--pages selects none of the image's {frames} pages", path=path)
    return _iter_frames(image, path, frames, indices)


def _open_image(path: Path) -> Image.Image:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            _check_pixels(image, path)
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputFileError(
            f"image is over the {MAX_IMAGE_PIXELS // 1_000_000}-megapixel limit (a decompression bomb?)", path=path
        ) from None
    except UnidentifiedImageError:
        raise InputFileError("not a supported image or PDF (unrecognised format)", path=path) from None
    except OSError as exc:
        raise InputFileError(f"corrupt image ({short_reason(exc)})", path=path) from None


def _check_pixels(image: Image.Image, path: Path) -> None:
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InputFileError(
            f"image is {width}x{height} pixels, over the {MAX_IMAGE_PIXELS // 1_000_000}-megapixel limit",
            path=path,
        )
    if width < 1 or height < 1:
        raise InputFileError("image has no pixels", path=path)


def _iter_frames(image: Image.Image, path: Path, count: int, indices: list[int]) -> Iterator[Page]:
    try:
        for index in indices:
            try:
                yield _frame_page(image, path, count, index)
            except InputFileError as exc:
                if count == 1:
                    raise
                yield Page(doc_path=path, index=index, count=count, width=1, height=1, kind="image", error=exc)
    finally:
        image.close()


def _frame_page(image: Image.Image, path: Path, count: int, index: int) -> Page:
    try:
        if count > 1:
            image.seek(index)
        rgb = to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputFileError(f"page {index + 1}: corrupt image data ({short_reason(exc)})", path=path) from None
    _check_pixels(rgb, path)

    def render(width: int, height: int) -> Image.Image:
        if rgb.size == (width, height):
            return rgb
        return rgb.resize((width, height), Image.Resampling.BICUBIC)

    return Page(
        doc_path=path, index=index, count=count, width=rgb.width, height=rgb.height, kind="image",
        _render=render, _native=lambda: rgb,
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF orientation applied, 16-bit scaled (not clipped), alpha composited on white."""
    image.load()
    upright = ImageOps.exif_transpose(image) or image
    if upright.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        upright = _deep_to_8bit(upright)
    elif upright.mode == "F":
        upright = Image.fromarray(np.clip(np.asarray(upright), 0, 255).astype(np.uint8))
    has_alpha = "A" in upright.getbands() or "transparency" in upright.info
    if has_alpha:
        # Same rule as transformers' convert_to_rgb: transparent areas become white paper.
        rgba = upright.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return upright.convert("RGB")


def _deep_to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit greyscale to 8-bit by its bit depth (Pillow's convert would clip everything above 255)."""
    values = np.asarray(image).astype(np.float64)
    peak = float(values.max()) if values.size else 0.0
    depth = 65535.0 if peak > 255 else 255.0
    scaled = np.clip(np.round(values * (255.0 / depth)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")
