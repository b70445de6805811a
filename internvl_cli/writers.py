"""Step 6, writing: finished documents to stdout (data only) or to files in an output directory with a ledger."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from .errors import InternVLError
from .tasks.base import DocumentResult


class StdoutSink:
    """Writes each document's output to stdout as soon as it is finished, flushing so pipelines see it."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def should_process(self, path: Path) -> bool:
        return True

    def emit(self, path: Path, result: DocumentResult, rendered: str) -> None:
        self.stream.write(rendered)
        self.stream.flush()

    def fail(self, path: Path, error: InternVLError) -> None:
        pass
