"""Step 5, orchestration: documents -> units (rendered ahead in a background thread) -> GPU batches -> sinks."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..engine.base import Engine
from ..errors import ExitCode, InternVLError, OutOfMemoryError
from ..tasks.base import DocumentResult, Outcome, Task, Unit


@dataclass
class RunOptions:
    """Batching limits: a batch holds at most `batch_size` requests and `max_batch_tiles` tiles."""

    batch_size: int = 8
    max_batch_tiles: int = 64
    # Units gathered before batching (sorting by tile count needs a few batches to choose from). Memory is
    # bounded by lookahead + batch_size prepared units: ~17 MB each at 7 float32 tiles.
    lookahead: int = 16


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

    def document_finished(self, path: Path, ok: bool) -> None: ...

    def close(self) -> None: ...


class SilentProgress:
    """Progress that reports nothing (library use, `--quiet`)."""

    def document_started(self, path: Path) -> None:
        pass

    def pages_done(self, count: int) -> None:
        pass

    def document_finished(self, path: Path, ok: bool) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class _Doc:
    path: Path
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    expected: int | None = None
    error: InternVLError | None = None

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

    def run(self, paths: Iterable[Path]) -> RunReport:
        started = time.perf_counter()
        stop_on = getattr(self.engine, "stop_on", None)
        if stop_on is not None:
            stop_on(self.stop)  # a stop request ends generation mid-batch, not after it
        feed: queue.Queue = queue.Queue(maxsize=max(2, self.options.batch_size))
        producer = threading.Thread(target=self._produce, args=(list(paths), feed), daemon=True,
                                    name="internvl-prepare")
        producer.start()
        try:
            self._consume(feed)
        except KeyboardInterrupt:
            self.stop.set()
            self.stop_code = ExitCode.INTERRUPTED
        if self.stop.is_set():
            self.report.interrupted = self.stop_code
        self.report.seconds = time.perf_counter() - started
        return self.report

    # ------------------------------------------------------------ producer thread

    def _produce(self, paths: list[Path], feed: queue.Queue) -> None:
        for index, path in enumerate(paths):
            if self.stop.is_set():
                break
            self._put(feed, ("start", index, path))
            try:
                count = 0
                for unit in self.task.units(path):
                    if self.stop.is_set():
                        break
                    self._put(feed, ("unit", index, unit))
                    count += 1
                self._put(feed, ("end", index, count))
            except InternVLError as exc:
                self._put(feed, ("error", index, exc))
            except Exception as exc:  # a bug or an unforeseen library error: fail this document, keep going
                error = InternVLError(f"unexpected error while reading ({type(exc).__name__}: {exc})", path=path)
                error.__cause__ = exc
                self._put(feed, ("error", index, error))
        self._put(feed, (_END, None, None))

    def _put(self, feed: queue.Queue, item) -> None:
        while not self.stop.is_set():
            try:
                feed.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    # ------------------------------------------------------------ consumer (main thread)

    def _consume(self, feed: queue.Queue) -> None:
        pending: list[tuple[int, Unit]] = []
        finished = False
        while not finished and not self.stop.is_set():
            item = self._next_item(feed, wait=not pending)
            if item is None and not pending:
                continue
            if item is None:  # nothing ready: the GPU works on what is prepared instead of waiting
                self._run_batches(pending)
                pending = []
                continue
            kind, index, payload = item
            if kind is _END:
                finished = True
            elif kind == "unit":
                if payload.error is not None:
                    self._record(index, Outcome(payload, None, payload.error))
                else:
                    pending.append((index, payload))
            else:
                self._control(kind, index, payload)
            if finished or len(pending) >= self.options.lookahead:
                self._run_batches(pending)
                pending = []
        if pending and not self.stop.is_set():
            self._run_batches(pending)

    def _next_item(self, feed: queue.Queue, wait: bool):
        """The next prepared item; None when nothing is ready (or a stop was requested while waiting)."""
        while True:
            try:
                return feed.get(timeout=0.2) if wait else feed.get_nowait()
            except queue.Empty:
                if not wait or self.stop.is_set():
                    return None

    def _control(self, kind: str, index: int, payload) -> None:
        if kind == "start":
            self._docs.append(_Doc(path=payload))
            self.progress.document_started(payload)
        elif kind == "end":
            self._docs[index].expected = payload
        elif kind == "error":
            self._docs[index].error = payload
        self._emit_ready()

    def _run_batches(self, pending: list[tuple[int, Unit]]) -> None:
        for batch in plan_batches(pending, self.options):
            if self.stop.is_set():
                return
            self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[int, Unit]]) -> None:
        requests = [unit.request for _, unit in batch]
        try:
            results = self.engine.generate(requests)
        except OutOfMemoryError as exc:
            for index, unit in batch:
                self._record(index, Outcome(unit, None, exc), emit=False)
            self._emit_ready()
            return
        if self.stop.is_set():
            return  # stopped mid-batch: its answers may be cut short, so its documents stay pending
        retries = []
        for (index, unit), result in zip(batch, results):
            again = self._retry(unit, result)
            if again is not None:
                retries.append((index, again))
                continue
            unit.request = None  # the tiles are no longer needed: keep memory bounded
            self._record(index, Outcome(unit, result, None), emit=False)
        done = [unit for _, unit in batch if unit.request is None]
        self.progress.pages_done(sum(len(unit.pages) for unit in done))
        self._emit_ready()
        if retries and not self.stop.is_set():
            self._run_batches(retries)

    def _retry(self, unit: Unit, result) -> Unit | None:
        """olmOCR's per-page retry: a task may ask once for a second try (e.g. after a loop); the first answer
        is kept beside it so the task can choose and flag."""
        retry_request = getattr(self.task, "retry_request", None)
        if unit.attempts >= getattr(self.task, "max_retries", 1) or retry_request is None:
            return None
        request = retry_request(unit, result)
        if request is None:
            return None
        unit.attempts += 1
        unit.info.setdefault("first_result", result)
        unit.info.setdefault("earlier_results", []).append(result)
        unit.request = request
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
        result = self.task.finish(doc.path, outcomes, doc.expected or 0)
        self.report.pages += result.page_count
        if result.failed:
            if result.keep_output:  # e.g. an invalid extract record: shown with its errors, flagged invalid
                self.sink.emit(doc.path, result, self.task.render(result, self.fmt))
            return self._fail(doc.path, result.error or InternVLError("too many pages failed", path=doc.path))
        self.sink.emit(doc.path, result, self.task.render(result, self.fmt))
        self.report.done += 1
        self.progress.document_finished(doc.path, ok=True)

    def _fail(self, path: Path, error: InternVLError) -> None:
        if error.path is None:
            error.path = str(path)
        self.sink.fail(path, error)
        self.report.failures.append(DocumentFailure(path, error))
        self.progress.document_finished(path, ok=False)




def plan_batches(pending: list[tuple[int, Unit]], options: RunOptions) -> list[list[tuple[int, Unit]]]:
    """Groups units of similar tile counts (less padding) into batches within the size and tile budgets."""
    ordered = sorted(pending, key=lambda item: item[1].request.tiles)
    batches: list[list[tuple[int, Unit]]] = []
    current: list[tuple[int, Unit]] = []
    tiles = 0
    for item in ordered:
        cost = item[1].request.tiles
        if current and (len(current) >= options.batch_size or tiles + cost > options.max_batch_tiles):
            batches.append(current)
            current, tiles = [], 0
        current.append(item)
        tiles += cost
    if current:
        batches.append(current)
    return batches
