"""Step 5a, a whole run: inputs -> documents -> (output directory: lock, ledger plan) -> runner -> report.

The core entry point for every document command; the CLI only supplies printing callbacks.
"""
from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.base import Engine
from ..errors import ExitCode, InternVLError, UsageError
from ..documents.inputs import discover
from .runner import DocumentFailure, Progress, RunOptions, Runner, RunReport
from ..tasks.base import Task
from .writers import StdoutSink


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
    batch_size: int = 8
    batch_tiles: int = 64

    def __post_init__(self) -> None:
        if self.output is not None:
            self.output = Path(self.output)  # library callers may pass a string


@dataclass
class Hooks:
    """How a run talks to its user; the defaults stay silent."""

    error: Callable[[InternVLError], None] = lambda error: None
    note: Callable[[str], None] = lambda message: None
    progress: Callable[[int], Progress] | None = None
    before_load: Callable[[Engine], None] = lambda engine: None
    loaded: Callable[[Engine], None] = lambda engine: None


def run_documents(task: Task, engine: Engine, settings: BatchSettings, fmt: str, suffix: str,
                  hooks: Hooks = Hooks()) -> RunReport:
    """Runs `task` over the documents named by `settings.paths`; loads the model only if there is work."""
    found = discover(settings.paths, include=settings.include, exclude=settings.exclude, stdin=sys.stdin,
                     out_dir=settings.output)
    for skipped in found.skipped:
        hooks.note(f"skipped {skipped.path}: {skipped.reason}")
    for error in found.errors:
        hooks.error(error)
    if not found.docs and not found.errors:
        raise UsageError("no documents found in the given paths")
    failures = list(found.errors)
    options = RunOptions(batch_size=settings.batch_size, max_batch_tiles=settings.batch_tiles)
    with _output_directory(settings, task_fingerprint(task, engine), suffix, hooks) as directory:
        skipped = 0
        if directory is None:
            sink, docs = StdoutSink(), found.docs
        else:
            plan = directory.plan(found.docs, force=settings.force, retry_failed=settings.retry_failed)
            for error in plan.unreadable:
                hooks.error(error)
            failures += plan.unreadable
            sink, docs, skipped = directory, plan.todo, len(plan.skipped)
            if skipped:
                hooks.note(f"{skipped} documents already done (use --force to redo them)")
        if docs:
            hooks.before_load(engine)
            engine.load()
            hooks.loaded(engine)
        report = _run(task, engine, _ReportingSink(sink, hooks.error), fmt, options, docs, hooks)
    report.skipped = skipped
    report.failures.extend(DocumentFailure(Path(e.path or "-"), e) for e in failures)
    return report


def _run(task, engine, sink, fmt, options, docs, hooks: Hooks) -> RunReport:
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

    def __init__(self, inner, on_error: Callable[[InternVLError], None]):
        self.inner = inner
        self.on_error = on_error

    def emit(self, path, result, rendered) -> None:
        self.inner.emit(path, result, rendered)

    def fail(self, path, error) -> None:
        self.on_error(error)
        self.inner.fail(path, error)


def task_fingerprint(task: Task, engine: Engine) -> dict:
    """What the ledger hashes: the task's settings and, for engines other than transformers, the engine (a
    rerun with another engine is a new task; ledgers written before engines existed stay valid for hf)."""
    fingerprint = task.fingerprint()
    name = getattr(engine, "name", "hf")
    if name != "hf":
        fingerprint = {**fingerprint, "engine": name}
    return fingerprint


@contextmanager
def _output_directory(settings: BatchSettings, fingerprint: dict, suffix: str, hooks: Hooks):
    """With an output directory: hold its run lock, recover a killed run's leftovers, and yield its sink."""
    if settings.output is None:
        yield None
        return
    from .ledger import Ledger, RunLock
    from .outputs import cleanup_stale_temps
    from .writers import DirectorySink

    settings.output.mkdir(parents=True, exist_ok=True)
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