"""Step 1 helper, images cut short: decodes the rows a truncated JPEG or PNG still holds, and says how many.

An interrupted upload or scan leaves a JPEG or PNG whose top part is intact. Pillow refuses such files
unless `ImageFile.LOAD_TRUNCATED_IMAGES` is set, but that switch is process-wide (pages are decoded in a
background thread while other documents are opened), so it is never touched here. Instead the bytes that
are present are turned into a complete, smaller file that Pillow decodes normally:

* JPEG: an end-of-image marker is appended, which is what Pillow itself does under the switch; libjpeg
  then fills the missing blocks with zero coefficients, which decode to flat mid-grey (128). The rows
  present are those above the trailing rows that are entirely that grey. A progressive JPEG usually has
  every row (at lower detail) once its first scan is complete.
* PNG: the IDAT data present is inflated, the complete scanlines are kept and re-compressed into a PNG of
  that many rows (filters only refer to the row above, so they stay valid). Interlaced PNGs are refused:
  a partial Adam7 image is a grid of holes.

The caller decides from `Salvaged.fraction` whether enough is there to read.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_EOI = b"\xff\xd9"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: empty, so its CRC is fixed
_JPEG_FILL = 128  # zero DCT coefficients decode to this level in every channel
# PNG chunks that describe how to read the pixels; they are copied into the rebuilt file when complete.
_PNG_KEPT_CHUNKS = {b"PLTE", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"eXIf", b"bKGD"}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


class NotSalvageable(ValueError):
    """Nothing can be read from the file; the message says why (used inside the caller's error)."""


@dataclass
class Salvaged:
    image: Image.Image  # only the rows that were present, decoded, file metadata (EXIF) kept
    rows: int
    height: int  # rows the complete image would have

    @property
    def fraction(self) -> float:
        return self.rows / self.height if self.height else 0.0


def is_truncated(data: bytes) -> bool:
    """Whether a JPEG or PNG file ends before its end marker (other damage is not truncation)."""
    if data.startswith(PNG_MAGIC):
        return _PNG_END not in data
    if data.startswith(JPEG_MAGIC):
        return not data.rstrip(b"\x00").endswith(_JPEG_EOI)
    return False


def salvage(data: bytes) -> Salvaged:
    """The decodable top part of a truncated JPEG or PNG; raises NotSalvageable when there is none."""
    if data.startswith(PNG_MAGIC):
        return _salvage_png(data)
    if data.startswith(JPEG_MAGIC):
        return _salvage_jpeg(data)
    raise NotSalvageable("not a JPEG or PNG file")


# ---------------------------------------------------------------- JPEG


def _salvage_jpeg(data: bytes) -> Salvaged:
    try:
        image = Image.open(io.BytesIO(data + _JPEG_EOI))
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotSalvageable(f"it ends inside the JPEG headers ({type(exc).__name__})") from None
    height = image.height
    rows = height - _trailing_fill_rows(np.asarray(image))
    if rows <= 0:
        raise NotSalvageable("it ends before any of its pixel data")
    return Salvaged(image=image.crop((0, 0, image.width, rows)) if rows < height else image, rows=rows,
                    height=height)


def _trailing_fill_rows(pixels: np.ndarray) -> int:
    """How many bottom rows are entirely libjpeg's fill level (the blocks the file did not reach)."""
    flat = pixels.reshape(pixels.shape[0], -1)
    filled = np.all(flat == _JPEG_FILL, axis=1)
    if not filled[-1]:
        return 0
    real = np.flatnonzero(~filled)
    return int(len(filled) - (real[-1] + 1 if real.size else 0))


# ---------------------------------------------------------------- PNG


def _salvage_png(data: bytes) -> Salvaged:
    header, kept, idat = _png_chunks(data)
    if header is None:
        raise NotSalvageable("it ends inside the PNG header")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if colour not in _PNG_CHANNELS or width == 0 or height == 0:
        raise NotSalvageable("its PNG header is invalid")
    if interlace:
        raise NotSalvageable("it is an interlaced PNG, whose partial data is scattered over the whole image")
    stride = 1 + (width * _PNG_CHANNELS[colour] * depth + 7) // 8
    raw = _inflate_prefix(idat, limit=stride * height)
    rows = min(height, len(raw) // stride)
    if rows == 0:
        raise NotSalvageable("it ends before its first complete row of pixels")
    rebuilt = bytearray(PNG_MAGIC)
    rebuilt += _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, rows, depth, colour, 0, 0, 0))
    for tag, body in kept:
        rebuilt += _png_chunk(tag, body)
    rebuilt += _png_chunk(b"IDAT", zlib.compress(raw[: rows * stride], 1)) + _png_chunk(b"IEND", b"")
    try:
        image = Image.open(io.BytesIO(bytes(rebuilt)))
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotSalvageable(f"its remaining rows cannot be decoded ({type(exc).__name__})") from None
    return Salvaged(image=image, rows=rows, height=height)


def _png_chunks(data: bytes) -> tuple[bytes | None, list[tuple[bytes, bytes]], bytes]:
    """(IHDR body, complete ancillary chunks before the pixels, the IDAT bytes present)."""
    header: bytes | None = None
    kept: list[tuple[bytes, bytes]] = []
    idat = bytearray()
    pos = len(PNG_MAGIC)
    while pos + 8 <= len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        complete = len(body) == length and pos + 12 + length <= len(data)
        if tag == b"IHDR":
            if not complete or length != 13:
                break
            header = body
        elif tag == b"IDAT":
            idat += body  # the last one may be cut; inflating stops where its bytes stop
        elif idat or tag == b"IEND":
            break  # past the image data
        elif tag in _PNG_KEPT_CHUNKS and complete:
            kept.append((tag, body))
        pos += 12 + length
    return header, kept, bytes(idat)


def _inflate_prefix(compressed: bytes, limit: int) -> bytes:
    """Inflates as much of a cut zlib stream as its bytes allow (at most `limit` bytes)."""
    inflater = zlib.decompressobj()
    out = bytearray()
    step = 1 << 14  # small steps bound the overshoot past `limit` (zlib expands at most ~1000x)
    try:
        for start in range(0, len(compressed), step):
            out += inflater.decompress(compressed[start:start + step])
            if len(out) >= limit:
                break
    except zlib.error:
        pass  # damaged past this point: keep what inflated cleanly
    return bytes(out[:limit])


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
