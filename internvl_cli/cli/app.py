"""The `internvl` application: its global options, and the one place core failures become messages and exit codes."""
from __future__ import annotations

import logging
import os
import sys
import traceback
from contextlib import contextmanager

import typer

from .. import __version__
from ..errors import ExitCode, InternVLError
from .shell import InternvlGroup

app = typer.Typer(
    name="internvl",
    cls=InternvlGroup,
    help="Document understanding with InternVL: OCR, chart tables and schema-valid JSON from PDFs and images.\n\n"
         "Data goes to stdout, progress and errors to stderr; every failure has its own exit code "
         "(`internvl help exit-codes`). Global options (-q, -v) may come before or after the command. Defaults "
         "for any option can be kept in a config file (`internvl config set max-tiles 6`).\n\n"
         "\b\nExamples:\n"
         "  internvl ocr scan.pdf > scan.md\n"
         "  internvl -q ocr inbox/ -o out/      # cron: reruns skip what is done\n"
         "  internvl help exit-codes",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,  # plain help and one-line usage errors: readable in pipes, pagers and logs
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


# `inspect --model` reads a checkpoint's tiling only when asked: a configured default model must not make inspect
# resolve (or download) one.
InternvlGroup.config_exempt = {("inspect", "model")}


state = {"verbose": False, "quiet": False}


def err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def report_error(error: InternVLError) -> None:
    """The one place a core failure becomes a line on stderr."""
    err(f"internvl: error: {error.one_line()}")
    if state["verbose"]:
        cause = error.__cause__ or error
        err("".join(traceback.format_exception(type(cause), cause, cause.__traceback__)).rstrip())


@contextmanager
def exit_on_error():
    """Turns typed failures into their exit code, unexpected ones into exit 1 with a hint to use --verbose."""
    try:
        yield
    except InternVLError as error:
        report_error(error)
        raise typer.Exit(int(error.exit_code)) from None
    except KeyboardInterrupt:
        err("internvl: interrupted")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except BrokenPipeError:
        reader_left()
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # a bug: one line by default, the traceback with --verbose
        err(f"internvl: error: unexpected {type(exc).__name__}: {exc} (run with --verbose and report it)")
        if state["verbose"]:
            err(traceback.format_exc().rstrip())
        raise typer.Exit(int(ExitCode.OTHER_ERROR)) from None


def reader_left() -> None:
    """`internvl ... | head`: the reader went away. Like a tool ended by SIGPIPE: no message, exit 141. The run
    stopped where it was (with -o, finished documents are recorded and a rerun resumes); stdout and stderr are
    pointed at /dev/null so that flushing them at exit cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # not a real file (a test runner's buffer): nothing to protect
            pass
    os.close(devnull)
    raise typer.Exit(int(ExitCode.CLOSED_PIPE))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"internvl-cli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and debug details on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output; errors are still printed."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    state["verbose"] = verbose
    state["quiet"] = quiet
    _setup_logging(verbose, quiet)


class _StderrLines(logging.Handler):
    """The core's notes (`internvl_cli` logger) as `internvl: ...` lines on stderr: INFO is progress (hidden by
    -q), WARNING always shows, DEBUG only with -v."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "internvl: warning: " if record.levelno >= logging.WARNING else "internvl: "
        err(prefix + record.getMessage())


def _setup_logging(verbose: bool, quiet: bool) -> None:
    from ..quiet import set_third_party_verbose

    set_third_party_verbose(verbose)  # -v lets torch, transformers and gptqmodel speak too
    logger = logging.getLogger("internvl_cli")
    if not any(isinstance(h, _StderrLines) for h in logger.handlers):
        logger.addHandler(_StderrLines())
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def note(message: str) -> None:
    if not state["quiet"]:
        err(f"internvl: {message}")
