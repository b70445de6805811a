"""Step 6, writing: finished documents to stdout (data only) or to files in an output directory with a ledger."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..errors import InternVLError, OutputError
from ..documents.inputs import InputDoc
from .ledger import Ledger, content_hash, new_run_id, task_hash
from .outputs import atomic_write_bytes, atomic_write_text, output_path
from ..tasks.base import DocumentResult


class StdoutSink:
    """Writes each document's output to stdout as soon as it is finished, flushing so pipelines see it."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def emit(self, path: Path, result: DocumentResult, rendered: str) -> None:
        if rendered:
            self.stream.write(rendered)
            self.stream.flush()

    def fail(self, path: Path, error: InternVLError) -> None:
        pass


class FileSink:
    """`-o FILE` for a single document: its output written atomically to FILE, as stdout would have shown it."""

    def __init__(self, target: Path):
        self.target = Path(target)

    def emit(self, path: Path, result: DocumentResult, rendered: str) -> None:
        _write(self.target, rendered)

    def fail(self, path: Path, error: InternVLError) -> None:
        pass


def _write(target: Path, text: str | bytes) -> None:
    """An atomic write whose failure (disk full, folder removed) stops the run with the output's own error."""
    try:
        if isinstance(text, bytes):  # a searchable PDF
            atomic_write_bytes(target, text)
        else:
            atomic_write_text(target, text)
    except OSError as exc:
        raise OutputError(f"cannot write the output ({exc.strerror or exc})", path=target) from None


@dataclass
class Plan:
    """What a run over an output directory will do: documents to process and those already done."""

    todo: list[InputDoc] = field(default_factory=list)
    skipped: list[InputDoc] = field(default_factory=list)
    unreadable: list[InternVLError] = field(default_factory=list)


class DirectorySink:
    """One output file per document, mirrored under the output directory; the ledger row follows the file.

    Order matters for "nothing lost": the output is written atomically first, then the ledger says done.
    A kill between the two only means the document is redone (and its output replaced) next time.
    """

    def __init__(self, ledger: Ledger, fingerprint: dict, suffix: str):
        self.ledger = ledger
        self.task = task_hash(fingerprint)
        self.suffix = suffix
        self.run_id = new_run_id()
        self._docs: dict[Path, tuple[InputDoc, str]] = {}

    def plan(self, docs: list[InputDoc], force: bool = False, retry_failed: bool = False) -> Plan:
        """Hashes every document's content and asks the ledger which ones still need work."""
        plan = Plan()
        for doc in docs:
            try:
                digest = content_hash(doc.path)
            except InternVLError as error:
                plan.unreadable.append(error)
                continue
            # The ledger keeps absolute sources: `status` may run from another folder than the run did.
            source = os.path.abspath(doc.path)
            if not self.ledger.should_process(digest, self.task, force=force, retry_failed=retry_failed):
                self.ledger.mark_seen(digest, self.task, source=source)
                plan.skipped.append(doc)
                continue
            # Marked running now: a run killed before finishing leaves rows the next run recovers and redoes.
            self.ledger.mark_running(digest, self.task, source=source, output_path=self._output(doc),
                                     run_id=self.run_id)
            self._docs[doc.path] = (doc, digest)
            plan.todo.append(doc)
        return plan

    def emit(self, path: Path, result: DocumentResult, rendered: str) -> None:
        doc, digest = self._docs[path]
        if result.failed:
            return  # failed documents leave no output file; the ledger keeps their errors
        target = self._output(doc)
        _write(target, rendered)
        failed_pages = sum(1 for record in result.records if record.get("error"))
        self.ledger.mark_done(digest, self.task, output_path=target, pages=result.page_count,
                              seconds=result.seconds, pages_failed=failed_pages)

    def fail(self, path: Path, error: InternVLError) -> None:
        _, digest = self._docs[path]
        self.ledger.mark_failed(digest, self.task, error=error, exit_code=int(error.exit_code))

    def _output(self, doc: InputDoc) -> Path:
        return output_path(self.ledger.out_dir, doc.relative, self.suffix)
