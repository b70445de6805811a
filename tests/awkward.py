"""Awkward test inputs: generates, at test time, the odd image and PDF files a document loader must survive.

In the spirit of OCRmyPDF's collection of awkward test files, but every file here is made by the
function named next to it (nothing is downloaded or checked in). Each `make_xxx(dir)` writes one file
into `dir` and returns its path; `make_all(dir)` writes them all. Behaviour noted below was observed
with Pillow 13 and PyMuPDF 2.0 (MuPDF 1.28.5); tests/test_awkward_files.py checks every claim.

Images
- cmyk.jpg (make_cmyk_jpeg): a CMYK JPEG (Adobe marker); PIL opens it as mode "CMYK", which a model
  pipeline must convert to RGB.
- progressive.jpg (make_progressive_jpeg): a progressive (multi-scan) JPEG; PIL reports info["progressive"].
- multipage.tiff (make_multiframe_tiff): 3 frames of different sizes (600x400, 400x600, 300x300);
  every frame is a page, so a loader reading only frame 0 silently drops two pages.
- image.webp (make_webp): a lossless WebP.
- image.bmp (make_bmp): a 24-bit Windows bitmap.
- palette.gif (make_gif): a mode "P" GIF.
- palette-transparent.png (make_palette_png_transparent): mode "P" with a transparent palette
  index as background; PIL's naive convert("RGB") turns that background black (the palette entry's
  colour), so the dark text vanishes unless transparency is composited onto white.
- rgba-transparent.png (make_rgba_png): RGBA, fully transparent background stored as (0, 0, 0, 0)
  with dark text; convert("RGB") gives black text on black. Composite onto white instead.
- gray16.png (make_gray16_png): 16-bit grayscale (PIL mode "I;16"), background 60000, text 4000 and a
  0..65535 ramp strip. Pillow's convert("L") clips instead of scaling, so text and background both
  become 255 (all white); divide by 257 (or shift right by 8) to get 8 bits.
- exif-rotate-6.jpg (make_exif_rotated_jpeg): EXIF Orientation=6. The stored pixels are 300x200
  (landscape) with a red block on the LEFT edge; upright (after ImageOps.exif_transpose, which rotates
  90 degrees clockwise) it is 200x300 (portrait) with the red block at the TOP. A loader that ignores
  EXIF keeps the red block on the left.
- 1x1.png (make_tiny_png): a single white pixel; too small to tile or to contain any text.
- wide-4000x60.png (make_extreme_aspect): 4000x60, aspect ratio 66:1, one long line of text;
  naive resizing to a square squashes it to nothing.
- empty.png (make_empty_png): 0 bytes. PIL raises UnidentifiedImageError; PyMuPDF raises
  pymupdf.EmptyFileError (a FileDataError subclass).
- bomb.png (make_decompression_bomb): a valid 1-bit PNG declaring 30000x30000 pixels (900 MP) in
  ~170 KB, written row-chunk by row-chunk with zlib so making it never allocates the full raster.
  PIL's Image.open raises PIL.Image.DecompressionBombError (more than 2x MAX_IMAGE_PIXELS), but
  pymupdf.open accepts it lazily as a 1-page document with a 22500x22500 pt page, so a loader that
  opens images through PyMuPDF must check the pixel size itself before rendering.
- exif-rotate-6.heic (make_heic_photo): the same sideways-stored picture as exif-rotate-6.jpg, written as
  HEIC by pillow-heif (x265) with EXIF Orientation=6, as a phone camera does. pillow-heif stores the
  orientation as the HEIF `irot` transform too (the EXIF keeps 6); libheif applies `irot`, so the decoded
  image is upright at 200x300, and the Pillow plugin (pi-heif, pillow-heif) resets the EXIF tag to 1 so
  that ImageOps.exif_transpose does not turn it a second time.
- exif-rotate-6.avif (make_avif_photo): the same picture as AVIF, written by Pillow's own libavif (aom);
  Pillow reads it back sideways (300x200) with Orientation=6 kept, so ImageOps.exif_transpose must run.
- animated.gif / animated.webp (make_animated_gif, make_animated_webp): 3 frames of one size, each with its
  own text; Pillow reports n_frames == 3. Readers that treat frames as pages read 3 pages.
- cut-80.jpg (make_truncated_jpeg): the first 80% of the bytes of a baseline 600x800 JPEG. Pillow opens
  it but load() raises OSError ("image file is truncated"); with an end-of-image marker appended, libjpeg
  decodes the top rows and fills the blocks it never reached with flat mid-grey (128).
- cut-15.jpg (make_truncated_jpeg_short): the first 15% of the same JPEG: most rows are missing.
- cut-75.png / cut-25.png (make_truncated_png, make_truncated_png_short): the first 75% / 25% of the
  bytes of a 600x800 PNG (several IDAT chunks); Pillow opens it, load() raises OSError. The inflated
  IDAT data present holds that share of the scanlines, give or take.

Opening images with PyMuPDF instead of PIL (observed, worth knowing for the loader): MuPDF opens
JPEG/PNG/BMP/GIF/TIFF as 1-page documents (the TIFF as 3 pages), sizes pages at 96 DPI (page.rect is
pixels * 0.75, so the default get_pixmap() downsamples), honours EXIF orientation (exif-rotate-6.jpg
renders upright) and cannot open WebP at all (pymupdf.FileDataError).

PDFs
- owner-only-encrypted.pdf (make_owner_password_pdf): AES-256, EMPTY user password, owner password
  "owner". PyMuPDF opens it silently: needs_pass is 0, and is_encrypted is False (it was unlocked with
  the empty password); only metadata["encryption"] ("Standard V5 R6 256-bit AES") shows it.
- password-secret.pdf (make_user_password_pdf): AES-256, user password "secret". PyMuPDF: needs_pass
  is 1, is_encrypted True, metadata is None, page_count already works (3) but loading a page raises
  ValueError("document closed or encrypted"); authenticate() returns 0 for a wrong password, 2 for the
  user password and 4 for the owner password "owner".
- truncated.pdf (make_truncated_pdf): the first half of a valid 3-page PDF. pymupdf.open tries to
  repair it and raises pymupdf.FileDataError ("Failed to open file ... as type pdf").
- truncated-repairable.pdf (make_truncated_repairable_pdf): the first half of a valid 10-page PDF.
  MuPDF's repair succeeds: is_repaired is True and page_count is 10, but only pages 1-5 keep their
  text; pages 6-10 come back blank (7-10 even at US Letter size instead of A4). Nothing raises, so a
  loader should warn on is_repaired. (Whether a truncated PDF opens depends on where the cut falls.)
- random.pdf (make_random_bytes_pdf): 4 KiB of seeded random bytes; pymupdf.FileDataError.
- notes.pdf (make_text_as_pdf): a plain-text file with a .pdf name; pymupdf.FileDataError (it trusts
  the extension). Sniffing the first bytes for b"%PDF-" tells it apart.
- zero-pages.pdf (make_zero_page_pdf): a hand-written, valid PDF whose page tree is empty
  (/Kids [] /Count 0), with a correct xref (PyMuPDF refuses to save such a document). pymupdf.open
  succeeds with page_count 0 and is_repaired False: "no pages" is not an error to MuPDF.
- huge-page.pdf (make_huge_page_pdf): one 14400x14400 pt page (200x200 inches, the largest that PDF
  1.7 allows without /UserUnit). Rendering it at 150 DPI would mean a 30000x30000 pixmap (2.7 GB RGB),
  so a loader must cap the render scale by pixel count.
- poster.pdf (make_poster_pdf): one 250x500-inch page (18000x36000 pt), past the 200-inch maximum of
  PDF 1.7; MuPDF opens and renders it at any scale like any other page.
- image-bomb.pdf (make_image_bomb_pdf): written by hand, one A4 page drawing a 40000x40000 1-bit
  Flate image (1,600 megapixels, about 200 KB compressed). page.get_images() reports its size without
  decoding it.
- password-unicode.pdf (make_unicode_password_pdf): AES-256 (R6) with the user password "pässwörd" in
  its SASLprep form (NFC), as a conforming writer stores it. MuPDF does not apply SASLprep: the same
  password typed decomposed (NFD, as macOS input can give) or with a soft hyphen fails authenticate().
- password-unprepared.pdf (make_unprepared_password_pdf): AES-256 (R6) encrypted by MuPDF with the raw,
  unprepared password "SªSL<soft hyphen>prep"; only those exact bytes open it, its SASLprep form
  "SaSLprep" does not.
- broken-page.pdf (make_broken_page_pdf): written by hand, 12 pages; page 2's object is damaged (its
  MediaBox array is never closed). MuPDF does not raise: it silently shows a blank US Letter page.
- page-tree-cycle.pdf (make_page_tree_cycle_pdf): written by hand, 12 entries in /Kids, the second one
  pointing back at the /Pages node itself. MuPDF loads page 1 and then raises "cycle in page tree" for
  page 2 and every page after it.
- mixed-text-layer.pdf (make_mixed_text_layer_pdf): 3 pages; pages 1 and 3 have a text layer, page 2
  is a single embedded image (a scanned page in the middle of a born-digital document).
- rotate-90.pdf (make_rotated_page_pdf): an A4 portrait MediaBox with /Rotate 90; the text is drawn
  so that it reads upright only when the rotation is honoured (page.rect is 842x595, landscape).

Other
- data.csv (make_non_document): a CSV file that input discovery must skip rather than try to OCR.
"""
from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image, ImageDraw, ImageFont

OWNER_PASSWORD = "owner"
USER_PASSWORD = "secret"
UNICODE_PASSWORD = "p\u00e4ssw\u00f6rd"  # "pässwörd", precomposed (NFC): its own SASLprep form
UNPREPARED_PASSWORD = "S\u00aaSL\u00adprep"  # RFC 4013's kind of example: SASLprep makes it "SaSLprep"
BOMB_SIDE = 30000
RED_BLOCK = (220, 0, 0)


def _text_image(size: tuple[int, int], text: str, mode: str = "RGB", background: object = "white",
                ink: object = "black") -> Image.Image:
    """A small image with one line of text, so each file is also a meaningful (if tiny) OCR page."""
    image = Image.new(mode, size, background)
    font = ImageFont.load_default(size=max(10, min(size[1] // 4, 28)))
    ImageDraw.Draw(image).text((10, size[1] // 3), text, fill=ink, font=font)
    return image


# ---------------------------------------------------------------- images

def make_cmyk_jpeg(dir: Path) -> Path:
    path = dir / "cmyk.jpg"
    # In CMYK, all-zero is white paper and K=255 is black ink.
    image = _text_image((400, 200), "CMYK JPEG", mode="CMYK", background=(0, 0, 0, 0), ink=(0, 0, 0, 255))
    image.save(path, quality=90)
    return path


def make_progressive_jpeg(dir: Path) -> Path:
    path = dir / "progressive.jpg"
    _text_image((400, 200), "Progressive JPEG").save(path, quality=90, progressive=True)
    return path


def make_multiframe_tiff(dir: Path) -> Path:
    path = dir / "multipage.tiff"
    frames = [_text_image(size, f"TIFF page {i}") for i, size in enumerate([(600, 400), (400, 600), (300, 300)], 1)]
    frames[0].save(path, save_all=True, append_images=frames[1:], compression="tiff_deflate")
    return path


def make_webp(dir: Path) -> Path:
    path = dir / "image.webp"
    _text_image((400, 200), "WebP image").save(path, lossless=True)
    return path


def make_bmp(dir: Path) -> Path:
    path = dir / "image.bmp"
    _text_image((400, 200), "BMP image").save(path)
    return path


def make_gif(dir: Path) -> Path:
    path = dir / "palette.gif"
    _text_image((400, 200), "GIF palette image").convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)
    return path


def make_palette_png_transparent(dir: Path) -> Path:
    """Palette index 0 is black and transparent, so dropping transparency paints the background black."""
    path = dir / "palette-transparent.png"
    image = Image.new("P", (400, 200), 0)
    image.putpalette([0, 0, 0, 30, 30, 30] + [255, 255, 255] * 254)
    font = ImageFont.load_default(size=40)
    ImageDraw.Draw(image).text((10, 70), "Palette PNG", fill=1, font=font)
    image.save(path, transparency=0)
    return path


def make_rgba_png(dir: Path) -> Path:
    path = dir / "rgba-transparent.png"
    _text_image((400, 200), "Transparent PNG", mode="RGBA", background=(0, 0, 0, 0), ink=(20, 20, 20, 255)).save(path)
    return path


def make_gray16_png(dir: Path) -> Path:
    """Dark-on-light text in 16 bits; every value is above 255, except the lowest part of the ramp."""
    path = dir / "gray16.png"
    width, height = 512, 200
    text = _text_image((width, 150), "16-bit grayscale", mode="L")
    ramp = bytes(v for x in range(width) for v in (x * 65535 // (width - 1)).to_bytes(2, "little")) * (height - 150)
    # Pillow cannot draw into I;16, so the 8-bit drawing is mapped onto two 16-bit levels by hand.
    body = b"".join((4000 if v < 128 else 60000).to_bytes(2, "little") for v in text.tobytes())
    Image.frombytes("I;16", (width, height), body + ramp).save(path)
    return path


def make_exif_rotated_jpeg(dir: Path) -> Path:
    """Stored sideways: the upright portrait has a red top block; stored pixels are it turned 90 deg CCW."""
    path = dir / "exif-rotate-6.jpg"
    upright = _text_image((200, 300), "UP")
    ImageDraw.Draw(upright).rectangle([0, 0, 199, 59], fill=RED_BLOCK)
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    stored.save(path, quality=90, exif=exif.tobytes())
    return path


def make_tiny_png(dir: Path) -> Path:
    path = dir / "1x1.png"
    Image.new("RGB", (1, 1), "white").save(path)
    return path


def make_extreme_aspect(dir: Path) -> Path:
    path = dir / "wide-4000x60.png"
    line = "An extremely wide strip of text, 4000 by 60 pixels, like a scanned banner or a table row. " * 3
    _text_image((4000, 60), line).save(path)
    return path


def make_empty_png(dir: Path) -> Path:
    path = dir / "empty.png"
    path.write_bytes(b"")
    return path


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def make_decompression_bomb(dir: Path, side: int = BOMB_SIDE) -> Path:
    """A white 1-bit PNG of side x side; rows are compressed in chunks so memory stays at a few MB."""
    path = dir / "bomb.png"
    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter byte "None", then all-white bits
    rows_per_chunk = 500
    compressor = zlib.compressobj(6)
    idat = []
    for start in range(0, side, rows_per_chunk):
        idat.append(compressor.compress(row * min(rows_per_chunk, side - start)))
    idat.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale, no interlace
    with path.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header))
        out.write(_png_chunk(b"IDAT", b"".join(idat)) + _png_chunk(b"IEND", b""))
    return path


def _upright_test_photo() -> tuple[Image.Image, bytes]:
    """The exif-rotate-6 picture stored sideways, and EXIF bytes saying Orientation=6."""
    upright = _text_image((200, 300), "UP")
    ImageDraw.Draw(upright).rectangle([0, 0, 199, 59], fill=RED_BLOCK)
    exif = Image.Exif()
    exif[0x0112] = 6
    return upright.transpose(Image.Transpose.ROTATE_90), exif.tobytes()


def make_heic_photo(dir: Path) -> Path:
    import pillow_heif  # the encoding build (x265); the package itself reads HEIC with pi-heif

    path = dir / "exif-rotate-6.heic"
    stored, exif = _upright_test_photo()
    pillow_heif.from_pillow(stored).save(path, quality=90, exif=exif)
    return path


def make_avif_photo(dir: Path) -> Path:
    path = dir / "exif-rotate-6.avif"
    stored, exif = _upright_test_photo()
    stored.save(path, quality=90, exif=exif)
    return path


def _frames(count: int, label: str) -> list[Image.Image]:
    return [_text_image((400, 200), f"{label} frame {i}") for i in range(1, count + 1)]


def make_animated_gif(dir: Path) -> Path:
    path = dir / "animated.gif"
    frames = [f.convert("P", palette=Image.Palette.ADAPTIVE, colors=16) for f in _frames(3, "GIF")]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=500, loop=0)
    return path


def make_animated_webp(dir: Path) -> Path:
    path = dir / "animated.webp"
    frames = _frames(3, "WebP")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=500, loop=0, lossless=True)
    return path


def _page_of_lines(label: str) -> Image.Image:
    """A 600x800 page of text lines top to bottom, so every band of rows has ink."""
    image = Image.new("RGB", (600, 800), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=20)
    for number, y in enumerate(range(20, 780, 30), 1):
        draw.text((10, y), f"{label} line {number}: the quick brown fox", fill="black", font=font)
    return image


def _cut(data: bytes, share: float, path: Path) -> Path:
    path.write_bytes(data[: int(len(data) * share)])
    return path


@lru_cache(maxsize=1)
def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    _page_of_lines("JPEG").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@lru_cache(maxsize=1)
def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    # Noise under the text keeps the PNG from compressing to almost nothing, so shares of bytes ~ rows.
    page = np.asarray(_page_of_lines("PNG"), dtype=np.int16)
    noise = np.random.default_rng(13).integers(0, 24, size=page.shape[:2], dtype=np.int16)[..., None]
    Image.fromarray(np.clip(page - noise, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_truncated_jpeg(dir: Path) -> Path:
    return _cut(_jpeg_bytes(), 0.8, dir / "cut-80.jpg")


def make_truncated_jpeg_short(dir: Path) -> Path:
    return _cut(_jpeg_bytes(), 0.15, dir / "cut-15.jpg")


def make_truncated_png(dir: Path) -> Path:
    return _cut(_png_bytes(), 0.75, dir / "cut-75.png")


def make_truncated_png_short(dir: Path) -> Path:
    return _cut(_png_bytes(), 0.25, dir / "cut-25.png")


# ---------------------------------------------------------------- PDFs

def _text_pdf(pages: int, label: str = "Page") -> pymupdf.Document:
    doc = pymupdf.open()
    for number in range(1, pages + 1):
        page = doc.new_page(width=595, height=842)
        page.insert_text((72, 90), f"{label} {number}: the quick brown fox jumps over the lazy dog.", fontsize=14)
    return doc


def _save(doc: pymupdf.Document, path: Path, **options: object) -> Path:
    # no_new_id keeps unencrypted files byte-identical between runs.
    doc.save(path, garbage=3, deflate=True, no_new_id=True, **options)
    return path


def make_owner_password_pdf(dir: Path) -> Path:
    return _save(_text_pdf(3, "Owner-protected page"), dir / "owner-only-encrypted.pdf",
                 encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw=OWNER_PASSWORD, user_pw="")


def make_user_password_pdf(dir: Path) -> Path:
    return _save(_text_pdf(3, "Secret page"), dir / "password-secret.pdf",
                 encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw=OWNER_PASSWORD, user_pw=USER_PASSWORD)


def _truncated(pages: int, path: Path) -> Path:
    whole = _text_pdf(pages).tobytes(garbage=3, deflate=True, no_new_id=True)
    path.write_bytes(whole[: len(whole) // 2])
    return path


def make_truncated_pdf(dir: Path) -> Path:
    return _truncated(3, dir / "truncated.pdf")


def make_truncated_repairable_pdf(dir: Path) -> Path:
    return _truncated(10, dir / "truncated-repairable.pdf")


def make_random_bytes_pdf(dir: Path) -> Path:
    path = dir / "random.pdf"
    path.write_bytes(random.Random(20240315).randbytes(4096))
    return path


def make_text_as_pdf(dir: Path) -> Path:
    path = dir / "notes.pdf"
    path.write_text("Meeting notes\n- order more copy paper\n- this is plain text, not a PDF\n", encoding="utf-8")
    return path


def _write_pdf(objects: list[bytes], path: Path) -> Path:
    """Writes objects 1..N by hand (object 1 is the catalog); the xref holds each object's byte offset as 10
    digits, entries exactly 20 bytes, so the file is valid however odd its objects are."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at)
    path.write_bytes(bytes(out))
    return path


def _stream(body: bytes, extra: bytes = b"") -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (extra, len(body), body)


def make_zero_page_pdf(dir: Path) -> Path:
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    return _write_pdf(objects, dir / "zero-pages.pdf")


def _hand_written_pages(count: int, kids=None, damage=None) -> list[bytes]:
    """Catalog, page tree, a font, then per page its object and content; `kids` rewrites the /Kids entries,
    `damage` gets the object list to break one object in place."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    refs = []
    for number in range(1, count + 1):
        page_object = len(objects) + 1
        refs.append(b"%d 0 R" % page_object)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                       b"/Contents %d 0 R >>" % (page_object + 1))
        objects.append(_stream(b"BT /F1 20 Tf 72 760 Td (Page %d: the quick brown fox jumps over the lazy dog.) Tj ET"
                               % number))
    refs = kids(refs) if kids else refs
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(refs), len(refs))
    if damage:
        damage(objects)
    return objects


def make_broken_page_pdf(dir: Path) -> Path:
    def damage(objects: list[bytes]) -> None:
        objects[5] = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842 /Contents 7 0 R >>"  # page 2, object 6

    return _write_pdf(_hand_written_pages(12, damage=damage), dir / "broken-page.pdf")


def make_page_tree_cycle_pdf(dir: Path) -> Path:
    return _write_pdf(_hand_written_pages(12, kids=lambda refs: [refs[0], b"2 0 R", *refs[2:]]),
                      dir / "page-tree-cycle.pdf")


def make_image_bomb_pdf(dir: Path, side: int = 40000) -> Path:
    """A 1-bit white image. After a full flush deflate forgets its history, so every further band of rows
    compresses to the same bytes: the stream is made from one band, without compressing 200 MB."""
    band = (b"\xff" * ((side + 7) // 8)) * 1000
    compressor = zlib.compressobj(9)
    first = compressor.compress(band) + compressor.flush(zlib.Z_FULL_FLUSH)  # with the zlib header
    repeat = compressor.compress(band) + compressor.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(side // 1000):
        checksum = zlib.adler32(band, checksum)
    data = first + repeat * (side // 1000 - 1) + b"\x03\x00" + checksum.to_bytes(4, "big")  # final empty block
    image = _stream(data, b"/Type /XObject /Subtype /Image /Width %d /Height %d /BitsPerComponent 1 "
                          b"/ColorSpace /DeviceGray /Filter /FlateDecode" % (side, side))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /XObject << /Im1 5 0 R >> >> "
               b"/Contents 4 0 R >>", _stream(b"q 595 0 0 842 0 0 cm /Im1 Do Q"), image]
    return _write_pdf(objects, dir / "image-bomb.pdf")


def make_poster_pdf(dir: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=18000, height=36000)
    page.insert_text((600, 2000), "A 250 x 500 inch poster", fontsize=1200)
    return _save(doc, dir / "poster.pdf")


def make_unicode_password_pdf(dir: Path) -> Path:
    return _save(_text_pdf(2, "Unicode-protected page"), dir / "password-unicode.pdf",
                 encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw=OWNER_PASSWORD, user_pw=UNICODE_PASSWORD)


def make_unprepared_password_pdf(dir: Path) -> Path:
    return _save(_text_pdf(1, "Unprepared-password page"), dir / "password-unprepared.pdf",
                 encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw=OWNER_PASSWORD, user_pw=UNPREPARED_PASSWORD)


def make_huge_page_pdf(dir: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=14400, height=14400)
    page.insert_text((100, 200), "A 200 x 200 inch page (14400 pt square).", fontsize=120)
    return _save(doc, dir / "huge-page.pdf")


def make_mixed_text_layer_pdf(dir: Path) -> Path:
    doc = pymupdf.open()
    for number in (1, 2, 3):
        page = doc.new_page(width=595, height=842)
        if number == 2:
            scan = _text_image((1240, 1754), "Page 2 is a scanned image without a text layer", mode="L")
            buffer = io.BytesIO()
            scan.save(buffer, format="PNG")
            page.insert_image(page.rect, stream=buffer.getvalue())
        else:
            page.insert_text((72, 90), f"Born-digital page {number} with a text layer.", fontsize=14)
    return _save(doc, dir / "mixed-text-layer.pdf")


def make_rotated_page_pdf(dir: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.set_rotation(90)
    # Text is rotated against /Rotate so it reads upright only when the viewer applies the rotation.
    origin = pymupdf.Point(60, 90) * page.derotation_matrix
    page.insert_text(origin, "Landscape page: /Rotate 90 must be honoured.", fontsize=20, rotate=90)
    return _save(doc, dir / "rotate-90.pdf")


# ---------------------------------------------------------------- other

def make_non_document(dir: Path) -> Path:
    path = dir / "data.csv"
    path.write_text("quarter,revenue\nQ1,12.5\nQ2,15.0\nQ3,9.8\nQ4,18.2\n", encoding="utf-8")
    return path


MAKERS: tuple[Callable[[Path], Path], ...] = (
    make_cmyk_jpeg, make_progressive_jpeg, make_multiframe_tiff, make_webp, make_bmp, make_gif,
    make_palette_png_transparent, make_rgba_png, make_gray16_png, make_exif_rotated_jpeg, make_tiny_png,
    make_extreme_aspect, make_empty_png, make_decompression_bomb,
    make_heic_photo, make_avif_photo, make_animated_gif, make_animated_webp, make_truncated_jpeg,
    make_truncated_jpeg_short, make_truncated_png, make_truncated_png_short,
    make_owner_password_pdf, make_user_password_pdf, make_truncated_pdf, make_truncated_repairable_pdf,
    make_random_bytes_pdf, make_text_as_pdf, make_zero_page_pdf, make_huge_page_pdf,
    make_mixed_text_layer_pdf, make_rotated_page_pdf, make_non_document,
    make_poster_pdf, make_image_bomb_pdf, make_unicode_password_pdf, make_unprepared_password_pdf,
    make_broken_page_pdf, make_page_tree_cycle_pdf,
)


def make_all(dir: Path) -> dict[str, Path]:
    """Writes every awkward file into `dir`; keys are the maker names without `make_` (e.g. "cmyk_jpeg")."""
    dir.mkdir(parents=True, exist_ok=True)
    return {maker.__name__.removeprefix("make_"): maker(dir) for maker in MAKERS}
