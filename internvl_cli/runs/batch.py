"""Step 5a, a whole run: inputs -> documents -> (output directory: lock, ledger plan) -> checks -> runner -> report.

The core entry point for every document command; the CLI only supplies printing callbacks. A run plans before it
loads: every document is opened and checked (format, password, page range) and the output location is made ready
before the weights load, so a bad input or an unusable -o costs milliseconds, not a model load.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.base import Engine
from ..errors import ExitCode, InternVLError, UsageError
from ..documents.inputs import Discovery, discover
from .outputs import names_a_file
from .runner import DocumentFailure, Progress, RunOptions, Runner, RunReport
from ..tasks.base import DocumentResult, Task, UnitBudget
from .writers import FileSink, StdoutSink


@dataclass
class BatchSettings:
    """What every document command shares: inputs, output directory, resume and batching."""

    paths: list[str]
    output: Path | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    force: bool = False
    retry_failed: bool = False
    wait: bool = False
    batch_size: int | None = None  # None: the engine's default for its device (free GPU memory), else 8
    batch_tiles: int | None = None  # None: likewise, else 64
    render_workers: int | None = None  # servers: processes rendering and encoding pages (None: the CPU count)

    def __post_init__(self) -> None:
        if self.output is not None:
            self.output = Path(self.output)  # library callers may pass a string
        for name in ("batch_size", "batch_tiles"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, not {getattr(self, name)}")

    @property
    def output_is_file(self) -> bool:
        """`-o result.md`: one document's output in one file (no ledger)."""
        return self.output is not None and names_a_file(self.output)

    @property
    def output_is_directory(self) -> bool:
        """`-o DIR`: one file per document, with a ledger for resume."""
        return self.output is not None and not self.output_is_file


@dataclass
class Hooks:
    """How a run talks to its user; the defaults stay silent."""

    error: Callable[[InternVLError], None] = lambda error: None
    note: Callable[[str], None] = lambda message: None
    progress: Callable[[int], Progress] | None = None
    before_load: Callable[[Engine], None] = lambda engine: None
    loaded: Callable[[Engine], None] = lambda engine: None
    result: Callable[[Path, DocumentResult], None] = lambda path, result: None  # each document as it finishes


def find_documents(paths: list[str], include: list[str] | tuple = (), exclude: list[str] | tuple = (),
                   out_dir: Path | None = None, hooks: Hooks = Hooks()) -> Discovery:
    """Discovery as every command reports it: notes for what was skipped or repeated, one error per bad path,
    and a usage error when nothing at all was found (`inspect` and the document commands agree)."""
    found = discover(paths, include=include, exclude=exclude, stdin=sys.stdin, out_dir=out_dir)
    for skipped in found.skipped:
        hooks.note(f"skipped {skipped.path}: {skipped.reason}")
    if found.duplicates:
        duplicate, kept = found.duplicates[0]
        example = f"{duplicate} was given more than once" if duplicate == kept else f"{duplicate} is {kept}"
        if len(found.duplicates) == 1:
            hooks.note(f"skipped a duplicate: {example}")
        else:
            hooks.note(f"skipped {len(found.duplicates)} duplicates, paths or links to files already listed "
                       f"(e.g. {example})")
    for error in found.errors:
        hooks.error(error)
    if not found.docs and not found.errors:
        hint = "see the skipped files above" if found.skipped else None
        raise UsageError("no documents found in the given paths", hint=hint)
    return found


def run_documents(task: Task, engine: Engine, settings: BatchSettings, fmt: str, suffix: str,
                  hooks: Hooks = Hooks(), found: Discovery | None = None, stdout: bool = True) -> RunReport:
    """Runs `task` over the documents named by `settings.paths` (or `found`, discovered from them already);
    loads the model only if there is work. `stdout` False: without -o, results go only to `hooks.result`."""
    started = time.perf_counter()
    if found is None:
        found = find_documents(settings.paths, settings.include, settings.exclude,
                               out_dir=settings.output if settings.output_is_directory else None, hooks=hooks)
    if settings.output_is_file and len(found.docs) + len(found.errors) > 1:
        raise UsageError(f"-o {settings.output} names one file, but {len(found.docs) + len(found.errors)} "
                         "documents were given", hint="pass a directory to -o for several documents")
    failures = list(found.errors)
    # `--engine auto` picks its engine here, before the ledger's task hash (which names the engine) is taken.
    engine = engine.settle(lambda: count_pages(task, found.docs))
    with _output_directory(settings, task_fingerprint(task, engine), suffix, hooks) as directory:
        skipped = 0
        if directory is None:
            sink = FileSink(settings.output) if settings.output_is_file else StdoutSink() if stdout else _NoSink()
            docs = found.docs
        else:
            plan = directory.plan(found.docs, force=settings.force, retry_failed=settings.retry_failed)
            for error in plan.unreadable:
                hooks.error(error)
            failures += plan.unreadable
            sink, docs, skipped = directory, plan.todo, len(plan.skipped)
            if skipped:
                done = "document already done (use --force to redo it)" if skipped == 1 else \
                    "documents already done (use --force to redo them)"
                hooks.note(f"{skipped} {done}")
        sink = _ReportingSink(sink, hooks.error, hooks.result)
        docs, unreadable = _check_documents(task, docs, sink)
        if docs:
            hooks.before_load(engine)
            engine.load()
            hooks.loaded(engine)
        options = _run_options(settings, engine if docs else None, task.budget())
        report = _run(task, engine, sink, fmt, options, docs, hooks)
    report.skipped = skipped
    report.failures[:0] = unreadable
    report.failures.extend(DocumentFailure(Path(e.path or "-"), e) for e in failures)
    report.seconds = time.perf_counter() - started  # the whole run, model loading included
    return report


def count_pages(task: Task, docs: list) -> int | None:
    """The pages the given documents make, done or not: a resumed run then weighs the same count as the run it
    resumes and takes the same engine, so its ledger entries (whose task hash names the engine) still match.
    None when any document's count is unknown (taken as many)."""
    total = 0
    for doc in docs:
        count = task.page_count(doc.path)
        if count is None:
            return None
        total += count
    return total


def _run_options(settings: BatchSettings, engine: Engine | None, budget: UnitBudget = UnitBudget()) -> RunOptions:
    """Batch limits: as given, else the loaded engine's defaults for this run's tile and answer budgets
    (hardware/batch_sizing.py sizes them from free GPU memory), else 8 pages and 64 tiles."""
    pages, tiles = settings.batch_size, settings.batch_tiles
    if (pages is None or tiles is None) and engine is not None:
        limits = engine.batch_limits(budget.tiles, budget.answer_tokens)
        pages = limits.pages if pages is None else pages
        tiles = limits.tiles if tiles is None else tiles
    pages = 8 if pages is None else pages
    tiles = 64 if tiles is None else tiles
    return RunOptions(batch_size=pages, max_batch_tiles=tiles,  # rendering runs one engine window ahead
                      render_workers=settings.render_workers)


def _check_documents(task: Task, docs: list, sink: _ReportingSink) -> tuple[list, list[DocumentFailure]]:
    """Opens every document as the task will (format, password, page range, first page) before any weights
    load; those that fail are reported and recorded like any failed document and left out of the run."""
    readable, failed = [], []
    for doc in docs:
        try:
            task.check(doc.path)
        except InternVLError as error:
            if error.path is None:
                error.path = str(doc.path)
            sink.fail(doc.path, error)
            failed.append(DocumentFailure(doc.path, error))
            continue
        readable.append(doc)
    return readable, failed


def _run(task, engine, sink, fmt, options, docs, hooks: Hooks) -> RunReport:
    if not docs:
        return RunReport()
    stop = threading.Event()
    progress = hooks.progress(len(docs)) if hooks.progress else None
    runner = Runner(task, engine, sink, fmt, options, progress=progress, stop=stop)
    try:
        with _signals(stop, runner):
            return runner.run([doc.path for doc in docs])
    finally:
        if progress is not None:
            progress.close()


class _ReportingSink:
    """Reports each failed document as it happens, then delegates."""

    def __init__(self, inner, on_error: Callable[[InternVLError], None],
                 on_result: Callable[[Path, DocumentResult], None] = lambda path, result: None):
        self.inner = inner
        self.on_error = on_error
        self.on_result = on_result

    def emit(self, path, result, rendered) -> None:
        self.inner.emit(path, result, rendered)
        self.on_result(path, result)

    def fail(self, path, error) -> None:
        self.inner.fail(path, error)  # recorded first: a closed stderr must not cost the ledger its row
        self.on_error(error)


class _NoSink:
    """A library run without an output: results reach the caller through `Hooks.result` alone."""

    def emit(self, path, result, rendered) -> None:
        pass

    def fail(self, path, error) -> None:
        pass


def task_fingerprint(task: Task, engine: Engine) -> dict:
    """What the ledger hashes: the task's settings and, for engines other than transformers, the engine (a
    rerun with another engine is a new task; ledgers written before engines existed stay valid for hf)."""
    fingerprint = task.fingerprint()
    if engine.name != "hf":
        fingerprint = {**fingerprint, "engine": engine.name}
    return fingerprint


@contextmanager
def _output_directory(settings: BatchSettings, fingerprint: dict, suffix: str, hooks: Hooks):
    """With an output directory: hold its run lock, recover a killed run's leftovers, and yield its sink."""
    if not settings.output_is_directory:
        if settings.output_is_file:
            from .outputs import prepare_output_file

            prepare_output_file(settings.output)
        yield None
        return
    from .ledger import Ledger, RunLock
    from .outputs import cleanup_stale_temps, prepare_output_directory
    from .writers import DirectorySink

    prepare_output_directory(settings.output)
    with RunLock(settings.output, wait=settings.wait, on_wait=lambda who: hooks.note(f"waiting for {who} ...")):
        with Ledger.open(settings.output) as ledger:
            ledger.recover_interrupted()
            cleanup_stale_temps(settings.output)
            yield DirectorySink(ledger, fingerprint, suffix)


@contextmanager
def _signals(stop: threading.Event, runner: Runner):
    """SIGTERM and Ctrl-C ask the run to stop after what is in flight (exit 143 / 130); a second Ctrl-C
    interrupts at once.

    A handler that only sets a flag means a stop can never land between writing a document's output and
    recording it in the ledger, so the two always agree when the run ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread (e.g. when used as a library)
        return

    def on_term(signum, frame):
        runner.stop_code = ExitCode.TERMINATED
        stop.set()

    def on_interrupt(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        runner.stop_code = ExitCode.INTERRUPTED
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term), signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])