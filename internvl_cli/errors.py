"""Typed failures of the core, each carrying its exit code and a fix-it hint (mapped to messages only in the CLI)."""
from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit codes; EXIT_CODE_MEANINGS below is the table README and `internvl help exit-codes` show."""

    OK = 0
    OTHER_ERROR = 1          # a bug or an unexpected failure (run with --verbose and report it)
    BAD_ARGS = 2             # wrong command-line usage
    INPUT_FILE = 3           # a file is missing, unreadable, unsupported, corrupt, empty or too large
    PASSWORD = 4             # an encrypted PDF needs a (correct) --password
    MODEL_NOT_FOUND = 5      # the model id/path cannot be resolved (offline, typo)
    MODEL_LOAD = 6           # the checkpoint exists but cannot be loaded (layout, dependencies)
    OUT_OF_MEMORY = 7        # the GPU ran out of memory even at batch size 1
    SCHEMA = 8               # the --schema cannot be found or is not a valid JSON Schema
    BUSY = 9                 # another run holds the output directory (use --wait)
    PARTIAL = 10             # the run finished but some documents failed
    INVALID_OUTPUT = 11      # an answer could not be made schema-valid (the record carries its errors)
    SERVER = 12              # --engine server: no server reachable, or it kept answering with errors
    OUTPUT = 13              # the output location cannot be used (a file, read-only, cannot be created)
    DEVICE = 14              # the device needed cannot be used (no CUDA GPU visible, or one torch cannot use)
    INTERRUPTED = 130        # Ctrl-C
    CLOSED_PIPE = 141        # the reader of our output went away (`| head`), as for tools ended by SIGPIPE
    TERMINATED = 143         # SIGTERM


# The one exit-code table: README's "Exit codes" section and `internvl help exit-codes` show exactly this.
EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "everything asked for was done",
    ExitCode.OTHER_ERROR: "an unexpected failure (a bug): rerun with `--verbose` and report it",
    ExitCode.BAD_ARGS: "wrong command-line usage: an unknown option, a value out of range, no documents found, "
                       "a bad config file",
    ExitCode.INPUT_FILE: "a file is missing, unreadable, unsupported, corrupt, empty or too large",
    ExitCode.PASSWORD: "an encrypted PDF needs a (correct) `--password`",
    ExitCode.MODEL_NOT_FOUND: "the model id or path cannot be resolved (offline, typo, missing folder)",
    ExitCode.MODEL_LOAD: "the checkpoint exists but cannot be loaded or converted",
    ExitCode.OUT_OF_MEMORY: "the GPU ran out of memory even for a single page",
    ExitCode.SCHEMA: "the `--schema` cannot be found, is not a valid JSON Schema, accepts no value, or refers "
                     "outside itself (never fetched)",
    ExitCode.BUSY: "another run holds the output directory (use `--wait`)",
    ExitCode.PARTIAL: "the run finished but some documents failed",
    ExitCode.INVALID_OUTPUT: "an answer could not be made schema-valid (the record lists its errors)",
    ExitCode.SERVER: "`--engine server`: no server reachable or live (unreachable, refused, timed out, unauthorised, "
                     "odd `/v1/models`), or a page it kept failing after retries (that document stays to be redone)",
    ExitCode.OUTPUT: "the output location cannot be used: a file where a folder is needed, read-only, "
                     "cannot be created, or an existing destination (`--overwrite`)",
    ExitCode.DEVICE: "the device needed cannot be used: no CUDA GPU is visible (`--device cuda`, `quantize`), "
                     "or the system shows one that torch cannot use (driver too old for this torch, or a GPU this "
                     "torch has no kernels for: a V100 on PyPI's CUDA 13 torch)",
    ExitCode.INTERRUPTED: "stopped by Ctrl-C (with `-o`, rerun to resume)",
    ExitCode.CLOSED_PIPE: "the reader of stdout or stderr went away (`head` had enough); as for tools ended by SIGPIPE",
    ExitCode.TERMINATED: "stopped by SIGTERM (with `-o`, rerun to resume)",
}


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
        "pass a local checkpoint directory with --model PATH, or fetch it once with network access "
        "(`internvl download MODEL`)"
    )


class ModelLoadError(InternVLError):
    exit_code = ExitCode.MODEL_LOAD


class DeviceError(ModelLoadError):
    """The device a command needs is not there (no CUDA GPU visible); a kind of load failure with its own code."""

    exit_code = ExitCode.DEVICE


class OutputError(InternVLError):
    """The output location cannot be used: a file where a folder is needed, read-only, cannot be created."""

    exit_code = ExitCode.OUTPUT


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
