"""`internvl inspect`: each page's tiling and cost, or the exact prompt it would be sent, without loading weights."""
from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from ..errors import ExitCode, InternVLError, UsageError
from ..models.presets import DEFAULT_MODEL
from ..runs.batch import Hooks
from .app import err, exit_on_error, note, report_error
from .options import (
    PROMPTS_PANEL,
    AnchoredPromptOpt,
    FramesOpt,
    MaxNewTokensOpt,
    MaxTilesOpt,
    MinTilesOpt,
    NoSystemOpt,
    PagesOpt,
    PasswordOpt,
    PathsArg,
    SystemOpt,
)


def inspect(
    paths: list[str] = PathsArg,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per page on stdout instead of a table."),
    pages: Optional[str] = PagesOpt, password: Optional[str] = PasswordOpt, frames: Optional[str] = FramesOpt,
    min_tiles: Optional[int] = MinTilesOpt, max_tiles: Optional[int] = MaxTilesOpt,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Read the tiling settings of this checkpoint "
                                       "(its small config files only; no weights are loaded). Default: "
                                       "InternVL's standard 448px tiles, 1..12; with --prompt, the default model."),
    prompt: Optional[str] = typer.Option(None, "--prompt", rich_help_panel=PROMPTS_PANEL,
                                         help="Show the exact prompt each page would be sent with: a command's "
                                              "own prompts (ocr, chart, extract), a shipped prompt's name or a "
                                              "file. Loads the model's tokenizer, never its weights."),
    anchored_prompt: Optional[str] = AnchoredPromptOpt,
    task_name: Optional[str] = typer.Option(None, "--task", rich_help_panel=PROMPTS_PANEL,
                                            help="The command a --prompt file is for: ocr (default), chart or "
                                                 "extract."),
    schema: Optional[str] = typer.Option(None, "--schema", "-s", rich_help_panel=PROMPTS_PANEL,
                                         help="The JSON Schema, for extract prompts."),
    system: Optional[str] = SystemOpt, no_system: bool = NoSystemOpt,
    text_layer: bool = typer.Option(True, "--text-layer/--no-text-layer", rich_help_panel=PROMPTS_PANEL,
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
    from ..documents.inspection import inspect_pages
    from ..runs.assembly import DocumentOptions, TileOptions, check_pages, tiling_for
    from ..runs.batch import find_documents

    with exit_on_error():
        if prompt is not None:
            return _inspect_prompts(paths, prompt, anchored_prompt, task_name, schema, system, no_system,
                                    text_layer, model or DEFAULT_MODEL, pages, password, frames, min_tiles,
                                    max_tiles, max_new_tokens, as_json)
        check_pages(DocumentOptions(pages, password, frames))
        tiling = tiling_for(model, TileOptions(min_tiles, max_tiles))
        found = find_documents(paths, hooks=Hooks(error=report_error, note=note))
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
    """`inspect --prompt`: the command's task, assembled as the command would, and each unit's prompt."""
    from ..runs.assembly import (DocumentCommand, DocumentOptions, EngineOptions, ExtractOptions, PromptOptions,
                                 TileOptions, assemble, check_choice)
    from ..runs.batch import BatchSettings
    from ..runs.preview import preview_prompts
    from ..tasks.prompts import SHIPPED

    shipped = SHIPPED.get(prompt)
    command = task_name or (shipped[0] if shipped else "ocr")
    check_choice("--task", command, ("ocr", "chart", "extract"))
    if shipped and task_name and shipped[0] != task_name:
        raise UsageError(f"--prompt {prompt} is a prompt of `{shipped[0]}`, not of `{task_name}`")
    assembly = assemble(DocumentCommand(
        command, BatchSettings(paths), EngineOptions(model=model), DocumentOptions(pages, password, frames),
        TileOptions(min_tiles, max_tiles), PromptOptions(prompt, anchored_prompt, system, no_system),
        extract=ExtractOptions(schema=schema), text_layer=text_layer, max_new_tokens=max_new_tokens),
        hooks=Hooks(error=report_error, note=note), preview=True)
    task, engine, found = assembly.task, assembly.engine, assembly.found
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
    err(f"internvl: {len(rows)} pages, {sum(r['tiles'] for r in rows)} tiles, {total} image tokens")
