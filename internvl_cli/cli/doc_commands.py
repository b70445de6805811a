"""The document commands, ocr, chart and extract: option groups -> the assembly -> a run -> the exit code."""
from __future__ import annotations

import time
from typing import Optional

import typer

from ..errors import ExitCode
from ..runs.assembly import (
    DocumentCommand,
    DocumentOptions,
    EngineOptions,
    ExtractOptions,
    LoopOptions,
    PromptOptions,
    TileOptions,
    assemble,
)
from ..runs.batch import BatchSettings, Hooks
from .app import exit_on_error, note, report_error, state
from .groups import BATCH, DOCUMENTS, ENGINE, LOOPS, PROMPTS, TILES, with_groups
from .options import MaxNewTokensOpt
from .progress import make_progress

TEXT_LAYER_HELP = ("Give a PDF page's own text layer to the model as an anchor when it has a usable one (the output "
                   "says which path was taken).")


def cli_hooks() -> Hooks:
    """How a document command talks to its user: errors and notes on stderr, progress, model loading times."""
    loading: dict[str, float] = {}

    def before_load(engine) -> None:
        loading["start"] = time.perf_counter()
        note(f"loading model {engine.model_id} ...")

    def loaded(engine) -> None:
        seconds = time.perf_counter() - loading.get("start", time.perf_counter())
        note(f"model ready in {seconds:.1f} s: " + ", ".join(f"{k}={v}" for k, v in engine.describe().items()))

    return Hooks(error=report_error, note=note, progress=lambda total: make_progress(total, state["quiet"]),
                 before_load=before_load, loaded=loaded)


def run_command(command: DocumentCommand) -> None:
    """Assembles the command, runs it, and turns its report into the exit code."""
    hooks = cli_hooks()
    assembly = assemble(command, hooks=hooks)
    batch = assembly.batch
    report = assembly.run(hooks)
    counts = (f"{report.done} done, {len(report.failures)} failed, {report.skipped} skipped, "
              f"{report.pages} pages in {report.seconds:.1f} s")
    if report.fatal is not None:
        report_error(report.fatal)
    if report.interrupted is not None:
        resume = ("rerun the same command to resume: finished documents are kept" if batch.output_is_directory
                  else "the output is incomplete; rerun for the rest (with -o DIR a rerun resumes)")
        note(f"interrupted after {counts}; {resume}")
    else:
        note(counts)
    code = report.exit_code()
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


@with_groups(engine=ENGINE, documents=DOCUMENTS, tiles=TILES, batch=BATCH, prompts=PROMPTS, loop=LOOPS)
def ocr(
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="markdown, text (pages split by form feeds), "
                                      "jsonl (one record per page), pdf (the document with an invisible text layer "
                                      "at its lines; needs -o) or hocr. Default: markdown for one document or "
                                      "with -o, jsonl for several on stdout; -o x.pdf / x.hocr pick pdf / hocr."),
    lines: bool = typer.Option(False, "--lines", help="Give each page's lines with their boxes in page "
                               "coordinates (jsonl `lines`): each transcribed line is located by a grounding "
                               "question, or taken from a PDF's own text layer. Implied by --format pdf|hocr."),
    redo_ocr: bool = typer.Option(False, "--redo-ocr", help="With lines: a PDF page whose text is all invisible (an "
                                  "earlier OCR layer) is located anew, and in --format pdf its old layer is "
                                  "replaced by ours. Pages with visible text are always left as they are."),
    text_layer: bool = typer.Option(True, "--text-layer/--no-text-layer", help=TEXT_LAYER_HELP),
    max_new_tokens: int = MaxNewTokensOpt,
    *, engine: EngineOptions, documents: DocumentOptions, tiles: TileOptions, batch: BatchSettings,
    prompts: PromptOptions, loop: LoopOptions,
) -> None:
    """Transcribe PDFs and images to markdown or text, page by page.

    \b
    Examples:
      internvl ocr scan.pdf > scan.md
      internvl ocr photos/*.jpg --format jsonl | jq -r .text
      internvl ocr report.pdf --pages 1-3 --max-tiles 6
      internvl ocr inbox/ -o out/        # cron: reruns skip what is done
    """
    with exit_on_error():
        run_command(DocumentCommand("ocr", batch, engine, documents, tiles, prompts, loop, fmt=fmt,
                                    text_layer=text_layer, max_new_tokens=max_new_tokens, lines=lines,
                                    redo_ocr=redo_ocr))


@with_groups(engine=ENGINE, documents=DOCUMENTS, tiles=TILES, batch=BATCH,
             prompts=PROMPTS.without("anchored_prompt"), loop=LOOPS)
def chart(
    fmt: str = typer.Option("csv", "--format", "-f", help="csv, markdown, or json (one object per chart with "
                            "columns and rows)."),
    max_new_tokens: int = MaxNewTokensOpt,
    *, engine: EngineOptions, documents: DocumentOptions, tiles: TileOptions, batch: BatchSettings,
    prompts: PromptOptions, loop: LoopOptions,
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
    with exit_on_error():
        run_command(DocumentCommand("chart", batch, engine, documents, tiles, prompts, loop, fmt=fmt,
                                    max_new_tokens=max_new_tokens))


@with_groups(engine=ENGINE, documents=DOCUMENTS, tiles=TILES.without("min_tiles"), batch=BATCH, prompts=PROMPTS,
             loop=LOOPS)
def extract(
    ctx: typer.Context,
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
    max_new_tokens: int = MaxNewTokensOpt,
    *, engine: EngineOptions, documents: DocumentOptions, tiles: TileOptions, batch: BatchSettings,
    prompts: PromptOptions, loop: LoopOptions,
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
    with exit_on_error():
        # values the user chose (flag, environment or config file) are kept; defaults are sized to the schema
        # (the answer budget) and to the model's context (the window)
        given = {name: ctx.get_parameter_source(name).name in ("COMMANDLINE", "ENVIRONMENT", "DEFAULT_MAP")
                 for name in ("max_new_tokens", "window_pages", "window_tiles")}
        window = (window_pages, window_tiles) if given["window_pages"] or given["window_tiles"] else (None, None)
        choices = ExtractOptions(schema=schema, data_only=data_only, votes=votes, window_pages=window[0],
                                 window_tiles=window[1])
        run_command(DocumentCommand("extract", batch, engine, documents, tiles, prompts, loop, choices,
                                    text_layer=text_layer,
                                    max_new_tokens=max_new_tokens if given["max_new_tokens"] else None))
