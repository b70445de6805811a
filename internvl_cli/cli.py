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
from .engine.base import DEFAULT_MAX_NEW_TOKENS
from .engine.repetition import LoopRule
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
FramesOpt = typer.Option(None, "--frames", help="Frames of multi-frame images read as pages: all or first. "
                         "Default: every TIFF page, the first frame of GIF, WebP and other animations.")
MinTilesOpt = typer.Option(None, "--min-tiles", help="Fewest 448px tiles per page (default from the model, 1).")
MaxTilesOpt = typer.Option(None, "--max-tiles", help="Most 448px tiles per page, up to 40 (default from the model, 12).")
MaxNewTokensOpt = typer.Option(DEFAULT_MAX_NEW_TOKENS, "--max-new-tokens",
                               help="Longest answer per page (per window for extract), in tokens; never more than "
                                    "the model's context leaves after the prompt. An answer that reaches it is "
                                    "flagged truncated.")
_PROMPTS = "Prompt"
PromptOpt = typer.Option(None, "--prompt", rich_help_panel=_PROMPTS,
                         help="Your own instruction: a prompt file, or a shipped prompt's name (`internvl prompts` "
                              "lists them and their placeholders). Part of the task hash.")
AnchoredPromptOpt = typer.Option(None, "--anchored-prompt", rich_help_panel=_PROMPTS,
                                 help="The prompt for PDF pages with a text layer; must contain {text_layer}. "
                                      "Default: --prompt followed by the shipped text-layer paragraphs.")
SystemOpt = typer.Option(None, "--system", rich_help_panel=_PROMPTS,
                         help="System message: the text itself, or a file holding it. Default: the checkpoint's "
                              "own (InternVL's official models were trained with one).")
NoSystemOpt = typer.Option(False, "--no-system", rich_help_panel=_PROMPTS, help="Send no system turn at all.")
_LOOPS = "Loop detection"
_RULE = LoopRule()
LoopStopOpt = typer.Option(True, "--loop-stop/--no-loop-stop", rich_help_panel=_LOOPS,
                           help="Stop an answer that repeats itself longer than a page could (flagged repetition).")
LoopRepeatsOpt = typer.Option(_RULE.min_repeats, "--loop-repeats", rich_help_panel=_LOOPS,
                              help="Fewest back-to-back repeats of one unit that can count as a loop.")
LoopTokensOpt = typer.Option(_RULE.max_tokens, "--loop-tokens", rich_help_panel=_LOOPS,
                             help="A run of one unit repeated back to back that reaches this many tokens is a loop.")
LoopCharsOpt = typer.Option(_RULE.max_chars, "--loop-chars", rich_help_panel=_LOOPS,
                            help="... or longer than this many characters.")
LoopLinesOpt = typer.Option(_RULE.max_lines, "--loop-lines", rich_help_panel=_LOOPS,
                            help="... or longer than this many lines.")
LoopLineCharsOpt = typer.Option(_RULE.max_line_chars, "--loop-line-chars", rich_help_panel=_LOOPS,
                                help=f"A short unit (up to {_RULE.short_unit_chars} characters) repeating within "
                                     "one line over more than this many characters is a loop.")
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
EngineOpt = typer.Option("hf", "--engine", envvar="INTERNVL_ENGINE",
                         help="hf (transformers, default), vllm (in-process vLLM: continuous batching; "
                              'pip install "internvl-cli[vllm]") or server (OpenAI-compatible servers, --server).')
ServerOpt = typer.Option([], "--server", help="With --engine server: an OpenAI-compatible base URL, e.g. "
                         "http://127.0.0.1:8000/v1 (repeatable: the servers share the work).")
ConcurrencyOpt = typer.Option(32, "--concurrency", help="With --engine server: requests in flight over all "
                              "servers (about 32 per GPU behind them).")
TimeoutOpt = typer.Option(600.0, "--request-timeout", help="With --engine server: seconds one request may take "
                          "before it is retried.")
TensorParallelOpt = typer.Option(1, "--tensor-parallel-size", help="With --engine vllm: GPUs one model is split "
                                 "over (models too large for one GPU).")
DataParallelOpt = typer.Option(1, "--data-parallel-size", help="With --engine vllm: replicas; vLLM runs these only "
                               "as a server, see README (several GPUs on one machine).")


def _engine_settings(engine: str, servers: list[str], concurrency: int, request_timeout: float,
                     tensor_parallel: int, data_parallel: int, max_images: int = 1):
    from .engine import EngineSettings

    return EngineSettings(kind=engine, servers=list(servers), concurrency=concurrency,
                          request_timeout=request_timeout, tensor_parallel_size=tensor_parallel,
                          data_parallel_size=data_parallel, max_images=max_images)


def _open_engine(model: str, device: str, dtype: str, settings=None):
    """Resolves the checkpoint and reads its configs; the weights load only once there is work to do."""
    from .engine import load_engine

    return load_engine(model, device=device, dtype=dtype, settings=settings)


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
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt, frames: Optional[str] = FramesOpt,
    min_tiles: Optional[int] = MinTilesOpt, max_tiles: Optional[int] = MaxTilesOpt,
    max_new_tokens: int = MaxNewTokensOpt,
    output: Optional[Path] = OutputOpt, include: list[str] = IncludeOpt, exclude: list[str] = ExcludeOpt,
    force: bool = ForceOpt, retry_failed: bool = RetryOpt, wait: bool = WaitOpt,
    batch_size: int = BatchOpt, batch_tiles: int = BatchTilesOpt,
    engine_name: str = EngineOpt, servers: list[str] = ServerOpt, concurrency: int = ConcurrencyOpt,
    request_timeout: float = TimeoutOpt, tensor_parallel: int = TensorParallelOpt,
    data_parallel: int = DataParallelOpt,
    prompt: Optional[str] = PromptOpt, anchored_prompt: Optional[str] = AnchoredPromptOpt,
    system: Optional[str] = SystemOpt, no_system: bool = NoSystemOpt,
    loop_stop: bool = LoopStopOpt, loop_repeats: int = LoopRepeatsOpt, loop_tokens: int = LoopTokensOpt,
    loop_chars: int = LoopCharsOpt, loop_lines: int = LoopLinesOpt, loop_line_chars: int = LoopLineCharsOpt,
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
    from .tasks.prompts import prompt_set, resolve_system

    with _exit_on_error():
        batch = BatchSettings(paths, output, include, exclude, force, retry_failed, wait, batch_size, batch_tiles)
        fmt = fmt or ("markdown" if output or _count_docs(paths) == 1 else "jsonl")
        _check_choice("--format", fmt, FORMATS)
        _check_common(pages, max_new_tokens, frames)
        prompts = prompt_set("ocr", prompt, anchored_prompt)  # a bad prompt fails before the model loads
        loop = _loop_rule(loop_stop, loop_repeats, loop_tokens, loop_chars, loop_lines, loop_line_chars)
        system_text = resolve_system(system, no_system)
        engine = _open_engine(model, device, dtype, _engine_settings(
            engine_name, servers, concurrency, request_timeout, tensor_parallel, data_parallel))
        options = _page_options(engine, pages, password, min_tiles, max_tiles, max_new_tokens, frames, loop,
                               system_text)
        suffix = {"markdown": ".md", "text": ".txt", "jsonl": ".jsonl"}[fmt]
        run_batch(OcrTask(options, engine.model_id, use_text_layer=text_layer, prompts=prompts), engine, batch,
                  fmt, suffix)


@app.command()
def chart(
    paths: list[str] = PathsArg,
    fmt: str = typer.Option("csv", "--format", "-f", help="csv, markdown, or json (one object per chart with "
                            "columns and rows)."),
    model: str = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt, frames: Optional[str] = FramesOpt,
    min_tiles: Optional[int] = MinTilesOpt, max_tiles: Optional[int] = MaxTilesOpt,
    max_new_tokens: int = MaxNewTokensOpt,
    output: Optional[Path] = OutputOpt, include: list[str] = IncludeOpt, exclude: list[str] = ExcludeOpt,
    force: bool = ForceOpt, retry_failed: bool = RetryOpt, wait: bool = WaitOpt,
    batch_size: int = BatchOpt, batch_tiles: int = BatchTilesOpt,
    engine_name: str = EngineOpt, servers: list[str] = ServerOpt, concurrency: int = ConcurrencyOpt,
    request_timeout: float = TimeoutOpt, tensor_parallel: int = TensorParallelOpt,
    data_parallel: int = DataParallelOpt,
    prompt: Optional[str] = PromptOpt, system: Optional[str] = SystemOpt, no_system: bool = NoSystemOpt,
    loop_stop: bool = LoopStopOpt, loop_repeats: int = LoopRepeatsOpt, loop_tokens: int = LoopTokensOpt,
    loop_chars: int = LoopCharsOpt, loop_lines: int = LoopLinesOpt, loop_line_chars: int = LoopLineCharsOpt,
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
    from .tasks.prompts import prompt_set, resolve_system

    with _exit_on_error():
        batch = BatchSettings(paths, output, include, exclude, force, retry_failed, wait, batch_size, batch_tiles)
        _check_choice("--format", fmt, FORMATS)
        _check_common(pages, max_new_tokens, frames)
        prompts = prompt_set("chart", prompt)
        loop = _loop_rule(loop_stop, loop_repeats, loop_tokens, loop_chars, loop_lines, loop_line_chars)
        system_text = resolve_system(system, no_system)
        engine = _open_engine(model, device, dtype, _engine_settings(
            engine_name, servers, concurrency, request_timeout, tensor_parallel, data_parallel))
        options = _page_options(engine, pages, password, min_tiles, max_tiles, max_new_tokens, frames, loop,
                               system_text)
        suffix = {"csv": ".csv", "markdown": ".md", "json": ".jsonl"}[fmt]
        run_batch(ChartTask(options, engine.model_id, prompts=prompts), engine, batch, fmt, suffix)


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
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt, frames: Optional[str] = FramesOpt,
    max_tiles: Optional[int] = MaxTilesOpt, max_new_tokens: int = MaxNewTokensOpt,
    output: Optional[Path] = OutputOpt, include: list[str] = IncludeOpt, exclude: list[str] = ExcludeOpt,
    force: bool = ForceOpt, retry_failed: bool = RetryOpt, wait: bool = WaitOpt,
    batch_size: int = BatchOpt, batch_tiles: int = BatchTilesOpt,
    engine_name: str = EngineOpt, servers: list[str] = ServerOpt, concurrency: int = ConcurrencyOpt,
    request_timeout: float = TimeoutOpt, tensor_parallel: int = TensorParallelOpt,
    data_parallel: int = DataParallelOpt,
    prompt: Optional[str] = PromptOpt, anchored_prompt: Optional[str] = AnchoredPromptOpt,
    system: Optional[str] = SystemOpt, no_system: bool = NoSystemOpt,
    loop_stop: bool = LoopStopOpt, loop_repeats: int = LoopRepeatsOpt, loop_tokens: int = LoopTokensOpt,
    loop_chars: int = LoopCharsOpt, loop_lines: int = LoopLinesOpt, loop_line_chars: int = LoopLineCharsOpt,
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
    from .tasks.prompts import prompt_set, resolve_system
    from .tasks.schemas import load_schema
    from .tasks.extract import ExtractOptions, ExtractTask, answer_budget

    with _exit_on_error():
        batch = BatchSettings(paths, output, include, exclude, force, retry_failed, wait, batch_size, batch_tiles)
        _check_common(pages, max_new_tokens, frames)
        if votes < 1 or window_pages < 1 or window_tiles < 1:
            raise UsageError("--votes, --window-pages and --window-tiles must be at least 1")
        loaded = load_schema(schema)  # a bad schema fails before any model is loaded
        prompts = prompt_set("extract", prompt, anchored_prompt)
        loop = _loop_rule(loop_stop, loop_repeats, loop_tokens, loop_chars, loop_lines, loop_line_chars)
        system_text = resolve_system(system, no_system)
        explicit = ctx.get_parameter_source("max_new_tokens").name in ("COMMANDLINE", "ENVIRONMENT")
        budget, notes = answer_budget(loaded, max_new_tokens, explicit)
        engine = _open_engine(model, device, dtype, _engine_settings(
            engine_name, servers, concurrency, request_timeout, tensor_parallel, data_parallel,
            max_images=window_pages))
        options = ExtractOptions(
            tiling=engine.tiling.with_limits(None, max_tiles),
            sampling=Sampling(max_new_tokens=budget, loop=loop),
            window_pages=window_pages, window_tiles=window_tiles, votes=votes, password=password, pages=pages,
            use_text_layer=text_layer, frames=frames, system=system_text)
        task = ExtractTask(options, loaded, engine.model_id, prompts=prompts)
        for note in notes + task.preflight(getattr(engine, "context_length", None)):
            _note(note)
        fmt = "data" if data_only else "record"
        run_batch(task, engine, batch, fmt, ".json")


@app.command()
def prompts(
    name: Optional[str] = typer.Argument(None, help="Print this shipped prompt's text (a start for your own)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """List the shipped prompts (use them, or files of your own, with --prompt / --anchored-prompt).

    Placeholders: {text_layer} the PDF page's text layer (anchored prompts only), {fields} the schema's
    fields with their descriptions and {page_note} which pages the images show (extract). Write {{name}}
    for a literal {name}.
    """
    from .tasks.prompts import list_prompts, shipped_prompt

    with _exit_on_error():
        if name is not None:
            typer.echo(shipped_prompt(name).text)
            return
        for row in list_prompts():
            if as_json:
                typer.echo(json.dumps(row))
                continue
            names = " ".join("{" + p + "}" for p in row["placeholders"]) or "-"
            typer.echo(f"{row['name']}\t{row['command']} {row['option']}\t{row['pages']}\t{names}\t{row['purpose']}")


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
    """List the model presets: size, layout, quantization, expected GPU memory, engines, whether cached, licence.

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

        table = Table("preset", "repository", "layout", "quant", "params", "GPU GB", "max tiles", "engines", "cached",
                      "licence")
        for row in rows:
            name = row["name"] + (" (default)" if row["default"] else "")
            table.add_row(name, row["repo_id"], row["layout"], row["quantization"], row["params"],
                          f"{row['gpu_memory_gb']:.1f}", str(row["max_tiles"]), ",".join(row["engines"]),
                          "yes" if row["cached"] else "no",
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


def _check_common(pages: Optional[str], max_new_tokens: int, frames: Optional[str] = None) -> None:
    """Usage errors surface before the (slow) model load."""
    from .documents.pages import check_frames, parse_page_ranges

    parse_page_ranges(pages)
    check_frames(frames)
    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")


def _page_options(engine, pages, password, min_tiles, max_tiles, max_new_tokens, frames=None,
                  loop: LoopRule = LoopRule(), system: Optional[str] = None):
    from .engine.base import Sampling
    from .tasks.pagewise import PageOptions

    return PageOptions(tiling=engine.tiling.with_limits(min_tiles, max_tiles),
                       sampling=Sampling(max_new_tokens=max_new_tokens, loop=loop), password=password, pages=pages,
                       frames=frames, system=system)


def _loop_rule(stop: bool, repeats: int, tokens: int, chars: int, lines: int, line_chars: int) -> LoopRule:
    try:
        return LoopRule(min_repeats=repeats, max_tokens=tokens, max_chars=chars, max_lines=lines,
                        max_line_chars=line_chars, enabled=stop)
    except ValueError as exc:
        option = {"min_repeats": "--loop-repeats", "max_tokens": "--loop-tokens", "max_chars": "--loop-chars",
                  "max_lines": "--loop-lines", "max_line_chars": "--loop-line-chars"}
        message = str(exc)
        for field_name, flag in option.items():
            message = message.replace(f"LoopRule.{field_name}", flag)
        raise UsageError(message) from None


@app.command()
def inspect(
    paths: list[str] = PathsArg,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per page on stdout instead of a table."),
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt, frames: Optional[str] = FramesOpt,
    min_tiles: Optional[int] = MinTilesOpt, max_tiles: Optional[int] = MaxTilesOpt,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Read the tiling settings of this checkpoint "
                                       "(its small config files only; no weights are loaded). Default: "
                                       "InternVL's standard 448px tiles, 1..12; with --prompt, the default model."),
    prompt: Optional[str] = typer.Option(None, "--prompt", rich_help_panel=_PROMPTS,
                                         help="Show the exact prompt each page would be sent with: a command's "
                                              "own prompts (ocr, chart, extract), a shipped prompt's name or a "
                                              "file. Loads the model's tokenizer, never its weights."),
    anchored_prompt: Optional[str] = AnchoredPromptOpt,
    task_name: Optional[str] = typer.Option(None, "--task", rich_help_panel=_PROMPTS,
                                            help="The command a --prompt file is for: ocr (default), chart or "
                                                 "extract."),
    schema: Optional[str] = typer.Option(None, "--schema", "-s", rich_help_panel=_PROMPTS,
                                         help="The JSON Schema, for extract prompts."),
    system: Optional[str] = SystemOpt, no_system: bool = NoSystemOpt,
    text_layer: bool = typer.Option(True, "--text-layer/--no-text-layer", rich_help_panel=_PROMPTS,
                                    help="As the commands' option of that name."),
    max_new_tokens: int = MaxNewTokensOpt,
) -> None:
    """Show, without loading a model, how each page will be tiled and what it will cost.

    Per page: its pixel size (PDF pages measured at 200 DPI), the chosen grid of 448px tiles, the tile
    count (grid plus thumbnail), the image tokens it costs, and whether a PDF text layer exists.
    With --prompt: the full prompt each page (or extract window) would be sent with, image tokens
    shown as <IMG_CONTEXT>*N, and its token count and answer budget.

    \b
    Examples:
      internvl inspect scan.pdf --max-tiles 6
      internvl inspect scan.pdf --prompt ocr --model internvl3-2b-awq
      internvl inspect bill.pdf --prompt my-extract.md --task extract --schema invoice --no-system
    """
    from .documents.inspection import inspect_pages
    from .documents.tiling import TilingConfig

    with _exit_on_error():
        if prompt is not None:
            return _inspect_prompts(paths, prompt, anchored_prompt, task_name, schema, system, no_system,
                                    text_layer, model or DEFAULT_MODEL, pages, password, frames, min_tiles,
                                    max_tiles, max_new_tokens, as_json)
        _check_common(pages, 1, frames)
        base = _open_engine(model, "cpu", "auto").tiling if model else TilingConfig()
        tiling = base.with_limits(min_tiles, max_tiles)
        failed: list[InternVLError] = []
        rows = []
        found = _discover_plain(paths)
        failed.extend(found.errors)
        for path in [doc.path for doc in found.docs]:
            try:
                rows.extend(inspect_pages(path, tiling, password=password, pages=pages, frames=frames))
            except InternVLError as error:
                report_error(error)
                failed.append(error)
        _print_inspection(rows, as_json)
        if failed:
            codes = {e.exit_code for e in failed}
            raise typer.Exit(int(codes.pop() if len(codes) == 1 and not rows else ExitCode.PARTIAL))


def _inspect_prompts(paths, prompt, anchored_prompt, task_name, schema, system, no_system, text_layer, model,
                     pages, password, frames, min_tiles, max_tiles, max_new_tokens, as_json) -> None:
    """`inspect --prompt`: builds the command's task as the command would and prints each unit's prompt."""
    from .engine.base import Sampling
    from .runs.preview import preview_prompts
    from .tasks.prompts import SHIPPED, prompt_set, resolve_system

    shipped = SHIPPED.get(prompt)
    command = task_name or (shipped[0] if shipped else "ocr")
    _check_choice("--task", command, ("ocr", "chart", "extract"))
    if shipped and task_name and shipped[0] != task_name:
        raise UsageError(f"--prompt {prompt} is a prompt of `{shipped[0]}`, not of `{task_name}`")
    _check_common(pages, max_new_tokens, frames)
    prompts = prompt_set(command, prompt, anchored_prompt)
    system_text = resolve_system(system, no_system)
    loaded = None
    if command == "extract":
        if schema is None:
            raise UsageError("extract prompts need --schema (its fields go into the prompt)")
        from .tasks.schemas import load_schema

        loaded = load_schema(schema)
    engine = _open_engine(model, "cpu", "auto")
    sampling = Sampling(max_new_tokens=max_new_tokens)
    if command == "extract":
        from .tasks.extract import ExtractOptions, ExtractTask

        options = ExtractOptions(tiling=engine.tiling.with_limits(None, max_tiles), sampling=sampling,
                                 password=password, pages=pages, use_text_layer=text_layer, frames=frames,
                                 system=system_text)
        task = ExtractTask(options, loaded, engine.model_id, prompts=prompts)
    else:
        from .tasks.pagewise import PageOptions

        options = PageOptions(tiling=engine.tiling.with_limits(min_tiles, max_tiles), sampling=sampling,
                              password=password, pages=pages, frames=frames, system=system_text)
        if command == "ocr":
            from .tasks.ocr import OcrTask

            task = OcrTask(options, engine.model_id, use_text_layer=text_layer, prompts=prompts)
        else:
            from .tasks.chart import ChartTask

            task = ChartTask(options, engine.model_id, prompts=prompts)
    failed: list[InternVLError] = []
    found = _discover_plain(paths)
    failed.extend(found.errors)
    shown = 0
    for path in [doc.path for doc in found.docs]:
        try:
            rows = preview_prompts(task, engine, path)
        except InternVLError as error:
            report_error(error)
            failed.append(error)
            continue
        for row in rows:
            shown += 1
            if as_json:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
                continue
            span = "-".join(str(p) for p in (row["pages"][0], row["pages"][-1])) if len(row["pages"]) > 1 \
                else str(row["pages"][0])
            sys.stdout.write(
                f"<!-- file: {row['file']} | page: {span} | {row['task']} | source: {row['source']} | "
                f"tiles: {row['tiles']} | prompt: {row['prompt_tokens']} tokens ({row['image_tokens']} image, "
                f"{row['text_tokens']} text) | answer budget: {row['max_new_tokens']} of context "
                f"{row['context']} -->\n{_visible(row['prompt'])}\n\n")
    if failed:
        codes = {e.exit_code for e in failed}
        raise typer.Exit(int(codes.pop() if len(codes) == 1 and not shown else ExitCode.PARTIAL))


def _visible(text: str) -> str:
    """Control characters (a PDF text layer may hold some) shown as escapes, so a terminal shows the prompt
    instead of obeying it; --json keeps the exact text."""
    return "".join(c if c in "\n\t" or not (ord(c) < 32 or 0x7f <= ord(c) <= 0x9f) else f"\\x{ord(c):02x}"
                   for c in text)


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

    table = Table("file", "page", "size (px)", "grid", "tiles", "image tokens", "text layer", "flags")
    for row in rows:
        table.add_row(row["file"], str(row["page"]), f"{row['width']}x{row['height']}",
                      f"{row['grid'][0]}x{row['grid'][1]}", str(row["tiles"]), str(row["image_tokens"]),
                      "yes" if row["text_layer"] else "no", row.get("error") or ", ".join(row.get("flags", ())))
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
