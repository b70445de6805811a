"""The command-line client: parses arguments, prints, and maps core exceptions to messages and exit codes."""
from __future__ import annotations

import json
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .errors import ExitCode, InternVLError, UsageError
from .models.presets import DEFAULT_MODEL
from .runs.batch import BatchSettings, Hooks, run_documents
from .runs.progress import make_progress

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
IncludeOpt = typer.Option([], "--include", help="Only documents whose relative path or name matches this glob "
                          "(repeatable).")
ExcludeOpt = typer.Option([], "--exclude", help="Skip documents matching this glob (repeatable).")
ForceOpt = typer.Option(False, "--force", help="With -o: redo documents the ledger says are done.")
RetryOpt = typer.Option(False, "--retry-failed", help="With -o: redo only documents that failed before.")
WaitOpt = typer.Option(False, "--wait", help="With -o: wait for another run on the same directory instead of "
                       "exiting with code 9.")
PathsArg = typer.Argument(..., help="PDF or image files, directories, glob patterns, or - to read paths from stdin.")


def _open_engine(model: str, device: str, dtype: str):
    """Resolves the checkpoint and reads its configs; the weights load only once there is work to do."""
    from .engine import load_engine

    return load_engine(model, device=device, dtype=dtype)


def _note(message: str) -> None:
    if not _state["quiet"]:
        _err(f"internvl: {message}")


def _count_docs(paths: list[str]) -> int:
    """How many documents a command will see before any model is loaded (stdin lists count as many)."""
    return 2 if paths == ["-"] or len(paths) != 1 or Path(paths[0]).is_dir() else 1


def run_batch(task, engine, batch: BatchSettings, fmt: str, suffix: str) -> None:
    """Runs a document command through the core and turns its report into the exit code."""
    hooks = Hooks(error=report_error, note=_note, progress=lambda total: make_progress(total, _state["quiet"]),
                  before_load=lambda engine: _note(f"loading model {engine.model_id} ..."),
                  loaded=lambda engine: _note("model ready: " + ", ".join(
                      f"{key}={value}" for key, value in engine.describe().items())))
    report = run_documents(task, engine, batch, fmt, suffix, hooks)
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
                                      "jsonl (one record per page). Default: markdown for one document or "
                                      "with -o, jsonl for several on stdout."),
    text_layer: bool = typer.Option(True, "--text-layer/--no-text-layer",
                                    help="Give a PDF page's own text layer to the model as an anchor when it has "
                                         "a usable one (the output says which path was taken)."),
    model: str = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt,
    min_tiles: Optional[int] = MinTilesOpt, max_tiles: Optional[int] = MaxTilesOpt,
    max_new_tokens: int = MaxNewTokensOpt,
    output: Optional[Path] = OutputOpt, include: list[str] = IncludeOpt, exclude: list[str] = ExcludeOpt,
    force: bool = ForceOpt, retry_failed: bool = RetryOpt, wait: bool = WaitOpt,
    batch_size: int = BatchOpt, batch_tiles: int = BatchTilesOpt,
) -> None:
    """Transcribe PDFs and images to markdown or text, page by page.

    \b
    Examples:
      internvl ocr scan.pdf > scan.md
      internvl ocr photos/*.jpg --format jsonl | jq -r .text
      internvl ocr report.pdf --pages 1-3 --max-tiles 6
      internvl ocr inbox/ -o out/        # cron: reruns skip what is done
    """
    from .tasks.ocr import FORMATS, OcrTask

    with _exit_on_error():
        batch = BatchSettings(paths, output, include, exclude, force, retry_failed, wait, batch_size, batch_tiles)
        fmt = fmt or ("markdown" if output or _count_docs(paths) == 1 else "jsonl")
        _check_choice("--format", fmt, FORMATS)
        _check_common(pages, max_new_tokens)
        engine = _open_engine(model, device, dtype)
        options = _page_options(engine, pages, password, min_tiles, max_tiles, max_new_tokens)
        suffix = {"markdown": ".md", "text": ".txt", "jsonl": ".jsonl"}[fmt]
        run_batch(OcrTask(options, engine.model_id, use_text_layer=text_layer), engine, batch, fmt, suffix)


@app.command()
def chart(
    paths: list[str] = PathsArg,
    fmt: str = typer.Option("csv", "--format", "-f", help="csv, markdown, or json (one object per chart with "
                            "columns and rows)."),
    model: str = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt,
    min_tiles: Optional[int] = MinTilesOpt, max_tiles: Optional[int] = MaxTilesOpt,
    max_new_tokens: int = MaxNewTokensOpt,
    output: Optional[Path] = OutputOpt, include: list[str] = IncludeOpt, exclude: list[str] = ExcludeOpt,
    force: bool = ForceOpt, retry_failed: bool = RetryOpt, wait: bool = WaitOpt,
    batch_size: int = BatchOpt, batch_tiles: int = BatchTilesOpt,
) -> None:
    """Turn charts (images or PDF pages) into data tables.

    Decoding is constrained to a rectangular table: one header row, every row the same number of
    columns; numeric cells are normalised (thousands separators, currency signs and % removed).
    Several charts on stdout are separated by a blank line.

    \b
    Examples:
      internvl chart figure.png --format csv > data.csv
      internvl chart report.pdf --pages 4 --format markdown
    """
    from .tasks.chart import FORMATS, ChartTask

    with _exit_on_error():
        batch = BatchSettings(paths, output, include, exclude, force, retry_failed, wait, batch_size, batch_tiles)
        _check_choice("--format", fmt, FORMATS)
        _check_common(pages, max_new_tokens)
        engine = _open_engine(model, device, dtype)
        options = _page_options(engine, pages, password, min_tiles, max_tiles, max_new_tokens)
        suffix = {"csv": ".csv", "markdown": ".md", "json": ".jsonl"}[fmt]
        run_batch(ChartTask(options, engine.model_id), engine, batch, fmt, suffix)


@app.command()
def extract(
    ctx: typer.Context,
    paths: list[str] = PathsArg,
    schema: str = typer.Option(..., "--schema", "-s", help="A JSON Schema: a file, the name of a shipped one "
                               "(`internvl schemas`: invoice, receipt, key_value), inline JSON ('{\"type\": ...}'), "
                               "or a concise field list: 'vendor, total float: grand total, date date, due date?, "
                               "items str[]' (types str, int, float, bool, date, datetime, time, email, uri; [] for "
                               "a list; ? for optional). Drafts 2020-12 (default), 2019-09, 07 and 06."),
    data_only: bool = typer.Option(False, "--data-only", help="Print only the extracted data of valid records."),
    votes: int = typer.Option(1, "--votes", help="Sample N answers per document; the record is their field-wise "
                              "majority if that validates, else the most common valid answer (greedy when 1)."),
    window_pages: int = typer.Option(6, "--window-pages", help="Pages shown to the model at once; longer "
                                     "documents are read in windows whose results are merged."),
    window_tiles: int = typer.Option(24, "--window-tiles", help="Tiles shared by the pages of one window "
                                     "(fewer tiles per page as pages grow)."),
    text_layer: bool = typer.Option(True, "--text-layer/--no-text-layer",
                                    help="Give a PDF's text layer to the model as an anchor."),
    model: str = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt,
    max_tiles: Optional[int] = MaxTilesOpt, max_new_tokens: int = MaxNewTokensOpt,
    output: Optional[Path] = OutputOpt, include: list[str] = IncludeOpt, exclude: list[str] = ExcludeOpt,
    force: bool = ForceOpt, retry_failed: bool = RetryOpt, wait: bool = WaitOpt,
    batch_size: int = BatchOpt, batch_tiles: int = BatchTilesOpt,
) -> None:
    """Extract one schema-valid JSON record per document.

    Output: one JSON line per document, {"file", "pages", "data", "valid", "errors", "flags",
    "unenforced", "model", "seconds"}. Decoding is held by a grammar built from the schema; what a
    grammar cannot hold (uniqueItems, contains, not, if/then/else, dependent*, propertyNames,
    unevaluated* beside applicators, oneOf exclusivity, some regex features) is listed in
    "unenforced", and every answer is validated against the full schema, formats included. An answer
    that fails is retried (sampled) up to twice; a record that still fails has "valid": false and its
    errors, and exits with code 11. Without --max-new-tokens the budget grows to fit the schema.

    \b
    Examples:
      internvl extract invoices/ --schema invoice > invoices.jsonl
      internvl extract scan.pdf --schema my-schema.json --data-only | jq .total
      internvl extract receipt.jpg --schema 'shop, total float, date date'
      internvl schemas show invoice      # print a shipped schema to start your own
    """
    from .engine.base import Sampling
    from .tasks.schemas import load_schema
    from .tasks.extract import ExtractOptions, ExtractTask, answer_budget

    with _exit_on_error():
        batch = BatchSettings(paths, output, include, exclude, force, retry_failed, wait, batch_size, batch_tiles)
        _check_common(pages, max_new_tokens)
        if votes < 1 or window_pages < 1 or window_tiles < 1:
            raise UsageError("--votes, --window-pages and --window-tiles must be at least 1")
        loaded = load_schema(schema)  # a bad schema fails before any model is loaded
        explicit = ctx.get_parameter_source("max_new_tokens").name in ("COMMANDLINE", "ENVIRONMENT")
        budget, notes = answer_budget(loaded, max_new_tokens, explicit)
        engine = _open_engine(model, device, dtype)
        options = ExtractOptions(
            tiling=engine.tiling.with_limits(None, max_tiles), sampling=Sampling(max_new_tokens=budget),
            window_pages=window_pages, window_tiles=window_tiles, votes=votes, password=password, pages=pages,
            use_text_layer=text_layer)
        task = ExtractTask(options, loaded, engine.model_id)
        for note in notes + task.preflight(getattr(engine, "context_length", None)):
            _note(note)
        fmt = "data" if data_only else "record"
        run_batch(task, engine, batch, fmt, ".json")


schemas_app = typer.Typer(help="The JSON Schemas shipped with internvl-cli (use their names with `extract "
                          "--schema`).", invoke_without_command=True, no_args_is_help=False)
app.add_typer(schemas_app, name="schemas")


@schemas_app.callback()
def schemas(ctx: typer.Context) -> None:
    """List the shipped JSON Schemas; `internvl schemas show NAME` prints one."""
    from .tasks.schemas import list_schemas

    if ctx.invoked_subcommand is not None:
        return
    with _exit_on_error():
        for name, description in list_schemas():
            typer.echo(f"{name}\t{description}")


@schemas_app.command("show")
def schemas_show(
    spec: str = typer.Argument(..., help="A shipped schema's name, a schema file, inline JSON or a concise "
                               "field list (shown as the JSON Schema it stands for)."),
    grammar: bool = typer.Option(False, "--grammar", help="Print the grammar's copy instead (what decoding "
                                 "enforces), and on stderr what is validated but not enforced."),
) -> None:
    """Print a schema as JSON: copy a shipped one to start your own, or see what a concise list means."""
    from .tasks.schemas import load_schema, show_schema

    with _exit_on_error():
        if not grammar:
            typer.echo(show_schema(spec), nl=False)
            return
        loaded = load_schema(spec)
        typer.echo(json.dumps(loaded.grammar, indent=2, ensure_ascii=False))
        for keyword, where in loaded.unenforced_at:
            _err(f"internvl: not enforced (validated): {keyword} at {where}")


@app.command()
def status(
    output: Path = typer.Argument(..., help="An output directory written with -o."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise an output directory: documents done, failed (with reasons) and pending."""
    from .runs.ledger import Ledger

    with _exit_on_error():
        if not output.is_dir():
            raise UsageError(f"{output}: not a directory")
        with Ledger.open(output, create=False) as ledger:
            summary = ledger.summary()
        if as_json:
            typer.echo(json.dumps(summary, indent=2, default=str))
            return
        typer.echo(f"done: {summary['done']}  failed: {summary['failed']}  pending: {summary['pending']}  "
                   f"running: {summary['running']}  interrupted: {summary.get('interrupted', 0)}  "
                   f"pages: {summary['pages']}")
        for failure in summary["failures"]:
            typer.echo(f"failed: {failure['source']}: {failure['error']}")


@app.command()
def convert(
    src: Path = typer.Argument(..., help="A checkpoint directory in the original remote-code layout "
                               "(InternVLChatModel), bf16 or AWQ."),
    dst: Path = typer.Argument(..., help="Where to write the native (-hf) layout checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it already holds files."),
) -> None:
    """Convert an official remote-code InternVL checkpoint to the native transformers layout, offline.

    No remote code is executed. The fused vision qkv is split, weights renamed, AWQ quantization lifted
    to the top-level config, and tokenizer, chat template and preprocessor config written. Commands do
    this by themselves (once, cached) when --model names such a checkpoint.
    """
    from .models.convert import convert_checkpoint

    with _exit_on_error():
        out = convert_checkpoint(src, dst, overwrite=overwrite)
        _note(f"converted {src} -> {out}")


@app.command()
def quantize(
    src: Path = typer.Argument(..., help="A native (-hf) bf16 InternVL checkpoint directory."),
    dst: Path = typer.Argument(..., help="Where to write the AWQ 4-bit checkpoint."),
    calibration: list[str] = typer.Option(..., "--calibration", "-c", help="Document images or folders used "
                                          "to calibrate (a few dozen pages of your own documents)."),
) -> None:
    """AWQ-quantize the language model of a native checkpoint (needs a CUDA GPU; vision stays 16-bit)."""
    from .documents.inputs import discover
    from .models.quantize import quantize_to_awq

    with _exit_on_error():
        images = [doc.path for doc in discover(calibration).docs]
        if not images:
            raise UsageError("--calibration found no images")
        quantize_to_awq(src, dst, images)
        _note(f"quantized {src} -> {dst}")


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON lines.")) -> None:
    """List the model presets: size, layout, quantization, expected GPU memory, whether cached, licence.

    The licence column gives the weights' terms as their model cards state them (InternVL's part, then the
    language model's); read the model card before commercial use.
    """
    from .models.presets import PRESETS, is_cached

    with _exit_on_error():
        rows = [{**preset.__dict__, "cached": is_cached(preset), "default": name == DEFAULT_MODEL}
                for name, preset in PRESETS.items()]
        if as_json or not sys.stdout.isatty():
            for row in rows:
                typer.echo(json.dumps(row))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("preset", "repository", "layout", "quant", "params", "GPU GB", "max tiles", "cached", "licence")
        for row in rows:
            name = row["name"] + (" (default)" if row["default"] else "")
            table.add_row(name, row["repo_id"], row["layout"], row["quantization"], row["params"],
                          f"{row['gpu_memory_gb']:.1f}", str(row["max_tiles"]), "yes" if row["cached"] else "no",
                          row["licence"])
        Console().print(table)


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Check this machine: torch, CUDA and GPU memory, key package versions, AWQ kernels, which presets fit."""
    from .diagnostics import diagnose

    with _exit_on_error():
        report = diagnose()
        if as_json:
            typer.echo(json.dumps(report, indent=2))
            return
        for key, value in report.items():
            if isinstance(value, list):
                value = ", ".join(value) or "none"
            typer.echo(f"{key:>16}: {value}")


def _check_choice(option: str, value: str, choices) -> None:
    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)}")


def _check_common(pages: Optional[str], max_new_tokens: int) -> None:
    """Usage errors surface before the (slow) model load."""
    from .documents.pages import parse_page_ranges

    parse_page_ranges(pages)
    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")


def _page_options(engine, pages, password, min_tiles, max_tiles, max_new_tokens):
    from .engine.base import Sampling
    from .tasks.pagewise import PageOptions

    return PageOptions(tiling=engine.tiling.with_limits(min_tiles, max_tiles),
                       sampling=Sampling(max_new_tokens=max_new_tokens), password=password, pages=pages)


@app.command()
def inspect(
    paths: list[str] = PathsArg,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per page on stdout instead of a table."),
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt,
    min_tiles: Optional[int] = MinTilesOpt, max_tiles: Optional[int] = MaxTilesOpt,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Read the tiling settings of this checkpoint "
                                       "(its small config files only; no weights are loaded). Default: "
                                       "InternVL's standard 448px tiles, 1..12."),
) -> None:
    """Show, without loading a model, how each page will be tiled and what it will cost.

    Per page: its pixel size (PDF pages measured at 200 DPI), the chosen grid of 448px tiles, the tile
    count (grid plus thumbnail), the image tokens it costs, and whether a PDF text layer exists.
    """
    from .documents.inspection import inspect_pages
    from .documents.tiling import TilingConfig

    with _exit_on_error():
        base = _open_engine(model, "cpu", "auto").tiling if model else TilingConfig()
        tiling = base.with_limits(min_tiles, max_tiles)
        failed: list[InternVLError] = []
        rows = []
        found = _discover_plain(paths)
        failed.extend(found.errors)
        for path in [doc.path for doc in found.docs]:
            try:
                rows.extend(inspect_pages(path, tiling, password=password, pages=pages))
            except InternVLError as error:
                report_error(error)
                failed.append(error)
        _print_inspection(rows, as_json)
        if failed:
            codes = {e.exit_code for e in failed}
            raise typer.Exit(int(codes.pop() if len(codes) == 1 and not rows else ExitCode.PARTIAL))


def _discover_plain(paths: list[str]):
    from .documents.inputs import discover

    found = discover(paths, stdin=sys.stdin)
    for error in found.errors:
        report_error(error)
    return found


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
    try:
        app()
    except BrokenPipeError:  # `internvl ... | head`: the reader left; that is not an error
        sys.stderr.close()
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()
