"""Step 4a, the task interface shared by ocr, chart and extract, and the per-document result they produce."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..engine.base import DEFAULT_MAX_NEW_TOKENS, GenerationRequest, GenerationResult
from ..errors import InternVLError
from ..flags import Flag
from ..documents.encoded import Preparer
from ..documents.kept import KeptDocuments
from ..documents.pages import Page, count_pages, open_pages
from ..documents.tiling import TiledImage, TilePlan


@dataclass
class UnitContext:
    """What a task knows about a unit's pages when it makes the unit, and reads back when it writes its records."""

    page_count: int | None = None  # the document's pages ("pages" in page records)
    source: str | None = None  # "vision", or "vision+text-layer" when a text layer anchors the prompt
    repaired: bool = False  # MuPDF repaired the file (or its page tree was rebuilt)
    page_flags: list[Flag] = field(default_factory=list)  # the pages' own: truncated-image, broken-page, ...
    window: int | None = None  # extract: the first page of the window this unit asks about
    page_size: tuple[float, float] | None = None  # ocr lines: the page in its own units (points or pixels)
    layer_lines: list | None = None  # ocr lines: the PDF's own lines (TextLine) when they give the boxes


@dataclass(frozen=True)
class UnitBudget:
    """The most one unit asks of the engine: its tiles (thumbnails included) and its answer's tokens. Default
    batch limits are sized from it (a 40-tile poster run or a 4,096-token budget is not an A4 page at 1,024)."""

    tiles: int = 13
    answer_tokens: int = DEFAULT_MAX_NEW_TOKENS


@dataclass
class Unit:
    """One engine request of a document (a page for ocr/chart, a page window for extract) and what it covers."""

    key: int
    request: GenerationRequest | None  # None when preparing it failed (error set)
    pages: list[int]  # 1-based page numbers covered
    plans: list[TilePlan] = field(default_factory=list)
    context: UnitContext = field(default_factory=UnitContext)
    error: InternVLError | None = None
    # the answers of earlier attempts, first first, when the task asked for another try (`Task.retry_request`)
    earlier: list[GenerationResult] = field(default_factory=list)
    # the answers to the follow-up questions the task asked after this unit's answer (`Task.follow_ups`), in the
    # order asked; None where a follow-up failed
    follow_ups: list[GenerationResult | None] = field(default_factory=list)
    parent: Unit | None = None  # on a follow-up: the unit it asks about (its answer goes to parent.follow_ups)
    slot: int = 0  # on a follow-up: its place in parent.follow_ups

    @property
    def attempts(self) -> int:
        """Retries already made."""
        return len(self.earlier)

    def settle(self) -> None:
        """Waits for images prepared elsewhere (render workers). One whose page failed to prepare with a typed
        error fails the unit, as preparing it here would have; any other error is raised, as it would have been."""
        if self.request is None:
            return
        try:
            for image in self.request.images:
                if isinstance(image, TiledImage):
                    image.settle()
        except InternVLError as exc:
            self.request, self.plans, self.error = None, [], exc
            self.context = UnitContext(page_count=self.context.page_count, page_flags=self.context.page_flags)

    def try_again(self, result: GenerationResult, request: GenerationRequest) -> None:
        """Keeps `result` beside the unit (the task chooses among its attempts) and asks `request` next."""
        self.earlier.append(result)
        self.request = request


@dataclass
class Outcome:
    unit: Unit
    result: GenerationResult | None
    error: InternVLError | None


@dataclass
class DocumentResult:
    """What a task made of one document: records (one per page, or one per document) and its status."""

    path: Path
    records: list[dict]
    failed: bool = False
    error: InternVLError | None = None
    page_count: int = 0
    seconds: float = 0.0
    keep_output: bool = False  # emit the records even though the document failed (they carry the errors)


class Task(Protocol):
    """What a run asks of a task. Tasks inherit this class, so the optional abilities below have their defaults
    and the runner just calls them."""

    name: str
    max_retries: int = 1  # how many times one unit may be tried again (see `retry_request`)

    def fingerprint(self) -> dict:
        """Everything that changes this task's output (prompt text, settings): hashed into the ledger key."""
        ...

    def units(self, path: Path) -> Iterator[Unit]:
        """Opens the document and yields its units with tiles ready; raises InternVLError if it cannot be read."""
        ...

    def finish(self, path: Path, outcomes: list[Outcome], page_count: int) -> DocumentResult:
        ...

    def render(self, result: DocumentResult, fmt: str) -> str:
        """The document's output in `fmt`, as written to stdout or to its output file."""
        ...

    # ---------------------------------------------------------------- optional abilities, with defaults

    def prepare_with(self, preparer: Preparer) -> bool:
        """Makes the task's images with `preparer` (a run's render workers, for servers); False when the task
        keeps its own way (then its images are encoded when sent). By default it keeps its own."""
        return False

    def check(self, path: Path) -> None:
        """Opens the document as `units` will, without tiling, and raises InternVLError if it cannot be read (runs
        call it for every document before the weights load). By default nothing is checked."""

    def retry_request(self, unit: Unit, result: GenerationResult) -> GenerationRequest | None:
        """The request for another try of a unit after `result` (e.g. a page that looped), or None to keep the
        result. By default never."""
        return None

    def budget(self) -> UnitBudget:
        """The most tiles and answer tokens one of this task's units asks for. By default an A4 page's budget."""
        return UnitBudget()

    def page_count(self, path: Path) -> int | None:
        """How many pages the run will make of `path`, counted cheaply before anything loads (`--engine auto`
        weighs them); None when unknown. By default unknown."""
        return None

    def follow_ups(self, unit: Unit, result: GenerationResult) -> list[GenerationRequest]:
        """Further questions about a unit's page once its (final) answer is in, e.g. where each transcribed line
        sits; the unit is finished when all are answered, their answers in `unit.follow_ups`. By default none."""
        return []


class DocumentTask(Task):
    """A task that reads each document's pages with open_pages (ocr, chart, extract). The check before the
    weights load opens the document, and the run's units use that open document while memory allows
    (documents/kept.py), so a document is opened once, not twice."""

    def __init__(self, options: Any):
        self.options = options  # password, pages and frames say how documents are opened
        self.documents = KeptDocuments(self.open)

    def open(self, path: Path) -> Iterator[Page]:
        """The document's selected pages, opened the one way both `check` and `units` use."""
        return open_pages(path, password=self.options.password, pages=self.options.pages,
                          frames=self.options.frames)

    def check(self, path: Path) -> None:
        self.documents.check(path)

    def pages(self, path: Path) -> Iterator[Page]:
        """The document's pages for its units: as its check opened them, or opened now."""
        return self.documents.pages(path)

    def page_count(self, path: Path) -> int | None:
        o = self.options
        return count_pages(path, password=o.password, pages=o.pages, frames=o.frames)

    def budget(self) -> UnitBudget:
        """A page: the tile limit and a thumbnail, and the answer budget."""
        return UnitBudget(self.options.tiling.max_tiles + 1, self.options.sampling.max_new_tokens)


# Characters JSON allows raw but line splitters (Python's splitlines, some JSONL readers) treat as line ends.
_LINE_BREAKERS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_line(obj: object) -> str:
    """One JSON Lines record: UTF-8 text kept readable, but never a character that could split the line."""
    text = json.dumps(obj, ensure_ascii=False)
    for char, escape in _LINE_BREAKERS.items():
        text = text.replace(char, escape)
    return text + "\n"


# C0 controls but tab and newline, DEL, and C1 controls (a terminal reads U+009B as ESC [): never document text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ESCAPE_SEQUENCE = re.compile("\x1b\\[[0-?]*[ -/]*[@-~]")  # ANSI CSI (colours, cursor moves): gone whole


def clean_text(text: str) -> str:
    """An answer made safe for terminals and files: line ends as \\n, no control characters but tab and newline."""
    text = _ESCAPE_SEQUENCE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _CONTROL.sub("", text)


def clean_value(value: object) -> object:
    """`clean_text` applied to every string (keys too) of a JSON value."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_value(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(key): clean_value(item) for key, item in value.items()}
    return value


def digest(obj: object) -> str:
    """A stable sha256 of JSON-serialisable settings."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def failure_exceeds(failed: int, total: int, max_rate: float) -> bool:
    """olmOCR's rule: a document fails only when its failed-page share is above the tolerated rate."""
    if total == 0:
        return True
    return failed > max_rate * total or failed == total
