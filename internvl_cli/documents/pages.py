"""Step 1, input -> pages: opens PDFs (PyMuPDF) and images (Pillow) and yields pages that render on demand."""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..flags import Flag
from ..errors import InputFileError, PasswordError, UsageError, short_reason
from . import truncated
from .passwords import password_candidates


# PDF pages are measured as if scanned at this resolution; it only matters for InternVL's grid tie-break,
# and it is what `inspect` reports. 200 DPI is the usual archival scan resolution.
PDF_NOMINAL_DPI = 200
# Refuse images over this many pixels before decoding them (a 100-megapixel page is already a 10,000 px square).
MAX_IMAGE_PIXELS = 100_000_000
# PDF user space is 1/72 inch; the spec's largest page is 14,400 units (200 inches). Bigger pages are read
# all the same (they are rasterised at the tile grid's size, so page size does not drive memory) and flagged.
OVERSIZED_PAGE_POINTS = 14_400.0
# An image inside a PDF is decoded by MuPDF, which subsamples most formats while decoding (a 3,600-megapixel
# Flate image renders at tile size in under 200 MB) but decodes JPEG 2000 at full size (about 6 bytes per
# pixel and channel). Pages embedding bigger images are refused as image bombs.
MAX_EMBEDDED_IMAGE_PIXELS = 1_000_000_000
MAX_EMBEDDED_JPX_PIXELS = 250_000_000
# A JPEG or PNG cut short is read when at least this share of its rows is present.
MIN_TRUNCATED_ROWS = 0.5
# Multi-frame formats whose frames are pages by default; the others (GIF, WebP, AVIF/HEIF sequences, MPO)
# are read as their first frame unless --frames all.
PAGED_IMAGE_FORMATS = frozenset({"TIFF"})
FRAMES_CHOICES = ("all", "first")
# A text layer counts as usable when it has at least this many non-space characters.
MIN_TEXT_LAYER_CHARS = 20


@dataclass(frozen=True)
class TextLine:
    """One line of a page's text with its box `(x1, y1, x2, y2)` in page coordinates (origin top left)."""

    text: str
    box: tuple[float, float, float, float]


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
    password: str | None = field(default=None, repr=False)  # a PDF's, so a render worker can open it again
    repaired: bool = False  # MuPDF had to repair the file (or we rebuilt its page tree): pages may be missing
    error: InputFileError | None = None  # set when this page alone cannot be read; the others still can
    flags: list[Flag] = field(default_factory=list)  # what to check on this page (README lists them)
    _render: Callable[[int, int], Image.Image] = field(repr=False, default=None)  # type: ignore[assignment]
    _native: Callable[[], Image.Image] | None = field(repr=False, default=None)
    # the page in its own coordinates: PDF points for PDF pages (after /Rotate), pixels for images
    size: tuple[float, float] | None = None
    _text_lines: Callable[[], list[TextLine]] | None = field(repr=False, default=None)
    _hidden_text: Callable[[], bool] | None = field(repr=False, default=None)

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def held_bytes(self) -> int:
        """Memory the page holds until it is rendered: an image's decoded RGB raster (PDF pages render on demand)."""
        return self.width * self.height * 3 if self.kind == "image" else 0

    def render(self, width: int, height: int) -> Image.Image:
        """The page as an RGB image of exactly width x height pixels."""
        return self._render(width, height)

    @property
    def page_size(self) -> tuple[float, float]:
        """Width and height in the page's own coordinates (the unit of line boxes), origin top left."""
        return self.size if self.size is not None else (float(self.width), float(self.height))

    def text_lines(self) -> list[TextLine]:
        """The lines of a PDF page's own text layer with their boxes (PyMuPDF), in its reading order; none for
        images or pages without a usable text layer."""
        if self._text_lines is None or self.text_layer is None:
            return []
        return self._text_lines()

    def text_is_hidden(self) -> bool:
        """Whether all of a PDF page's text is invisible (render mode 3: an earlier OCR layer under a scan)."""
        return self.text_layer is not None and self._hidden_text is not None and self._hidden_text()

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


def check_frames(frames: str | None) -> str | None:
    """`--frames`: None (each format's default), "all" or "first"."""
    if frames is not None and frames not in FRAMES_CHOICES:
        raise UsageError(f"--frames must be one of {', '.join(FRAMES_CHOICES)} (got '{frames}')")
    return frames


def open_pages(path: Path, *, password: str | None = None, pages: str | None = None,
               frames: str | None = None) -> Iterator[Page]:
    """Yields the selected pages of a PDF or image file lazily; raises InputFileError for unreadable files.

    A PDF stays open as long as one of its pages is referenced, so pages may be rendered after iterating.
    `frames` says which frames of a multi-frame image are pages: None (TIFF: all, others: the first),
    "all" or "first"; it does not apply to PDFs.
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
    check_frames(frames)
    if b"%PDF-" in head:
        return _pdf_pages(path, password, select)
    if path.suffix.lower() == ".pdf":
        raise InputFileError("not a PDF (no %PDF header; wrong extension or not a document)", path=path)
    return _image_pages(path, select, frames, head)


def count_pages(path: Path, *, password: str | None = None, pages: str | None = None,
                frames: str | None = None) -> int | None:
    """How many pages `open_pages` would yield, cheaply (a PDF's page count, an image's frame count; nothing is
    rendered); None when the file cannot be read (its check will say why)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(1024)
        if b"%PDF-" in head:
            doc = _open_pdf(path, password)
            count = doc.page_count
            doc.close()
        else:
            with _open_image(path, head) as image:
                paged = frames == "all" or (frames is None and image.format in PAGED_IMAGE_FORMATS)
                count = getattr(image, "n_frames", 1) if paged else 1
    except (InputFileError, OSError, RuntimeError, UnidentifiedImageError, ValueError):  # pymupdf: RuntimeError
        return None
    select = parse_page_ranges(pages)
    return len(select(count)) if select else count


# ---------------------------------------------------------------- PDF


def open_pdf_document(path: Path, password: str | None = None):
    """The PDF as a PyMuPDF document, authenticated as `open_pages` does (for writers that keep its pages)."""
    return _open_pdf(Path(path), password)


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
            # AES-256 passwords are SASLprep-normalised by conforming writers, but not by MuPDF: try both.
            if not any(doc.authenticate(candidate)
                       for candidate in password_candidates(password, _encryption_revision(doc))):
                doc.close()
                raise PasswordError("wrong password for this encrypted PDF", path=path)
    if doc.page_count == 0:
        doc.close()
        raise InputFileError("PDF has no pages", path=path)
    return doc


def _encryption_revision(doc) -> int | None:
    """The standard security handler's /R (6 for AES-256 under PDF 2.0), readable before authentication."""
    try:
        kind, value = doc.xref_get_key(-1, "Encrypt/R")
        return int(value) if kind == "int" else None
    except Exception:  # an odd trailer: only the typed password is tried
        return None


def _pdf_pages(path: Path, password: str | None, select) -> Iterator[Page]:
    doc = _open_pdf(path, password)
    slots = _repair_page_tree(doc)
    count = len(slots) if slots is not None else doc.page_count
    indices = select(count) if select else list(range(count))
    if not indices:
        doc.close()
        raise InputFileError(f"--pages selects none of the document's {count} pages", path=path)
    return _iter_pdf(doc, path, count, indices, slots, password)


def pdf_renderer(path: Path, password: str | None) -> Callable[[int, int, int], np.ndarray]:
    """`render(index, width, height)`: uint8 RGB pixels of a PDF's pages opened again (a render worker's
    copy), the same page tree (rebuilt the same way when broken) and the very pixels of the Pages
    `open_pages` yields. The array is a view of the pixmap's own memory (no PIL image between and no copy of
    its samples: three copies of a ~7 MB raster fewer per page)."""
    doc = _open_pdf(path, password)
    slots = _repair_page_tree(doc)

    def render(index: int, width: int, height: int) -> np.ndarray:
        slot = slots[index] if slots is not None else index
        page = doc.load_page(slot)
        pix = _pdf_pixmap(page, width, height)
        if (pix.width, pix.height) == (width, height) and pix.n == 3:
            return np.asarray(_PixmapSamples(pix))
        return np.asarray(_render_pdf_page(page, width, height), dtype=np.uint8)  # the rare resized case

    return render


class _PixmapSamples:
    """A pixmap's samples as numpy's array interface, read-only; the array made from it keeps this object, so
    the pixmap (and its memory) lives as long as the array."""

    def __init__(self, pix):
        self._pixmap = pix
        self.__array_interface__ = {"version": 3, "typestr": "|u1", "shape": (pix.height, pix.width, 3),
                                    "strides": (pix.stride, 3, 1), "data": (pix.samples_ptr, True)}


def _iter_pdf(doc, path: Path, count: int, indices: list[int], slots: list | None,
              password: str | None = None) -> Iterator[Page]:
    # The document is not closed here: yielded pages may still be rendered after the loop ends (a task that
    # groups pages into windows does). It is freed with its last page, by reference counting.
    for index in indices:
        slot = slots[index] if slots is not None else index
        if isinstance(slot, str):  # the page tree's entry for this page is broken: nothing to load
            error = InputFileError(f"page {index + 1} skipped: {slot}", path=path)
            yield Page(doc_path=path, index=index, count=count, width=1, height=1, kind="pdf", error=error,
                       repaired=True, flags=[Flag.BROKEN_PAGE])
            continue
        try:
            page = _pdf_page(doc, path, count, index, slot)
            page.repaired = page.repaired or slots is not None
            page.password = password
            yield page
        except _BrokenPage as exc:
            yield Page(doc_path=path, index=index, count=count, width=1, height=1, kind="pdf", error=exc.error,
                       flags=[Flag.BROKEN_PAGE])
        except InputFileError as exc:
            yield Page(doc_path=path, index=index, count=count, width=1, height=1, kind="pdf", error=exc)


class _BrokenPage(Exception):
    """MuPDF cannot load this page object (as opposed to a page that loads but is refused)."""

    def __init__(self, error: InputFileError):
        super().__init__(error.message)
        self.error = error


def _pdf_page(doc, path: Path, count: int, index: int, load_index: int) -> Page:
    try:
        page = doc.load_page(load_index)
        rect = page.rect  # already accounts for /Rotate
        text = page.get_text("text")
    except Exception as exc:
        raise _BrokenPage(InputFileError(f"page {index + 1} cannot be read ({short_reason(exc)})", path=path)) \
            from None
    if rect.width <= 0.5 or rect.height <= 0.5:
        raise _BrokenPage(InputFileError(f"page {index + 1} has an empty page area", path=path))
    _check_embedded_images(doc, page, index, path)
    flags = [Flag.OVERSIZED_PAGE] if max(rect.width, rect.height) > OVERSIZED_PAGE_POINTS else []
    scale = PDF_NOMINAL_DPI / 72
    width, height = max(1, round(rect.width * scale)), max(1, round(rect.height * scale))

    def render(target_w: int, target_h: int) -> Image.Image:
        return _render_pdf_page(page, target_w, target_h)

    def native() -> Image.Image:
        # A poster's nominal raster (50,000 x 100,000 px at 200 DPI) is never made: cap it like an image.
        shrink = min(1.0, (MAX_IMAGE_PIXELS / (width * height)) ** 0.5)
        return render(max(1, int(width * shrink)), max(1, int(height * shrink)))

    return Page(
        doc_path=path, index=index, count=count, width=width, height=height, kind="pdf",
        text_layer=_usable_text(text), repaired=bool(doc.is_repaired), flags=flags, _render=render,
        _native=native, size=(float(rect.width), float(rect.height)), _text_lines=lambda: _pdf_text_lines(page),
        _hidden_text=lambda: hidden_text_only(page),
    )


def hidden_text_only(page) -> bool:
    """True when the page has text and every span of it is drawn invisibly (render mode 3)."""
    spans = page.get_texttrace()
    return bool(spans) and all(span.get("type") == 3 for span in spans)


def _pdf_text_lines(page) -> list[TextLine]:
    """PyMuPDF's lines of the page's text layer, boxes in the rotated page's points (as the page is shown)."""
    lines = []
    to_shown = page.rotation_matrix
    for block in page.get_text("dict", sort=False).get("blocks", []):
        for line in block.get("lines", []):
            text = " ".join("".join(span.get("text", "") for span in line.get("spans", [])).split())
            if not text:
                continue
            from .mupdf import import_pymupdf

            rect = import_pymupdf().Rect(line["bbox"]) * to_shown
            lines.append(TextLine(text, (round(rect.x0, 2), round(rect.y0, 2), round(rect.x1, 2), round(rect.y1, 2))))
    return lines


def _check_embedded_images(doc, page, index: int, path: Path) -> None:
    """Refuses a page whose images would exhaust memory when MuPDF decodes them (an image bomb)."""
    try:
        images = page.get_images(full=True)  # (xref, smask, width, height, bpc, colorspace, ..., filter, ...)
    except Exception:  # unreadable resources: rendering will say what is wrong
        return
    for item in images:
        sizes = [(item[2], item[3], item[8])]
        if item[1]:  # the soft mask is a separate image, decoded too
            sizes.append((_int_key(doc, item[1], "Width"), _int_key(doc, item[1], "Height"),
                          doc.xref_get_key(item[1], "Filter")[1]))
        for width, height, filters in sizes:
            limit = MAX_EMBEDDED_JPX_PIXELS if "JPX" in str(filters) else MAX_EMBEDDED_IMAGE_PIXELS
            if width * height > limit:
                kind = "JPEG 2000 images" if limit == MAX_EMBEDDED_JPX_PIXELS else "images inside PDFs"
                raise InputFileError(
                    f"page {index + 1} embeds a {width}x{height} image ({width * height / 1e6:,.0f} megapixels), "
                    f"over the {limit // 1_000_000:,}-megapixel limit for {kind} (an image bomb?)", path=path)


def _int_key(doc, xref: int, key: str) -> int:
    kind, value = doc.xref_get_key(xref, key)
    return int(value) if kind == "int" else 0


def _pdf_pixmap(page, width: int, height: int):
    """MuPDF's RGB raster of the page scaled to about width x height (it rounds the box)."""
    from .mupdf import import_pymupdf

    pymupdf = import_pymupdf()

    rect = page.rect
    matrix = pymupdf.Matrix(width / rect.width, height / rect.height)
    return page.get_pixmap(matrix=matrix, alpha=False, colorspace=pymupdf.csRGB)


def _render_pdf_page(page, width: int, height: int) -> Image.Image:
    """Rasterises straight at the requested pixel size (no oversized raster followed by a resize)."""
    pix = _pdf_pixmap(page, width, height)
    image = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    if image.size != (width, height):  # PyMuPDF rounds the pixmap box; never seen off by more than a pixel
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image


# Control characters other than tab, newline and carriage return: a text layer full of them is garbage.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _usable_text(text: str) -> str | None:
    # Counted in C (str.split and re share str.isspace's notion of whitespace): a per-character Python loop
    # here was the largest cost of a server run's main process (~16 ms per page of text).
    stripped = text.strip()
    visible = sum(map(len, stripped.split()))
    if visible < MIN_TEXT_LAYER_CHARS:
        return None
    garbage = stripped.count("\ufffd") + len(_CONTROL_CHARS.findall(stripped))
    if garbage > 0.1 * visible:  # broken font encodings produce replacement/control characters
        return None
    return stripped


# ---------------------------------------------------------------- PDF page tree

# Attributes a page inherits from its ancestors in the page tree (ISO 32000 7.7.3.4).
_INHERITED = ("Resources", "MediaBox", "CropBox", "Rotate")
_REF = re.compile(rb"(\d+)\s+(\d+)\s+R")
_MAX_TREE_DEPTH = 64


def _repair_page_tree(doc) -> list | None:
    """None when the page tree is sound; otherwise the tree is rebuilt in memory from the pages that load.

    MuPDF papers over a broken page tree: a missing or damaged page object becomes a blank Letter page,
    and a cycle or a wrong /Count makes every later page fail to load. Here the tree is walked the way it
    was meant to be read; when that finds a problem, the root /Kids is replaced (in memory only) by the
    page objects that are sound, with their inherited attributes copied onto them, and the result says,
    per page of the original numbering, the index MuPDF now loads it at, or why the page is broken.
    """
    try:
        leaves = _walk_page_tree(doc)
        if leaves is None:
            return None
        broken = any(isinstance(leaf, str) for leaf in leaves)
        if not broken and len(leaves) == doc.page_count:
            return None
        if not any(not isinstance(leaf, str) for leaf in leaves):
            return None  # nothing sound to rebuild from: let MuPDF report what it can
        return _rebuild_page_tree(doc, leaves)
    except Exception:  # the walk met something unforeseen: keep MuPDF's own reading
        return None


class _UnusualTree(Exception):
    """The page tree is odd in a way MuPDF may handle better than a strict walk."""


def _walk_page_tree(doc) -> list | None:
    """One entry per page slot, in order: (xref, inherited attributes) or a reason string."""
    kind, value = doc.xref_get_key(doc.pdf_catalog(), "Pages")
    if kind != "xref":
        return None
    root = int(value.split()[0])
    leaves: list = []
    seen_nodes: set[int] = set()

    def visit(node: int, inherited: dict, depth: int) -> None:
        seen_nodes.add(node)
        for attr in _INHERITED:
            attr_kind, attr_value = doc.xref_get_key(node, attr)
            if attr_kind != "null":
                inherited = {**inherited, attr: attr_value}
        kids_kind, kids = doc.xref_get_key(node, "Kids")
        if kids_kind == "xref":  # an indirect /Kids array
            kids = doc.xref_object(int(kids.split()[0]), compressed=True)
        if "<<" in kids:
            raise _UnusualTree("a /Kids entry is a direct object")  # not ours to second-guess
        for match in _REF.finditer(kids.encode() if kids_kind != "null" else b""):
            kid = int(match.group(1))
            problem = _kid_problem(doc, kid, seen_nodes, depth)
            if problem:
                leaves.append(f"its page object {kid} 0 R {problem}")
            elif _is_pages_node(doc, kid):
                visit(kid, inherited, depth + 1)
            else:
                leaves.append((kid, inherited))

    visit(root, {}, 0)
    return leaves


def _kid_problem(doc, kid: int, seen_nodes: set[int], depth: int) -> str | None:
    if not 0 < kid < doc.xref_length():
        return "is missing from the file"
    if kid in seen_nodes:
        return "makes a cycle in the page tree"
    if depth >= _MAX_TREE_DEPTH:
        return "is nested too deep in the page tree"
    try:
        type_kind, type_value = doc.xref_get_key(kid, "Type")
        source = doc.xref_object(kid, compressed=True)
    except Exception as exc:
        return f"is damaged ({short_reason(exc, 80)})"
    if not source.lstrip().startswith("<<"):
        return "is not a dictionary"
    if type_kind == "name" and type_value in ("/Page", "/Pages"):
        return None
    if any(doc.xref_get_key(kid, key)[0] != "null" for key in ("Kids", "Contents", "MediaBox")):
        return None  # a page (or node) with a missing or wrong /Type: viewers read it, so do we
    return f"is a {type_value[1:]} object, not a page" if type_kind == "name" else "is not a page object"


def _is_pages_node(doc, xref: int) -> bool:
    kind, value = doc.xref_get_key(xref, "Type")
    return (kind == "name" and value == "/Pages") or doc.xref_get_key(xref, "Kids")[0] != "null"


def _rebuild_page_tree(doc, leaves: list) -> list:
    kind, value = doc.xref_get_key(doc.pdf_catalog(), "Pages")
    root = int(value.split()[0])
    sound = [leaf for leaf in leaves if not isinstance(leaf, str)]
    for xref, inherited in sound:
        for attr, attr_value in inherited.items():
            if doc.xref_get_key(xref, attr)[0] == "null":
                doc.xref_set_key(xref, attr, attr_value)
        doc.xref_set_key(xref, "Parent", f"{root} 0 R")
    doc.xref_set_key(root, "Kids", "[" + " ".join(f"{xref} 0 R" for xref, _ in sound) + "]")
    doc.xref_set_key(root, "Count", str(len(sound)))
    slots: list = []
    loaded = 0
    for leaf in leaves:
        if isinstance(leaf, str):
            slots.append(leaf)
        else:
            slots.append(loaded)
            loaded += 1
    return slots


# ---------------------------------------------------------------- images


def _image_pages(path: Path, select, frames: str | None, head: bytes) -> Iterator[Page]:
    image = _open_image(path, head)
    available = getattr(image, "n_frames", 1)
    if frames == "all" or (frames is None and image.format in PAGED_IMAGE_FORMATS):
        count = available
    else:
        count = 1  # an animation's later frames are not pages (see --frames)
    indices = select(count) if select else list(range(count))
    if not indices:
        raise InputFileError(f"--pages selects none of the image's {count} pages", path=path)
    return _iter_frames(image, path, count, indices)


# ISO base media files (HEIF, AVIF) start with an `ftyp` box naming their brands.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
_AVIF_BRANDS = (b"avif", b"avis")
_heif_state = {"registered": False}


def _register_heif_opener() -> bool:
    """HEIC/HEIF through pi-heif (libheif + libde265, decoding only); AVIF is Pillow's own (libavif)."""
    if not _heif_state["registered"]:
        try:
            import pi_heif
        except ImportError:
            return False
        pi_heif.register_heif_opener()
        _heif_state["registered"] = True
    return True


def _iso_brands(head: bytes) -> bytes:
    if head[4:8] != b"ftyp":
        return b""
    size = int.from_bytes(head[:4], "big")
    return head[8:max(8, min(size, len(head)))]


def _open_image(path: Path, head: bytes = b"") -> Image.Image:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    brands = _iso_brands(head)
    heif = any(brand in brands for brand in _HEIF_BRANDS) and not brands.startswith(_AVIF_BRANDS)
    if heif and not _register_heif_opener():
        raise InputFileError("HEIC/HEIF images need the pi-heif package", path=path, hint="pip install pi-heif")
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
        if any(brand in brands for brand in _AVIF_BRANDS):
            raise InputFileError("AVIF images need Pillow built with libavif (Pillow 11.3 or newer)",
                                 path=path, hint="pip install -U pillow") from None
        if _cut_before_pixels(path, head):
            raise InputFileError("image file is cut short before its pixel data", path=path) from None
        raise InputFileError("not a supported image or PDF (unrecognised format)", path=path) from None
    except OSError as exc:
        if _cut_before_pixels(path, head):
            raise InputFileError("image file is cut short before its pixel data", path=path) from None
        raise InputFileError(f"corrupt image ({short_reason(exc)})", path=path) from None


def _cut_before_pixels(path: Path, head: bytes) -> bool:
    if not head.startswith((truncated.JPEG_MAGIC, truncated.PNG_MAGIC)):
        return False
    try:
        return truncated.is_truncated(path.read_bytes())
    except OSError:
        return False


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
    flags: list[Flag] = []
    try:
        if image.tell() != index:
            image.seek(index)
        rgb = to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if count > 1 or image.format not in ("JPEG", "PNG", "MPO"):
            prefix = f"page {index + 1}: " if count > 1 else ""
            raise InputFileError(f"{prefix}corrupt image data ({short_reason(exc)})", path=path) from None
        rgb = to_rgb(_read_truncated(path, exc))
        flags.append(Flag.TRUNCATED_IMAGE)
    _check_pixels(rgb, path)

    def render(width: int, height: int) -> Image.Image:
        if rgb.size == (width, height):
            return rgb
        return rgb.resize((width, height), Image.Resampling.BICUBIC)

    return Page(
        doc_path=path, index=index, count=count, width=rgb.width, height=rgb.height, kind="image",
        flags=flags, _render=render, _native=lambda: rgb, size=(float(rgb.width), float(rgb.height)),
    )


def _read_truncated(path: Path, failure: Exception) -> Image.Image:
    """The rows present of a JPEG or PNG cut short, when there are enough; otherwise a message saying which."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read the file ({exc.strerror})", path=path) from None
    if not truncated.is_truncated(data):
        raise InputFileError(f"corrupt image data ({short_reason(failure)})", path=path)
    try:
        found = truncated.salvage(data)
    except truncated.NotSalvageable as why:
        raise InputFileError(f"image file is cut short and nothing of it can be read: {why}", path=path) from None
    if found.fraction < MIN_TRUNCATED_ROWS:
        raise InputFileError(
            f"image file is cut short: only {found.rows} of its {found.height} rows ({found.fraction:.0%}) are "
            f"present, fewer than the {MIN_TRUNCATED_ROWS:.0%} needed to read it", path=path)
    return found.image


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
