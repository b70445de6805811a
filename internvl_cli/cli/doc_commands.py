"""The document commands, ocr, chart and extract: options -> core run -> exit code."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import ExitCode, UsageError
from ..runs.batch import BatchSettings, Hooks, run_documents
from .app import exit_on_error, note, report_error, state
from .options import (
    AnchoredPromptOpt,
    AwqKernelOpt,
    BatchOpt,
    BatchTilesOpt,
    ConcurrencyOpt,
    DataParallelOpt,
    DeviceOpt,
    DtypeOpt,
    EngineOpt,
    ExcludeOpt,
    ForceOpt,
    FramesOpt,
    IncludeOpt,
    LoopCharsOpt,
    LoopLineCharsOpt,
    LoopLinesOpt,
    LoopRepeatsOpt,
    LoopStopOpt,
    LoopTokensOpt,
    MaxNewTokensOpt,
    MaxTilesOpt,
    MinTilesOpt,
    ModelOpt,
    NoSystemOpt,
    OutputOpt,
    PagesOpt,
    PasswordOpt,
    PathsArg,
    PromptOpt,
    RetryOpt,
    ServerOpt,
    SystemOpt,
    TensorParallelOpt,
    TimeoutOpt,
    WaitOpt,
    check_choice,
    check_common,
    count_docs,
    engine_settings,
    loop_rule,
    open_engine,
    page_options,
)
from .progress import make_progress


def run_batch(task, engine, batch: BatchSettings, fmt: str, suffix: str) -> None:
    """Runs a document command through the core and turns its report into the exit code."""
    loading: dict[str, float] = {}

    def before_load(engine) -> None:
        loading["start"] = time.perf_counter()
        note(f"loading model {engine.model_id} ...")

    def loaded(engine) -> None:
        seconds = time.perf_counter() - loading.get("start", time.perf_counter())
        note(f"model ready in {seconds:.1f} s: " + ", ".join(f"{k}={v}" for k, v in engine.describe().items()))

    hooks = Hooks(error=report_error, note=note, progress=lambda total: make_progress(total, state["quiet"]),
                  before_load=before_load, loaded=loaded)
    report = run_documents(task, engine, batch, fmt, suffix, hooks)
    counts = (f"{report.done} done, {len(report.failures)} failed, {report.skipped} skipped, "
              f"{report.pages} pages in {report.seconds:.1f} s")
    if report.interrupted is not None:
        resume = ("rerun the same command to resume: finished documents are kept" if batch.output_is_directory
                  else "the output is incomplete; rerun for the rest (with -o DIR a rerun resumes)")
        note(f"interrupted after {counts}; {resume}")
    else:
        note(counts)
    code = report.exit_code()
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


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
    from ..runs.outputs import names_a_file
    from ..tasks.ocr import FORMAT_OF_SUFFIX, FORMATS, SUFFIXES, OcrTask
    from ..tasks.prompts import prompt_set, resolve_system

    with exit_on_error():
        batch = BatchSettings(paths, output, include, exclude, force, retry_failed, wait, batch_size, batch_tiles)
        named = FORMAT_OF_SUFFIX.get(output.suffix.lower()) if output and names_a_file(output) else None
        fmt = fmt or named or ("markdown" if output or count_docs(paths) == 1 else "jsonl")
        check_choice("--format", fmt, FORMATS)
        check_common(pages, max_new_tokens, frames)
        prompts = prompt_set("ocr", prompt, anchored_prompt)  # a bad prompt fails before the model loads
        loop = loop_rule(loop_stop, loop_repeats, loop_tokens, loop_chars, loop_lines, loop_line_chars)
        system_text = resolve_system(system, no_system)
        engine = open_engine(model, device, dtype, engine_settings(
            engine_name, servers, concurrency, request_timeout, tensor_parallel, data_parallel), awq_kernel)
        options = page_options(engine, pages, password, min_tiles, max_tiles, max_new_tokens, frames, loop,
                               system_text)
        run_batch(OcrTask(options, engine.model_id, use_text_layer=text_layer, prompts=prompts), engine, batch,
                  fmt, SUFFIXES[fmt])


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
    from ..tasks.chart import FORMATS, SUFFIXES, ChartTask
    from ..tasks.prompts import prompt_set, resolve_system

    with exit_on_error():
        batch = BatchSettings(paths, output, include, exclude, force, retry_failed, wait, batch_size, batch_tiles)
        check_choice("--format", fmt, FORMATS)
        check_common(pages, max_new_tokens, frames)
        prompts = prompt_set("chart", prompt)
        loop = loop_rule(loop_stop, loop_repeats, loop_tokens, loop_chars, loop_lines, loop_line_chars)
        system_text = resolve_system(system, no_system)
        engine = open_engine(model, device, dtype, engine_settings(
            engine_name, servers, concurrency, request_timeout, tensor_parallel, data_parallel), awq_kernel)
        options = page_options(engine, pages, password, min_tiles, max_tiles, max_new_tokens, frames, loop,
                               system_text)
        run_batch(ChartTask(options, engine.model_id, prompts=prompts), engine, batch, fmt, SUFFIXES[fmt])


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
    from ..engine.base import Sampling
    from ..schema.loading import load_schema
    from ..tasks.extract import SUFFIXES, ExtractOptions, ExtractTask, answer_budget
    from ..tasks.prompts import prompt_set, resolve_system

    with exit_on_error():
        batch = BatchSettings(paths, output, include, exclude, force, retry_failed, wait, batch_size, batch_tiles)
        check_common(pages, max_new_tokens, frames)
        if votes < 1 or window_pages < 1 or window_tiles < 1:
            raise UsageError("--votes, --window-pages and --window-tiles must be at least 1")
        loaded = load_schema(schema)  # a bad schema fails before any model is loaded
        prompts = prompt_set("extract", prompt, anchored_prompt)
        loop = loop_rule(loop_stop, loop_repeats, loop_tokens, loop_chars, loop_lines, loop_line_chars)
        system_text = resolve_system(system, no_system)
        # a budget the user chose (flag, environment or config file) is kept; the default grows to fit the schema
        explicit = ctx.get_parameter_source("max_new_tokens").name in ("COMMANDLINE", "ENVIRONMENT", "DEFAULT_MAP")
        budget, notes = answer_budget(loaded, max_new_tokens, explicit)
        engine = open_engine(model, device, dtype, engine_settings(
            engine_name, servers, concurrency, request_timeout, tensor_parallel, data_parallel,
            max_images=window_pages), awq_kernel)
        options = ExtractOptions(
            tiling=engine.tiling.with_limits(None, max_tiles),
            sampling=Sampling(max_new_tokens=budget, loop=loop),
            window_pages=window_pages, window_tiles=window_tiles, votes=votes, password=password, pages=pages,
            use_text_layer=text_layer, frames=frames, system=system_text)
        task = ExtractTask(options, loaded, engine.model_id, prompts=prompts)
        for message in notes + task.preflight(engine.context_length):
            note(message)
        fmt = "data" if data_only else "record"
        run_batch(task, engine, batch, fmt, SUFFIXES[fmt])
