"""Step 5, orchestration: documents -> units (rendered ahead in a background thread) -> engine stream -> sinks."""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..documents.encoded import ByteBudget, RenderFailed
from ..documents.tiling import TiledImage
from ..engine.base import BatchLimits, Engine, GenerationRequest
from ..errors import ExitCode, InternVLError, ServerError
from ..tasks.base import DocumentResult, Outcome, Task, Unit
from .render_pool import RENDER_BUDGET_BYTES, EncodeThreads, RenderPool, check_render_workers, settle_depth, start_preparer


@dataclass
class RunOptions:
    """Batching limits: a batch holds at most `batch_size` requests and `max_batch_tiles` tiles.

    How many units are in hand at once is the engine's window (two batches for transformers, the continuous
    batch for vLLM, the requests in flight for servers); rendering runs at most one window ahead of that, so
    memory is bounded by two windows of prepared units (~5 MB each at 7 tiles: uint8 pixels).
    """

    batch_size: int = 8
    max_batch_tiles: int = 64
    lookahead: int | None = None  # units rendered ahead; None: the engine's window
    # for engines that take encoded pictures (servers): worker processes rendering and encoding pages
    # (None: the CPU count; 0 or 1: the preparing thread does it) and the encoded bytes a run may hold
    render_workers: int | None = None
    render_budget_bytes: int = RENDER_BUDGET_BYTES

    @property
    def limits(self) -> BatchLimits:
        return BatchLimits(batch_size=self.batch_size, max_tiles=self.max_batch_tiles)


@dataclass
class DocumentFailure:
    path: Path
    error: InternVLError


@dataclass
class RunReport:
    done: int = 0
    skipped: int = 0
    failures: list[DocumentFailure] = field(default_factory=list)
    interrupted: ExitCode | None = None
    fatal: InternVLError | None = None  # what stopped the run early (no server live): the rest stays pending
    pages: int = 0
    seconds: float = 0.0

    def exit_code(self) -> ExitCode:
        """0 all done; one failure class alone keeps its code; failures beside successes -> PARTIAL."""
        if self.interrupted is not None:
            return self.interrupted
        if not self.failures:
            return ExitCode.OK
        codes = {failure.error.exit_code for failure in self.failures}
        if self.done == 0 and len(codes) == 1:
            return codes.pop()
        return ExitCode.PARTIAL


class Sink(Protocol):
    """Where finished documents go: stdout, or an output directory with its ledger."""

    def emit(self, path: Path, result: DocumentResult, rendered: str) -> None: ...

    def fail(self, path: Path, error: InternVLError) -> None: ...


class Progress(Protocol):
    def document_started(self, path: Path) -> None: ...

    def pages_done(self, count: int) -> None: ...

    def document_finished(self, path: Path, ok: bool, pages: int = 0) -> None: ...

    def close(self) -> None: ...


class SilentProgress:
    """Progress that reports nothing (library use, `--quiet`)."""

    def document_started(self, path: Path) -> None:
        pass

    def pages_done(self, count: int) -> None:
        pass

    def document_finished(self, path: Path, ok: bool, pages: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class _Doc:
    path: Path
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    expected: int | None = None
    error: InternVLError | None = None
    pages_seen: set[int] = field(default_factory=set)  # pages already counted (votes ask about a page N times)
    waiting: dict[int, list] = field(default_factory=dict)  # unit key -> [its answer, follow-ups still out]

    @property
    def complete(self) -> bool:
        return self.error is not None or (
            self.expected is not None and len(self.outcomes) == self.expected)


_END = object()


class Runner:
    """Runs one task over many documents with one engine; the model is loaded once by the caller."""

    def __init__(self, task: Task, engine: Engine, sink: Sink, fmt: str, options: RunOptions = RunOptions(),
                 progress: Progress | None = None, stop: threading.Event | None = None):
        self.task, self.engine, self.sink, self.fmt = task, engine, sink, fmt
        self.options = options
        self.progress = progress or SilentProgress()
        self.stop = stop or threading.Event()
        self.stop_code = ExitCode.INTERRUPTED
        self.report = RunReport()
        self._docs: list[_Doc] = []
        self._next_emit = 0
        self._budget: ByteBudget | None = None
        self._settle_depth = 0  # units whose pictures are being made elsewhere while later ones are queued

    def run(self, paths: Iterable[Path]) -> RunReport:
        pool = self._start_rendering()
        try:
            return self._run(paths)
        finally:
            if pool is not None:
                pool.close()

    def _start_rendering(self) -> RenderPool | EncodeThreads | None:
        """For an engine that sends PNGs: pages rendered and encoded ahead (in worker processes when there are
        several), only the PNG kept; other engines keep the task's own rasters."""
        if not self.engine.takes_encoded_pictures():
            return None
        workers = check_render_workers(self.options.render_workers)
        budget = ByteBudget(self.options.render_budget_bytes)
        preparer, pool = start_preparer(workers, budget)
        if not self.task.prepare_with(preparer):
            pool.close()
            return None
        self._budget = budget
        self._settle_depth = settle_depth(workers)
        return pool

    def _run(self, paths: Iterable[Path]) -> RunReport:
        started = time.perf_counter()
        self.engine.stop_on(self.stop)  # a stop request ends generation mid-batch, not after it
        ahead = self.options.lookahead or self.engine.window(self.options.limits)
        feed: queue.Queue = queue.Queue(maxsize=max(2, ahead))
        producer = threading.Thread(target=self._produce, args=(list(paths), feed), daemon=True,
                                    name="internvl-prepare")
        producer.start()
        try:
            self._consume(feed)
        except KeyboardInterrupt:
            self.stop.set()
            self.stop_code = ExitCode.INTERRUPTED
        except InternVLError as error:  # the engine cannot go on (no server live): stop, leave the rest pending
            self.stop.set()
            self.stop_code = error.exit_code
            self.report.fatal = error
        if self.stop.is_set():
            self.report.interrupted = self.stop_code
        self.report.seconds = time.perf_counter() - started
        return self.report

    # ------------------------------------------------------------ producer thread

    def _produce(self, paths: list[Path], feed: queue.Queue) -> None:
        """Feeds prepared items in order. Units whose pictures render elsewhere wait in `pending` (up to the
        settle depth) while later pages are submitted, so the workers stay busy; each is settled, in order,
        before the engine sees it, and its failures are the ones preparing it here would have had."""
        pending: deque = deque()
        failed: set[int] = set()  # documents that failed while settling: their later items are dropped
        for item in self._items(paths):
            pending.append(item)
            while pending and (len(pending) > self._settle_depth or _ready(pending[0])):
                self._settle_and_put(pending.popleft(), paths, failed, feed)
            if self._budget is not None:
                self._budget.wait_for_room(self.stop)
        while pending and not self.stop.is_set():
            self._settle_and_put(pending.popleft(), paths, failed, feed)
        self._put(feed, (_END, None, None))

    def _items(self, paths: list[Path]):
        """("start" | "unit" | "end" | "error", document index, payload) for every document, in order."""
        for index, path in enumerate(paths):
            if self.stop.is_set():
                break
            yield "start", index, path
            try:
                count = 0
                for unit in self.task.units(path):
                    if self.stop.is_set():
                        break
                    yield "unit", index, unit
                    count += 1
                yield "end", index, count
            except InternVLError as exc:
                yield "error", index, exc
            except Exception as exc:  # a bug or an unforeseen library error: fail this document, keep going
                yield "error", index, _unexpected(exc, path)

    def _settle_and_put(self, item, paths: list[Path], failed: set[int], feed: queue.Queue) -> None:
        kind, index, payload = item
        if index in failed:
            return
        if kind == "unit":
            try:
                payload.settle()  # a typed failure fails the unit alone, as `Task.units` would have made it
            except Exception as exc:  # as if it had been raised while reading the document here
                failed.add(index)
                item = ("error", index, _unexpected(exc, paths[index]))
        self._put(feed, item)

    def _put(self, feed: queue.Queue, item) -> None:
        while not self.stop.is_set():
            try:
                feed.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    # ------------------------------------------------------------ consumer (main thread)

    def _consume(self, feed: queue.Queue) -> None:
        source = _FeedSource(feed, self.stop, on_control=self._control, on_unreadable=self._unreadable)
        stream = self.engine.stream(source, self.options.limits)
        try:
            for tag, outcome in stream:
                index, unit = source.finished(tag)
                if self.stop.is_set():
                    break  # SIGTERM / Ctrl-C, maybe mid-batch: answers may be cut; documents stay pending
                self._handle(source, index, unit, outcome)
        finally:
            stream.close()

    def _handle(self, source: _FeedSource, index: int, unit: Unit, outcome) -> None:
        """One finished request: recorded (or sent back once for a retry, or followed by the task's follow-up
        questions), progress, documents emitted."""
        if unit.parent is not None:
            return self._follow_up_answered(index, unit, outcome)
        if isinstance(outcome, InternVLError):  # out of memory, a server that kept failing: this unit fails
            self._record(index, Outcome(unit, None, outcome))
            return
        again = self._retry(unit, outcome)
        if again is not None:
            source.retry(index, again)
            return
        asks = self.task.follow_ups(unit, outcome)
        if asks:
            self._docs[index].waiting[unit.key] = [outcome, len(asks)]
            unit.follow_ups = [None] * len(asks)
            for slot, request in enumerate(asks):  # fed before new pages, so a page finishes soon after its answer
                source.retry(index, Unit(key=unit.key, request=request, pages=unit.pages, parent=unit, slot=slot))
            unit.request = None
            return
        self._unit_done(index, unit, outcome)

    def _unit_done(self, index: int, unit: Unit, result) -> None:
        unit.request = None  # the tiles are no longer needed: keep memory bounded
        self._record(index, Outcome(unit, result, None), emit=False)
        self.progress.pages_done(self._new_pages([(index, unit)]))
        self._emit_ready()

    def _follow_up_answered(self, index: int, follow_up: Unit, outcome) -> None:
        """A follow-up's answer goes to its unit (None when it failed: the task treats it as unanswered); the unit
        is done with its last one."""
        parent = follow_up.parent
        parent.follow_ups[follow_up.slot] = None if isinstance(outcome, InternVLError) else outcome
        follow_up.request = None
        waiting = self._docs[index].waiting[parent.key]
        waiting[1] -= 1
        if waiting[1] == 0:
            del self._docs[index].waiting[parent.key]
            self._unit_done(index, parent, waiting[0])

    def _unreadable(self, index: int, unit: Unit) -> None:
        """A unit that could not be prepared (its page is broken, its tiles failed): recorded as failed."""
        self._record(index, Outcome(unit, None, unit.error))

    def _control(self, kind: str, index: int, payload) -> None:
        if kind == "start":
            self._docs.append(_Doc(path=payload))
            self.progress.document_started(payload)
        elif kind == "end":
            self._docs[index].expected = payload
        elif kind == "error":
            self._docs[index].error = payload
        self._emit_ready()

    def _new_pages(self, done: list[tuple[int, Unit]]) -> int:
        """Pages finished for the first time: a page answered by several votes or retries counts once."""
        count = 0
        for index, unit in done:
            seen = self._docs[index].pages_seen
            count += len(set(unit.pages) - seen)
            seen.update(unit.pages)
        return count

    def _retry(self, unit: Unit, result) -> Unit | None:
        """olmOCR's per-page retry: a task may ask once for a second try (e.g. after a loop); the first answer
        is kept beside it so the task can choose and flag."""
        if unit.attempts >= self.task.max_retries:
            return None
        request = self.task.retry_request(unit, result)
        if request is None:
            return None
        unit.try_again(result, request)
        return unit

    def _record(self, index: int, outcome: Outcome, emit: bool = True) -> None:
        self._docs[index].outcomes[outcome.unit.key] = outcome
        if emit:
            self._emit_ready()

    def _emit_ready(self) -> None:
        """Finishes documents in input order, so stdout keeps the order the user gave."""
        while self._next_emit < len(self._docs) and self._docs[self._next_emit].complete:
            self._finish(self._docs[self._next_emit])
            self._docs[self._next_emit] = _Doc(path=self._docs[self._next_emit].path, expected=0)  # free its results
            self._next_emit += 1

    def _finish(self, doc: _Doc) -> None:
        if doc.error is None and doc.expected == 0:
            doc.error = InternVLError("no pages to process", path=doc.path)
        if doc.error is not None:
            return self._fail(doc.path, doc.error)
        outcomes = [doc.outcomes[key] for key in sorted(doc.outcomes)]
        transient = next((o.error for o in outcomes if isinstance(o.error, ServerError)), None)
        if transient is not None:  # a server's fault, not the page's: never done with a hole, a rerun redoes it
            return self._fail(doc.path, ServerError(f"a page was not answered: {transient.message}"))
        result = self.task.finish(doc.path, outcomes, doc.expected or 0)
        self.report.pages += result.page_count
        if result.failed:
            if result.keep_output:  # e.g. an invalid extract record: shown with its errors, flagged invalid
                self.sink.emit(doc.path, result, self.task.render(result, self.fmt))
            error = result.error or InternVLError("too many pages failed", path=doc.path)
            return self._fail(doc.path, error, pages=result.page_count)
        self.sink.emit(doc.path, result, self.task.render(result, self.fmt))
        self.report.done += 1
        self.progress.document_finished(doc.path, ok=True, pages=result.page_count)

    def _fail(self, path: Path, error: InternVLError, pages: int = 0) -> None:
        if error.path is None:
            error.path = str(path)
        self.sink.fail(path, error)
        self.report.failures.append(DocumentFailure(path, error))
        self.progress.document_finished(path, ok=False, pages=pages)


def _ready(item) -> bool:
    """Whether a feed item can go now: anything but a unit whose pictures are still being made."""
    kind, _, payload = item
    if kind != "unit" or payload.request is None:
        return True
    return all(image.encoded is None or image.encoded.done() for image in payload.request.images
               if isinstance(image, TiledImage))


def _unexpected(exc: Exception, path: Path | None) -> InternVLError:
    kind = exc.kind if isinstance(exc, RenderFailed) else type(exc).__name__
    error = InternVLError(f"unexpected error while reading ({kind}: {exc})", path=path)
    error.__cause__ = exc
    return error


class _FeedSource:
    """The engine's view of the run: retries first, then units as the producer thread prepares them.

    It owns the feed and the retries; what else comes down the feed (a document started, ended, failed to open;
    a unit that failed to prepare) goes to the runner on the way, through `on_control` and `on_unreadable`, so
    documents finish in order even while the engine is busy with later pages.
    """

    def __init__(self, feed: queue.Queue, stop: threading.Event, on_control: Callable[[str, int, Any], None],
                 on_unreadable: Callable[[int, Unit], None]):
        self._feed = feed
        self._stop = stop
        self._on_control = on_control
        self._on_unreadable = on_unreadable
        self._in_flight: dict[int, tuple[int, Unit]] = {}
        self._retries: deque[tuple[int, Unit]] = deque()  # units asked for another try, fed before new ones
        self._finished = False
        self._tags = 0

    def retry(self, index: int, unit: Unit) -> None:
        """Hands `unit` (its next request set) to the engine again, before any new unit."""
        self._retries.append((index, unit))

    def finished(self, tag: int) -> tuple[int, Unit]:
        """The document index and unit of a request the engine has finished."""
        return self._in_flight.pop(tag)

    @property
    def done(self) -> bool:
        return self._stop.is_set() or (self._finished and not self._retries)

    def take(self, wait: bool) -> tuple[int, GenerationRequest] | None:
        while not self._stop.is_set():
            if self._retries:
                return self._hand_out(*self._retries.popleft())
            if self._finished:
                return None
            item = self._next_item(wait=wait)
            if item is None:
                if wait and not self._stop.is_set():
                    continue
                return None
            kind, index, payload = item
            if kind is _END:
                self._finished = True
            elif kind == "unit":
                if payload.error is not None:
                    self._on_unreadable(index, payload)
                else:
                    return self._hand_out(index, payload)
            else:
                self._on_control(kind, index, payload)
        return None

    def _next_item(self, wait: bool):
        """The next prepared item; None when nothing is ready (or a stop was requested while waiting)."""
        while True:
            try:
                return self._feed.get(timeout=0.2) if wait else self._feed.get_nowait()
            except queue.Empty:
                if not wait or self._stop.is_set():
                    return None

    def _hand_out(self, index: int, unit: Unit) -> tuple[int, GenerationRequest]:
        self._tags += 1
        self._in_flight[self._tags] = (index, unit)
        return self._tags, unit.request
