"""The command-line client: parses arguments, prints, and maps core exceptions to messages and exit codes."""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .engine.base import DEFAULT_MAX_NEW_TOKENS
from .decoding.repetition import LoopRule
from .errors import EXIT_CODE_MEANINGS, ExitCode, InternVLError, UsageError
from .models.presets import DEFAULT_MODEL
from .runs.batch import BatchSettings, Hooks, run_documents
from .runs.progress import make_progress
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
    except BrokenPipeError:
        _reader_left()
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # a bug: one line by default, the traceback with --verbose
        _err(f"internvl: error: unexpected {type(exc).__name__}: {exc} (run with --verbose and report it)")
        if _state["verbose"]:
            _err(traceback.format_exc().rstrip())
        raise typer.Exit(int(ExitCode.OTHER_ERROR)) from None


def _reader_left() -> None:
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
    _state["verbose"] = verbose
    _state["quiet"] = quiet
    _setup_logging(verbose, quiet)


class _StderrLines(logging.Handler):
    """The core's notes (`internvl_cli` logger) as `internvl: ...` lines on stderr: INFO is progress (hidden by
    -q), WARNING always shows, DEBUG only with -v."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "internvl: warning: " if record.levelno >= logging.WARNING else "internvl: "
        _err(prefix + record.getMessage())


def _setup_logging(verbose: bool, quiet: bool) -> None:
    from .quiet import set_third_party_verbose

    set_third_party_verbose(verbose)  # -v lets torch, transformers and gptqmodel speak too
    logger = logging.getLogger("internvl_cli")
    if not any(isinstance(h, _StderrLines) for h in logger.handlers):
        logger.addHandler(_StderrLines())
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


# ----------------------------------------------------------------------------- shared options

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DTYPES = ("auto", "bfloat16", "float16", "float32")


def _check_device(value: str) -> str:
    """Syntax only (before anything loads); whether the device exists is the engine's question."""
    if value is not None and not DEVICE_PATTERN.fullmatch(value):
        raise typer.BadParameter(f"'{value}' is not a device: use auto, cpu, cuda or cuda:N")
    return value


def _check_dtype(value: str) -> str:
    if value is not None and value not in DTYPES:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(DTYPES)}")
    return value


def _preset_names(incomplete: str) -> list[str]:
    from .models.presets import PRESETS

    return [name for name in PRESETS if name.startswith(incomplete)]


ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m", envvar="INTERNVL_MODEL", autocompletion=_preset_names,
                        help="Preset name (see `internvl models`), hub id, or local checkpoint directory.")
DeviceOpt = typer.Option("auto", "--device", callback=_check_device,
                         help="cuda, cuda:1, cpu, or auto (a GPU when there is one).")
DtypeOpt = typer.Option("auto", "--dtype", callback=_check_dtype,
                        help="auto (bf16 on GPU), bfloat16, float16 or float32.")
PagesOpt = typer.Option(None, "--pages", help="Pages to process, e.g. 1-3,7 or 10- (counted from 1).")
PasswordOpt = typer.Option(None, "--password", envvar="INTERNVL_PDF_PASSWORD",
                           help="Password of encrypted PDFs (or set INTERNVL_PDF_PASSWORD).")
FramesOpt = typer.Option(None, "--frames", help="Frames of multi-frame images read as pages: all or first. "
                         "Default: every TIFF page, the first frame of GIF, WebP and other animations.")
MinTilesOpt = typer.Option(None, "--min-tiles", min=1, max=40,
                           help="Fewest 448px tiles per page (default from the model, 1).")
MaxTilesOpt = typer.Option(None, "--max-tiles", min=1, max=40,
                           help="Most 448px tiles per page, up to 40 (default from the model, 12).")
MaxNewTokensOpt = typer.Option(DEFAULT_MAX_NEW_TOKENS, "--max-new-tokens", min=1,
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
LoopRepeatsOpt = typer.Option(_RULE.min_repeats, "--loop-repeats", min=2, rich_help_panel=_LOOPS,
                              help="Fewest back-to-back repeats of one unit that can count as a loop.")
LoopTokensOpt = typer.Option(_RULE.max_tokens, "--loop-tokens", min=1, rich_help_panel=_LOOPS,
                             help="A run of one unit repeated back to back that reaches this many tokens is a loop.")
LoopCharsOpt = typer.Option(_RULE.max_chars, "--loop-chars", min=1, rich_help_panel=_LOOPS,
                            help="... or longer than this many characters.")
LoopLinesOpt = typer.Option(_RULE.max_lines, "--loop-lines", min=1, rich_help_panel=_LOOPS,
                            help="... or longer than this many lines.")
LoopLineCharsOpt = typer.Option(_RULE.max_line_chars, "--loop-line-chars", min=1, rich_help_panel=_LOOPS,
                                help=f"A short unit (up to {_RULE.short_unit_chars} characters) repeating within "
                                     "one line over more than this many characters is a loop.")
BatchOpt = typer.Option(None, "--batch-size", min=1, help="Most pages per GPU batch (default: from the GPU memory free "
                        "after loading; 8 on the CPU).")
BatchTilesOpt = typer.Option(None, "--batch-tiles", min=1, help="Most tiles per GPU batch, bounds GPU memory (default: from "
                             "free GPU memory; 64 on the CPU).")
AwqKernelOpt = typer.Option("auto", "--awq-kernel", envvar="INTERNVL_AWQ_KERNEL",
                            help="AWQ kernel: auto (see `internvl doctor`), marlin, machete, exllamav2, gemm, "
                                 "triton, torch, cpu-int4.")
OutputOpt = typer.Option(None, "--output", "-o", help="Write one file per document into this directory "
                         "(with a ledger, so reruns skip finished documents) instead of stdout; or, for a single "
                         "document, into this file when it ends in .md, .txt, .jsonl, .json or .csv.")
IncludeOpt = typer.Option([], "--include", help="Only documents whose relative path or name matches this glob "
                          "(repeatable).")
ExcludeOpt = typer.Option([], "--exclude", help="Skip documents matching this glob (repeatable).")
ForceOpt = typer.Option(False, "--force", help="With -o: redo documents the ledger says are done.")
RetryOpt = typer.Option(False, "--retry-failed", help="With -o: redo only documents that failed before.")
WaitOpt = typer.Option(False, "--wait", help="With -o: wait for another run on the same directory instead of "
                       "exiting with code 9.")
PathsArg = typer.Argument(..., metavar="PATH",
                          help="PDF or image files, directories, glob patterns, or - to read paths from stdin.")
EngineOpt = typer.Option("hf", "--engine", envvar="INTERNVL_ENGINE",
                         help="hf (transformers, default), vllm (in-process vLLM: continuous batching; "
                              'pip install "internvl-cli[vllm]") or server (OpenAI-compatible servers, --server).')
ServerOpt = typer.Option([], "--server", help="With --engine server: an OpenAI-compatible base URL, e.g. "
                         "http://127.0.0.1:8000/v1 (repeatable: the servers share the work).")
ConcurrencyOpt = typer.Option(32, "--concurrency", min=1, help="With --engine server: requests in flight over all "
                              "servers (about 32 per GPU behind them).")
TimeoutOpt = typer.Option(600.0, "--request-timeout", min=1.0, help="With --engine server: seconds one request may take "
                          "before it is retried.")
TensorParallelOpt = typer.Option(1, "--tensor-parallel-size", min=1, help="With --engine vllm: GPUs one model is split "
                                 "over (models too large for one GPU).")
DataParallelOpt = typer.Option(1, "--data-parallel-size", min=1, help="With --engine vllm: replicas; vLLM runs these only "
                               "as a server, see README (several GPUs on one machine).")


def _engine_settings(engine: str, servers: list[str], concurrency: int, request_timeout: float,
                     tensor_parallel: int, data_parallel: int, max_images: int = 1):
    from .engine import EngineSettings

    return EngineSettings(kind=engine, servers=list(servers), concurrency=concurrency,
                          request_timeout=request_timeout, tensor_parallel_size=tensor_parallel,
                          data_parallel_size=data_parallel, max_images=max_images)


def _open_engine(model: str, device: str, dtype: str, settings=None, awq_kernel: str | None = None):
    """Resolves the checkpoint and reads its configs; the weights load only once there is work to do
    (`awq_kernel` None: they never will, as for `inspect`)."""
    from .engine import load_engine

    return load_engine(model, device=device, dtype=dtype, settings=settings, awq_kernel=awq_kernel)


def _note(message: str) -> None:
    if not _state["quiet"]:
        _err(f"internvl: {message}")


def _ocr_format_for(output: Optional[Path]) -> Optional[str]:
    """`-o page.txt` asks for text as surely as `--format text` does."""
    from .runs.outputs import names_a_file

    if output is None or not names_a_file(output):
        return None
    return {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".jsonl": "jsonl"}.get(output.suffix.lower())


def _count_docs(paths: list[str]) -> int:
    """How many documents a command will see before any model is loaded (stdin lists count as many)."""
    return 2 if paths == ["-"] or len(paths) != 1 or Path(paths[0]).is_dir() else 1


def run_batch(task, engine, batch: BatchSettings, fmt: str, suffix: str) -> None:
    """Runs a document command through the core and turns its report into the exit code."""
    loading: dict[str, float] = {}

    def before_load(engine) -> None:
        loading["start"] = time.perf_counter()
        _note(f"loading model {engine.model_id} ...")

    def loaded(engine) -> None:
        seconds = time.perf_counter() - loading.get("start", time.perf_counter())
        _note(f"model ready in {seconds:.1f} s: " + ", ".join(f"{k}={v}" for k, v in engine.describe().items()))

    hooks = Hooks(error=report_error, note=_note, progress=lambda total: make_progress(total, _state["quiet"]),
                  before_load=before_load, loaded=loaded)
    report = run_documents(task, engine, batch, fmt, suffix, hooks)
    counts = (f"{report.done} done, {len(report.failures)} failed, {report.skipped} skipped, "
              f"{report.pages} pages in {report.seconds:.1f} s")
    if report.interrupted is not None:
        resume = ("rerun the same command to resume: finished documents are kept" if batch.output_is_directory
                  else "the output is incomplete; rerun for the rest (with -o DIR a rerun resumes)")
        _note(f"interrupted after {counts}; {resume}")
    else:
        _note(counts)
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
    batch_size: Optional[int] = BatchOpt, batch_tiles: Optional[int] = BatchTilesOpt,
    awq_kernel: str = AwqKernelOpt,
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
        fmt = fmt or _ocr_format_for(output) or ("markdown" if output or _count_docs(paths) == 1 else "jsonl")
        _check_choice("--format", fmt, FORMATS)
        _check_common(pages, max_new_tokens, frames)
        prompts = prompt_set("ocr", prompt, anchored_prompt)  # a bad prompt fails before the model loads
        loop = _loop_rule(loop_stop, loop_repeats, loop_tokens, loop_chars, loop_lines, loop_line_chars)
        system_text = resolve_system(system, no_system)
        engine = _open_engine(model, device, dtype, _engine_settings(
            engine_name, servers, concurrency, request_timeout, tensor_parallel, data_parallel), awq_kernel)
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
    batch_size: Optional[int] = BatchOpt, batch_tiles: Optional[int] = BatchTilesOpt,
    awq_kernel: str = AwqKernelOpt,
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
            engine_name, servers, concurrency, request_timeout, tensor_parallel, data_parallel), awq_kernel)
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
    batch_size: Optional[int] = BatchOpt, batch_tiles: Optional[int] = BatchTilesOpt,
    awq_kernel: str = AwqKernelOpt,
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
    "unenforced", "model", "seconds", "source"} (README says what each field means). Decoding is held by
    a grammar built from the schema; what a grammar cannot hold (uniqueItems, contains, not,
    if/then/else, dependent*, propertyNames, unevaluated* beside applicators, oneOf exclusivity, some
    regex features) is listed in "unenforced", and every answer is validated against the full schema,
    formats included. An answer that fails is retried (sampled) up to twice; a record that still fails
    has "valid": false and its errors, and exits with code 11. Without --max-new-tokens the budget grows
    to fit the schema.

    \b
    Examples:
      internvl extract invoices/ --schema invoice > invoices.jsonl
      internvl extract scan.pdf --schema my-schema.json --data-only | jq .total
      internvl extract receipt.jpg --schema 'shop, total float, date date'
      internvl schemas show invoice      # print a shipped schema to start your own
    """
    from .engine.base import Sampling
    from .tasks.prompts import prompt_set, resolve_system
    from .schema.loading import load_schema
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
        # a budget the user chose (flag, environment or config file) is kept; the default grows to fit the schema
        explicit = ctx.get_parameter_source("max_new_tokens").name in ("COMMANDLINE", "ENVIRONMENT", "DEFAULT_MAP")
        budget, notes = answer_budget(loaded, max_new_tokens, explicit)
        engine = _open_engine(model, device, dtype, _engine_settings(
            engine_name, servers, concurrency, request_timeout, tensor_parallel, data_parallel,
            max_images=window_pages), awq_kernel)
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

    \b
    Examples:
      internvl prompts
      internvl prompts ocr > my-ocr.md     # edit it, then: internvl ocr scan.pdf --prompt my-ocr.md
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


schemas_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)  # help: the callback's docstring
app.add_typer(schemas_app, name="schemas")


@schemas_app.callback()
def schemas(ctx: typer.Context) -> None:
    """The JSON Schemas shipped with internvl-cli: use their names with `extract --schema`; `internvl schemas
    show NAME` prints one.

    \b
    Examples:
      internvl schemas
      internvl schemas show invoice
      internvl extract scan.pdf --schema invoice
    """
    from .schema.loading import list_schemas

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
    from .schema.loading import load_schema, show_schema

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
    """Summarise an output directory: documents done, failed (with reasons), interrupted and pending.

    Interrupted documents (the run was stopped or killed before they finished) are listed apart from
    failures: rerunning the same command finishes them.

    \b
    Examples:
      internvl status out/
      internvl status out/ --json | jq .failed
    """
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
            if failure["interrupted"]:
                typer.echo(f"interrupted: {failure['source']} (rerun the same command to finish it)")
            else:
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

    \b
    Examples:
      internvl convert ~/models/InternVL3-2B-AWQ ~/models/InternVL3-2B-AWQ-native
      internvl ocr scan.pdf --model ~/models/InternVL3-2B-AWQ-native
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
    """AWQ-quantize the language model of a native checkpoint (needs a CUDA GPU; vision stays 16-bit).

    \b
    Examples:
      internvl quantize ~/models/InternVL3-2B-hf ~/models/InternVL3-2B-awq -c my-scans/
      internvl ocr scan.pdf --model ~/models/InternVL3-2B-awq
    """
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
    language model's); read the model card before commercial use. A table on a terminal, JSON lines in a
    pipe or with --json.

    \b
    Examples:
      internvl models
      internvl models --json | jq -r 'select(.cached) | .name'
      internvl download internvl3-2b-awq
    """
    from .models.presets import PRESETS, is_cached

    with _exit_on_error():
        rows = [{**preset.__dict__, "cached": is_cached(preset), "default": name == DEFAULT_MODEL}
                for name, preset in PRESETS.items()]
        if as_json or not sys.stdout.isatty():
            for row in rows:
                typer.echo(json.dumps(row))
            return
        _print_models(rows)


def _print_models(rows: list[dict]) -> None:
    """The table keeps every repository id whole (the column users copy); the licence column wraps instead."""
    from rich.console import Console
    from rich.table import Table

    table = Table("preset", "repository", "quant", "GPU GB", "tiles", "engines", "cached", "licence", box=None,
                  pad_edge=False)
    for column in table.columns[:7]:
        column.no_wrap = True
    for column, key in ((table.columns[0], "name"), (table.columns[1], "repo_id")):
        column.min_width = max(len(row[key]) + (10 if key == "name" and row["default"] else 0) for row in rows)
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "")
        table.add_row(name, row["repo_id"], row["quantization"], f"{row['gpu_memory_gb']:.1f}",
                      str(row["max_tiles"]), ",".join(row["engines"]), "yes" if row["cached"] else "no",
                      row["licence"])
    Console().print(table)


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    warm: bool = typer.Option(False, "--warm", help="Build the AWQ kernel a run would use now (minutes, once), so "
                              "that the first real run, a cron job say, does not wait for it."),
    device: str = DeviceOpt, awq_kernel: str = AwqKernelOpt,
) -> None:
    """Check this machine and say what a run would do: torch and its CUDA build, the NVIDIA driver, GPUs, the
    device, dtype, attention and AWQ kernel a run would pick (and why), compilers, cached kernels, presets that fit,
    the engines installed, and where the config file (`internvl config`) lives. JSON keys are snake_case.

    \b
    Examples:
      internvl doctor
      internvl doctor --warm          # compile the AWQ kernel ahead of the first run
      internvl doctor --awq-kernel triton
      internvl doctor --json | jq .gpus
    """
    from .diagnostics import diagnose, warm as warm_kernel
    from .userconfig import config_path

    with _exit_on_error():
        report = diagnose(device=device, awq_kernel=awq_kernel)
        path = config_path()
        report["config file"] = f"{path}" + ("" if path.exists() else " (not created yet)")
        if warm:
            report["warm"] = warm_kernel(device=device, awq_kernel=awq_kernel)
        if as_json:
            typer.echo(json.dumps({_json_key(key): value for key, value in report.items()}, indent=2))
            return
        for key, value in report.items():
            if isinstance(value, list):
                value = ", ".join(value) or "none"
            typer.echo(f"{key:>16}: {value}")


def _json_key(label: str) -> str:
    """'awq kernels' -> 'awq_kernels': report labels read well on a terminal, keys must be identifiers."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


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
    count (grid plus thumbnail), the image tokens it costs, and whether a PDF text layer exists. Folders,
    globs and stdin lists are read as `ocr` reads them.
    With --prompt: the full prompt each page (or extract window) would be sent with, image tokens
    shown as <IMG_CONTEXT>*N, and its token count and answer budget.

    \b
    Examples:
      internvl inspect scan.pdf --max-tiles 6
      internvl inspect scans/ --json | jq -s 'map(.image_tokens) | add'
      internvl inspect scan.pdf --prompt ocr --model internvl3-2b-awq
      internvl inspect bill.pdf --prompt my-extract.md --task extract --schema invoice --no-system
    """
    from .documents.inspection import inspect_pages
    from .documents.tiling import TilingConfig
    from .runs.batch import find_documents

    with _exit_on_error():
        if prompt is not None:
            return _inspect_prompts(paths, prompt, anchored_prompt, task_name, schema, system, no_system,
                                    text_layer, model or DEFAULT_MODEL, pages, password, frames, min_tiles,
                                    max_tiles, max_new_tokens, as_json)
        _check_common(pages, 1, frames)
        base = _open_engine(model, "cpu", "auto").tiling if model else TilingConfig()
        tiling = base.with_limits(min_tiles, max_tiles)
        found = find_documents(paths, hooks=Hooks(error=report_error, note=_note))
        failed: list[InternVLError] = list(found.errors)
        rows = []
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
    from .runs.batch import find_documents
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
        from .schema.loading import load_schema

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
    found = find_documents(paths, hooks=Hooks(error=report_error, note=_note))
    failed: list[InternVLError] = list(found.errors)
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


@app.command()
def download(
    model: str = typer.Argument(..., metavar="MODEL", autocompletion=_preset_names,
                                help="A preset (see `internvl models`), a hub id, or a local checkpoint directory."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit of the hub repository."),
) -> None:
    """Fetch a model into the local cache and convert it ahead of time, with progress.

    Later runs then neither download nor convert (a cron job at 3 a.m. must not wait for, or fail on, the
    network). The local native checkpoint directory is printed on stdout; a model already fetched and
    converted is only looked up. With HF_HUB_OFFLINE=1 only the cache is used.

    \b
    Examples:
      internvl download internvl3-2b-awq
      internvl download OpenGVLab/InternVL3-8B-hf --revision main
      HF_HUB_OFFLINE=1 internvl ocr scan.pdf -m internvl3-2b-awq    # later, offline
    """
    from .models.checkpoints import download_checkpoint

    with _exit_on_error():
        _note(f"fetching {model} (files already in the cache are not fetched again) ...")
        path, model_id = download_checkpoint(model, revision, progress=not _state["quiet"], note=_note)
        _note(f"ready: {model_id} -> {path}")
        typer.echo(str(path))


@app.command("help")
def help_topic(topic: Optional[str] = typer.Argument(None, metavar="[TOPIC]",
                                                     help="exit-codes, config, or the name of a command.")) -> None:
    """Explain a topic: `exit-codes` (what scripts can rely on), `config` (keys and precedence), or a command.

    \b
    Examples:
      internvl help exit-codes
      internvl help config
      internvl help ocr
    """
    from .shell import Context, root_context

    root = root_context()
    with _exit_on_error():
        if topic in (None, ""):
            typer.echo(root.command.get_help(root))
        elif topic in ("exit-codes", "exit-code", "codes"):
            typer.echo(exit_code_table())
        elif topic == "config":
            typer.echo(config_help(root.command))
        elif topic in root.command.commands:
            command = root.command.commands[topic]
            typer.echo(command.get_help(Context(command, info_name=topic, parent=root)))
        else:
            raise UsageError(f"no help topic '{topic}'", hint="try exit-codes, config, or a command name")


def exit_code_table() -> str:
    lines = ["Exit codes (the same table as README's):", ""]
    lines += [f"  {int(code):>3}  {code.name:<16} {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items()]
    lines += ["", "With several documents, a failure never stops the others; when every document failed for the",
              "same reason the exit code is that reason's, when some succeeded it is 10."]
    return "\n".join(lines)


def config_help(group) -> str:
    from .shell import known_keys
    from .userconfig import config_path

    keys = known_keys(group)
    plain = sorted(key for key in keys if "." not in key)
    return "\n".join([
        f"Config file: {config_path()} (INTERNVL_CLI_CONFIG to use another one).",
        "",
        "It holds defaults for command options: a flag on the command line wins, then an environment",
        "variable (INTERNVL_MODEL, ...), then the config file, then the built-in default. A key is an",
        "option's name without the dashes and applies to every command that has the option; COMMAND.key",
        "applies to one command and wins over the plain key.",
        "",
        "  internvl config set model internvl3-2b-awq",
        "  internvl config set max-tiles 6",
        "  internvl config set ocr.format text",
        "  internvl config list",
        "",
        "Keys: " + ", ".join(plain),
    ])


config_app = typer.Typer(no_args_is_help=True, help="""Keep option defaults in a config file: set, get, unset, list.

    A key is an option name without dashes (model, max-tiles, format, ...) and applies to every command with
    that option; COMMAND.key (ocr.format) applies to one command. Flags win over environment variables,
    which win over the config file. `internvl help config` lists every key.

    \b
    Examples:
      internvl config set model internvl3-2b-awq
      internvl config set ocr.format text
      internvl config list
      internvl config unset model
    """)
app.add_typer(config_app, name="config")


def _root_group():
    from .shell import root_context

    return root_context().command


def _shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@config_app.command("set")
def config_set(key: str = typer.Argument(..., help="An option name (max-tiles) or COMMAND.option (ocr.format)."),
               value: str = typer.Argument(..., help="The default, as you would type it after the option.")) -> None:
    """Set a default: `internvl config set KEY VALUE` (checked as the option would check it).

    \b
    Examples:
      internvl config set model internvl3-2b-awq
      internvl config set max-tiles 6
    """
    from .shell import check_config_value
    from .userconfig import set_value

    with _exit_on_error():
        checked = check_config_value(_root_group(), key, value)
        path = set_value(key, checked)
        _note(f"{key} = {_shown(checked)} (in {path})")


@config_app.command("get")
def config_get(key: str = typer.Argument(..., help="A key set with `internvl config set`.")) -> None:
    """Print a key's value (nothing, with a note on stderr, when it is not set).

    \b
    Examples:
      internvl config get model
    """
    from .userconfig import load_config

    with _exit_on_error():
        values = load_config()
        if key in values:
            typer.echo(_shown(values[key]))
        else:
            _note(f"{key} is not set")


@config_app.command("unset")
def config_unset(key: str = typer.Argument(..., help="A key set with `internvl config set`.")) -> None:
    """Remove a key: the option's built-in default applies again.

    \b
    Examples:
      internvl config unset max-tiles
    """
    from .userconfig import unset_value

    with _exit_on_error():
        if not unset_value(key):
            _note(f"{key} was not set")


@config_app.command("keys")
def config_keys() -> None:
    """Print every key a config file may hold and the commands it applies to.

    \b
    Examples:
      internvl config keys
      internvl config keys | grep tiles
    """
    from .shell import known_keys

    with _exit_on_error():
        for key, commands in sorted(known_keys(_root_group()).items()):
            if "." not in key:
                typer.echo(f"{key}\t{', '.join(commands)}")


@config_app.command("list")
def config_list(as_json: bool = typer.Option(False, "--json", help="Print the whole file as JSON.")) -> None:
    """Print every key that is set, `key = value`, one per line (the file's path goes to stderr).

    \b
    Examples:
      internvl config list
      internvl config list --json
    """
    from .userconfig import config_path, load_config

    with _exit_on_error():
        values = load_config()
        _note(f"config file: {config_path()}" + ("" if values else " (nothing set)"))
        if as_json:
            typer.echo(json.dumps(values, indent=2, sort_keys=True))
            return
        for key in sorted(values):
            typer.echo(f"{key} = {_shown(values[key])}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as stop:
        # Outside our commands (`internvl --help | head`) Click turns EPIPE into exit 1; same rule as inside.
        cause = stop.__context__
        if stop.code == 1 and isinstance(cause, OSError) and cause.errno == errno.EPIPE:
            try:
                _reader_left()
            except typer.Exit as closed:
                raise SystemExit(closed.exit_code) from None
        raise


if __name__ == "__main__":
    main()
