"""Progress on stderr: a rich bar on a terminal, one plain log line per document otherwise."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..runs.runner import SilentProgress


class LineProgress:
    """For logs and cron mail: one line per finished document with its own page count, then running totals."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.finished = self.failed = self.pages = 0
        self.started = time.perf_counter()

    def document_started(self, path: Path) -> None:
        pass

    def pages_done(self, count: int) -> None:
        pass  # counted per document when it finishes, so the line and the totals agree

    def document_finished(self, path: Path, ok: bool, pages: int = 0) -> None:
        self.finished += 1
        self.failed += 0 if ok else 1
        self.pages += pages
        state = "done" if ok else "failed"
        rate = self.pages / max(time.perf_counter() - self.started, 1e-9)
        self.stream.write(f"internvl: [{self.finished}/{self.total}] {state}: {path} ({_pages(pages)}; "
                          f"{_pages(self.pages)} in all, {rate:.2f} pages/s, {self.failed} failed)\n")
        self.stream.flush()

    def close(self) -> None:
        pass


def _pages(count: int) -> str:
    return f"{count} page" if count == 1 else f"{count} pages"


class RichProgress:
    """An interactive bar: documents, pages, pages/s, ETA and failures."""

    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]internvl[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("docs"),
            TextColumn("{task.fields[pages]} pages"), TextColumn("{task.fields[rate]:.2f} pages/s"),
            TextColumn("[red]{task.fields[failed]} failed"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task("docs", total=total, pages=0, rate=0.0, failed=0)
        self.pages = self.failed = 0
        self.started = time.perf_counter()
        self.progress.start()

    def document_started(self, path: Path) -> None:
        pass

    def pages_done(self, count: int) -> None:
        self.pages += count
        rate = self.pages / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, pages=self.pages, rate=rate)

    def document_finished(self, path: Path, ok: bool, pages: int = 0) -> None:
        self.failed += 0 if ok else 1
        self.progress.update(self.task, advance=1, failed=self.failed)

    def close(self) -> None:
        self.progress.stop()


def make_progress(total: int, quiet: bool):
    if quiet:
        return SilentProgress()
    if sys.stderr.isatty():
        return RichProgress(total)
    return LineProgress(total)
