"""Step 1, documents opened once: what a run's check opens (before the weights load) is kept for the units the run
then makes of it, while memory allows, instead of opening every document twice."""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .pages import Page

# Documents held open between their check and their units: each holds a file handle and MuPDF's parsed document
# (or an image's decoded first frame), and a run's producer reaches them in order, the first ones soonest.
KEPT_DOCUMENTS = 64
KEPT_BYTES = 128 * 2**20  # decoded pages held in all (a 12-megapixel photo is 36 MB)


class KeptDocuments:
    """Opens documents for a task: `check` reads a document's first page (every document-level check: format,
    password, page range, an empty or undecodable single image) and keeps the open document for `pages`, up to
    `max_documents` documents and `max_bytes` of decoded pages; beyond that it closes it and `pages` opens the
    document again. Safe to check in one thread and take the pages in another (a run's producer thread)."""

    def __init__(self, opener: Callable[[Path], Iterator[Page]], max_documents: int = KEPT_DOCUMENTS,
                 max_bytes: int = KEPT_BYTES):
        self._open = opener
        self.max_documents = max_documents
        self.max_bytes = max_bytes
        self._kept: dict[Path, tuple[Iterator[Page], int]] = {}
        self._held = 0
        self._lock = threading.Lock()

    def check(self, path: Path) -> None:
        """Raises InternVLError when the document cannot be read; problems of later pages stay per page, as in
        a run."""
        pages = self._open(path)
        try:
            first = next(pages, None)
        except BaseException:
            _close(pages)
            raise
        if first is None or not self._keep(path, itertools.chain([first], pages), first.held_bytes):
            _close(pages)

    def pages(self, path: Path) -> Iterator[Page]:
        """The document's pages: the ones its check opened, when kept (once), else opened now."""
        with self._lock:
            kept = self._kept.pop(path, None)
            if kept is None:
                return self._open(path)
            self._held -= kept[1]
        return kept[0]

    def _keep(self, path: Path, pages: Iterator[Page], cost: int) -> bool:
        with self._lock:
            if path in self._kept or len(self._kept) >= self.max_documents or self._held + cost > self.max_bytes:
                return False
            self._kept[path] = (pages, cost)
            self._held += cost
            return True


def _close(pages: Iterator[Page]) -> None:
    """Ends a page iterator now (an image file is closed at once, a PDF with its last page)."""
    close = getattr(pages, "close", None)
    if close is not None:
        close()
