"""The command-line client: parses arguments, prints, and maps core exceptions to messages and exit codes."""
from __future__ import annotations

import json
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import ExitCode, InternVLError, UsageError
from .presets import DEFAULT_MODEL

app = typer.Typer(
    name="internvl",
    help="Document understanding with InternVL: OCR, chart tables and schema-valid JSON from PDFs and images.\n\n"
         "Data goes to stdout, progress and errors to stderr. Exit codes are listed in the README.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"verbose": False, "quiet": False}


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def report_error(error: InternVLError) -> None:
    """The one place a core failure becomes a line on stderr."""
    _err(f"internvl: error: {error.one_line()}")
    if _state["verbose"]:
        cause = error.__cause__ or error
        _err("".join(traceback.format_exception(type(cause), cause, cause.__traceback__)).rstrip())


@contextmanager
def _exit_on_error():
    """Turns typed failures into their exit code, unexpected ones into exit 1 with a hint to use --verbose."""
    try:
        yield
    except InternVLError as error:
        report_error(error)
        raise typer.Exit(int(error.exit_code)) from None
    except KeyboardInterrupt:
        _err("internvl: interrupted")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # a bug: one line by default, the traceback with --verbose
        _err(f"internvl: error: unexpected {type(exc).__name__}: {exc} (run with --verbose and report it)")
        if _state["verbose"]:
            _err(traceback.format_exc().rstrip())
        raise typer.Exit(int(ExitCode.OTHER_ERROR)) from None


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
    _state["verbose"] = verbose
    _state["quiet"] = quiet


# ----------------------------------------------------------------------------- shared options

ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m", envvar="INTERNVL_MODEL",
                        help="Preset name (see `internvl models`), hub id, or local checkpoint directory.")
DeviceOpt = typer.Option("auto", "--device", help="cuda, cuda:1, cpu, or auto (a GPU when there is one).")
DtypeOpt = typer.Option("auto", "--dtype", help="auto (bf16 on GPU), bfloat16, float16 or float32.")
PagesOpt = typer.Option(None, "--pages", help="Pages to process, e.g. 1-3,7 or 10- (counted from 1).")
PasswordOpt = typer.Option(None, "--password", envvar="INTERNVL_PDF_PASSWORD",
                           help="Password of encrypted PDFs (or set INTERNVL_PDF_PASSWORD).")
MinTilesOpt = typer.Option(None, "--min-tiles", help="Fewest 448px tiles per page (default from the model, 1).")
MaxTilesOpt = typer.Option(None, "--max-tiles", help="Most 448px tiles per page, up to 40 (default from the model, 12).")
MaxNewTokensOpt = typer.Option(1024, "--max-new-tokens", help="Longest answer per page, in tokens.")
BatchOpt = typer.Option(8, "--batch-size", help="Most pages per GPU batch.")
BatchTilesOpt = typer.Option(64, "--batch-tiles", help="Most tiles per GPU batch (bounds GPU memory).")
OutputOpt = typer.Option(None, "--output", "-o", help="Write one file per document into this directory "
                         "(with a ledger, so reruns skip finished documents) instead of stdout.")
PathsArg = typer.Argument(..., help="PDF or image files, directories, glob patterns, or - to read paths from stdin.")


def _load_engine(model: str, device: str, dtype: str):
    from .engine import load_engine

    _note(f"loading model {model} ...")
    engine = load_engine(model, device=device, dtype=dtype)
    _note("model ready: " + ", ".join(f"{k}={v}" for k, v in engine.describe().items()))
    return engine


def _note(message: str) -> None:
    if not _state["quiet"]:
        _err(f"internvl: {message}")


def _paths(args: list[str]) -> list[Path]:
    if args == ["-"]:
        return [Path(line.strip()) for line in sys.stdin if line.strip()]
    return [Path(arg) for arg in args]


class _ReportingSink:
    """Prints each failed document's one-line error as it happens, then delegates."""

    def __init__(self, inner):
        self.inner = inner

    def should_process(self, path: Path) -> bool:
        return self.inner.should_process(path)

    def emit(self, path, result, rendered) -> None:
        self.inner.emit(path, result, rendered)

    def fail(self, path, error) -> None:
        report_error(error)
        self.inner.fail(path, error)


@contextmanager
def _signals(stop: threading.Event, runner_ref: list):
    """SIGTERM asks the run to stop after the current batch (exit 143); Ctrl-C does the same with 130."""
    def on_term(signum, frame):
        stop.set()
        if runner_ref:
            runner_ref[0].stop_code = ExitCode.TERMINATED

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(task, engine, paths: list[Path], fmt: str, batch_size: int, batch_tiles: int) -> None:
    from .runner import RunOptions, Runner
    from .writers import StdoutSink

    stop = threading.Event()
    runner = Runner(task, engine, _ReportingSink(StdoutSink()), fmt,
                    RunOptions(batch_size=batch_size, max_batch_tiles=batch_tiles), stop=stop)
    with _signals(stop, [runner]):
        report = runner.run(paths)
    _note(f"{report.done} done, {len(report.failures)} failed, {report.skipped} skipped, "
          f"{report.pages} pages in {report.seconds:.1f} s")
    code = report.exit_code()
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


# ----------------------------------------------------------------------------- commands


@app.command()
def ocr(
    paths: list[str] = PathsArg,
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="markdown, text (pages split by form feeds) or "
                                      "jsonl (one record per page). Default: markdown for one document, "
                                      "jsonl for several."),
    text_layer: bool = typer.Option(True, "--text-layer/--no-text-layer",
                                    help="Give a PDF page's own text layer to the model as an anchor when it has "
                                         "a usable one (the output says which path was taken)."),
    model: str = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt,
    min_tiles: Optional[int] = MinTilesOpt, max_tiles: Optional[int] = MaxTilesOpt,
    max_new_tokens: int = MaxNewTokensOpt, batch_size: int = BatchOpt, batch_tiles: int = BatchTilesOpt,
) -> None:
    """Transcribe PDFs and images to markdown or text, page by page.

    \b
    Examples:
      internvl ocr scan.pdf > scan.md
      internvl ocr photos/*.jpg --format jsonl | jq -r .text
      internvl ocr report.pdf --pages 1-3 --max-tiles 6
    """
    from .engine.base import Sampling
    from .pages import parse_page_ranges
    from .tasks.ocr import FORMATS, OcrTask
    from .tasks.pagewise import PageOptions

    with _exit_on_error():
        files = _paths(paths)
        fmt = fmt or ("markdown" if len(files) == 1 else "jsonl")
        if fmt not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
        parse_page_ranges(pages)  # bad ranges are usage errors before the model loads
        if max_new_tokens < 1:
            raise UsageError("--max-new-tokens must be at least 1")
        engine = _load_engine(model, device, dtype)
        options = PageOptions(tiling=engine.tiling.with_limits(min_tiles, max_tiles),
                              sampling=Sampling(max_new_tokens=max_new_tokens), password=password, pages=pages)
        task = OcrTask(options, engine.model_id, use_text_layer=text_layer)
        _run(task, engine, files, fmt, batch_size, batch_tiles)


@app.command()
def inspect(
    paths: list[str] = PathsArg,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per page on stdout instead of a table."),
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt,
    min_tiles: Optional[int] = MinTilesOpt, max_tiles: Optional[int] = MaxTilesOpt,
) -> None:
    """Show, without loading a model, how each page will be tiled and what it will cost.

    Per page: its pixel size (PDF pages measured at 200 DPI), the chosen grid of 448px tiles, the tile
    count (grid plus thumbnail), the image tokens it costs, and whether a PDF text layer exists.
    """
    from .inspection import inspect_pages
    from .tiling import TilingConfig

    with _exit_on_error():
        tiling = TilingConfig().with_limits(min_tiles, max_tiles)
        failed: list[InternVLError] = []
        rows = []
        for path in _paths(paths):
            try:
                rows.extend(inspect_pages(path, tiling, password=password, pages=pages))
            except InternVLError as error:
                report_error(error)
                failed.append(error)
        _print_inspection(rows, as_json)
        if failed:
            codes = {e.exit_code for e in failed}
            raise typer.Exit(int(codes.pop() if len(codes) == 1 and not rows else ExitCode.PARTIAL))


def _print_inspection(rows: list[dict], as_json: bool) -> None:
    if as_json or not sys.stdout.isatty():
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("file", "page", "size (px)", "grid", "tiles", "image tokens", "text layer")
    for row in rows:
        table.add_row(row["file"], str(row["page"]), f"{row['width']}x{row['height']}",
                      f"{row['grid'][0]}x{row['grid'][1]}", str(row["tiles"]), str(row["image_tokens"]),
                      "yes" if row["text_layer"] else "no")
    Console().print(table)
    total = sum(row["image_tokens"] for row in rows)
    _err(f"internvl: {len(rows)} pages, {sum(r['tiles'] for r in rows)} tiles, {total} image tokens")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
