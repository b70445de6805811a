"""Typed failures of the core, each carrying its exit code and a fix-it hint (mapped to messages only in the CLI)."""
from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit codes; the README's table is generated from these names and docs."""

    OK = 0
    OTHER_ERROR = 1          # a bug or an unexpected failure (run with --verbose and report it)
    BAD_ARGS = 2             # wrong command-line usage
    INPUT_FILE = 3           # a file is missing, unreadable, unsupported, corrupt, empty or too large
    PASSWORD = 4             # an encrypted PDF needs a (correct) --password
    MODEL_NOT_FOUND = 5      # the model id/path cannot be resolved (offline, typo)
    MODEL_LOAD = 6           # the checkpoint exists but cannot be loaded (layout, dependencies)
    OUT_OF_MEMORY = 7        # the GPU ran out of memory even at batch size 1
    SCHEMA = 8               # the JSON Schema file is invalid
    BUSY = 9                 # another run holds the output directory (use --wait)
    PARTIAL = 10             # the run finished but some documents failed
    INVALID_OUTPUT = 11      # an answer could not be made schema-valid (the record carries its errors)
    SERVER = 12              # --engine server: no server reachable, or it kept answering with errors
    INTERRUPTED = 130        # Ctrl-C
    TERMINATED = 143         # SIGTERM


def short_reason(exc: BaseException, limit: int = 200) -> str:
    """A library exception's message on one line, bounded, for use inside our one-line errors."""
    return (" ".join(str(exc).split()) or type(exc).__name__)[:limit]


class InternVLError(Exception):
    """Base of every expected failure: a one-line message, an exit code and an optional hint."""

    exit_code: ExitCode = ExitCode.OTHER_ERROR
    hint: str | None = None

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        if hint is not None:
            self.hint = hint

    def one_line(self) -> str:
        """`path: message (hint)` on one line, as the CLI prints it."""
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split())


class UsageError(InternVLError):
    exit_code = ExitCode.BAD_ARGS


class InputFileError(InternVLError):
    """A document cannot be read: missing, unsupported, corrupt, empty or absurdly large."""

    exit_code = ExitCode.INPUT_FILE


class PasswordError(InputFileError):
    exit_code = ExitCode.PASSWORD
    hint = "pass the document's password with --password"


class ModelNotFoundError(InternVLError):
    exit_code = ExitCode.MODEL_NOT_FOUND
    hint = (
        "pass a local checkpoint directory with --model PATH, or download it once with network access; "
        "set HF_HUB_OFFLINE=1 to use only the local cache"
    )


class ModelLoadError(InternVLError):
    exit_code = ExitCode.MODEL_LOAD


class OutOfMemoryError(InternVLError):
    exit_code = ExitCode.OUT_OF_MEMORY
    hint = "try fewer tiles (--max-tiles 6) or a smaller batch (--batch-size 1), or a smaller model"


class SchemaError(InternVLError):
    exit_code = ExitCode.SCHEMA


class BusyError(InternVLError):
    exit_code = ExitCode.BUSY
    hint = "another internvl run is writing to this output directory; pass --wait to wait for it"


class InvalidOutputError(InternVLError):
    """The model's answer did not validate (e.g. cut off by --max-new-tokens); the record lists the errors."""

    exit_code = ExitCode.INVALID_OUTPUT
    hint = "see the record's errors; a higher --max-new-tokens helps when the answer was cut off"


class ServerError(InternVLError):
    """An OpenAI-compatible server could not be reached, or kept failing after retries (--engine server)."""

    exit_code = ExitCode.SERVER
    hint = "check that the --server URLs are up (`curl URL/models`) and see the server's log"
