"""Step 2, pages -> pictures as servers take them: the grid's raster encoded once as a lossless PNG, here or in a
render worker process, and only the encoded bytes kept while its request is on the wire.

The PNG writer is our own, chosen by measurement (benchmarks/README.md, server_headroom.py): every row with PNG's
"Up" filter (a numpy subtraction), deflated by ISA-L (`isal`) at level 1, zlib's level 1 where isal is missing.
Pillow's writer spends most of its time choosing a filter per row; zlib itself then spends ~20 ms on an A4 grid,
ISA-L ~3.5 ms for 10-17% more bytes. The pixels decoded are identical (tested). Stored (level 0) blocks would
send ~11x the bytes, which a fleet's network pays for; ISA-L's level 0 is no faster than its level 1.
"""
from __future__ import annotations

import struct
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Protocol

import numpy as np

from .pages import Page
from .tiling import TiledImage, TilingConfig, plan_tiles, prepare_page

try:  # ISA-L's deflate: a zlib stream like zlib's, at a fifth of its CPU (wheels for the common platforms)
    from isal.isal_zlib import compress as _deflate, crc32 as _crc32
except ImportError:  # pragma: no cover - a platform without isal's wheels
    from zlib import compress as _deflate, crc32 as _crc32

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_FILTER_UP = 2
PNG_DEFLATE_LEVEL = 1


def encode_png(pixels: np.ndarray) -> bytes:
    """A lossless RGB PNG of uint8 (H, W, 3) pixels: Up filter on every row, deflate level 1."""
    height, width, channels = pixels.shape
    if channels != 3 or pixels.dtype != np.uint8:
        raise ValueError("encode_png takes uint8 RGB pixels")
    rows = np.ascontiguousarray(pixels).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = PNG_FILTER_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as the filter is defined
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (PNG_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", _deflate(memoryview(filtered).cast("B"), PNG_DEFLATE_LEVEL)) + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", _crc32(data, _crc32(kind)))


class RenderFailed(Exception):
    """A page that could not be rendered or encoded in a worker process, carried back by name and message (the
    library's own exception may not survive pickling); reported as that exception would have been."""

    def __init__(self, kind: str, message: str, typed: bool = False):
        super().__init__(kind, message, typed)  # all three, so it survives pickling
        self.kind, self.message, self.typed = kind, message, typed

    def __str__(self) -> str:
        return self.message


class EncodedPicture:
    """The PNG of one grid, ready now or later (a worker's future). Its bytes count against the run's budget
    for as long as this object lives (its request is dropped once answered)."""

    def __init__(self, future: Future, on_ready: Callable[[EncodedPicture, int], None] | None = None):
        self._future = future
        self._on_ready = on_ready
        self._data: bytes | None = None

    def done(self) -> bool:
        return self._data is not None or self._future.done()

    def result(self) -> bytes:
        """The PNG bytes; raises what rendering raised (InternVLError, or RenderFailed from a worker)."""
        if self._data is None:
            self._data = self._future.result()
            self._future = None  # type: ignore[assignment]
            if self._on_ready is not None:
                self._on_ready(self, len(self._data))
        return self._data


class Preparer(Protocol):
    """How a page-wise task turns a page into the image its request carries."""

    def prepare(self, page: Page, config: TilingConfig) -> TiledImage: ...


class RasterPreparer:
    """The raster at the grid's size (and thumbnail), rendered now: what transformers and in-process vLLM take."""

    def prepare(self, page: Page, config: TilingConfig) -> TiledImage:
        return prepare_page(page, config)


class ByteBudget:
    """Encoded bytes alive in a run (prepared ahead, queued or on the wire): preparing more waits while they
    are over `limit`. A picture's bytes are released when its EncodedPicture is freed."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._changed = threading.Condition(threading.RLock())

    def track(self, picture: EncodedPicture, size: int) -> None:
        with self._changed:
            self.held += size
        weakref.finalize(picture, self._release, size)

    def _release(self, size: int) -> None:
        with self._changed:
            self.held -= size
            self._changed.notify_all()

    def wait_for_room(self, stop: threading.Event, timeout: float = 0.2) -> None:
        """Returns once under the limit (or when `stop` is set)."""
        with self._changed:
            while self.held > self.limit and not stop.is_set():
                self._changed.wait(timeout)  # a stop request is seen within `timeout`


class InProcessPngPreparer:
    """Renders in the calling thread (`--render-workers 0` or 1) and encodes in `encoder`'s threads: zlib and
    numpy release the GIL, so a page's encoding overlaps the next one's rendering (as when the request threads
    encoded). Only the PNG is kept. The thumbnail is not rendered: a server's own tiler makes it (README: same
    tiles on every engine)."""

    def __init__(self, budget: ByteBudget, encoder: Executor | None = None):
        self.budget = budget
        self.encoder = encoder

    def prepare(self, page: Page, config: TilingConfig) -> TiledImage:
        future: Future = Future()
        try:
            pixels = np.asarray(grid_picture(page, config), dtype=np.uint8)
        except Exception as exc:  # kept for the unit: raised when it is settled, in the page's order
            future.set_exception(exc)
        else:
            if self.encoder is not None:
                future = self.encoder.submit(encode_png, pixels)
            else:
                future.set_result(encode_png(pixels))
        return pending_image(page, config, EncodedPicture(future, self.budget.track))


def pending_image(page: Page, config: TilingConfig, picture: EncodedPicture) -> TiledImage:
    """A TiledImage that carries only its plan and its (possibly pending) PNG."""
    plan = plan_tiles(page.width, page.height, config)
    return TiledImage(plan=plan, grid=None, thumbnail=None, config=config, encoded=picture)


def grid_picture(page: Page, config: TilingConfig):
    """The page at its grid's pixel size, as prepare_page renders it (images resized as GotOcr2 does)."""
    if page.kind != "pdf":
        image = page.native_image()
        plan = plan_tiles(image.width, image.height, config)
        return image.resize((plan.cols * config.tile_size, plan.rows * config.tile_size), config.resample)
    plan = plan_tiles(page.width, page.height, config)
    return page.render(plan.cols * config.tile_size, plan.rows * config.tile_size)

