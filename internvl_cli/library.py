"""The library facade: `load`, `ocr`, `chart` and `extract` for Python callers, each a paths -> typed records call
through the same assembly as the CLI (runs/assembly.py).

Options are the CLI's, by their parameter names (`pages="1-3"`, `max_tiles=6`, `votes=3`, `window_pages=2`,
`device="cpu"`, ...). Usage mistakes raise `UsageError` (and other `InternVLError`s when the model cannot be
found or loaded); a document that fails does not raise: its result says `failed` and why, as the CLI's exit
code does. Nothing is printed: notes (budgets sized to fit, schemas not fully enforced) go to the
`internvl_cli` logger.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InternVLError, UsageError

log = logging.getLogger("internvl_cli")


@dataclass(frozen=True)
class Page:
    """One page of `ocr` or `chart`: its text (chart: the table as CSV rows), flags and the full JSONL record."""

    page: int
    text: str
    flags: list[str]
    error: str | None
    record: dict  # as `--format jsonl` writes it (chart: `--format json` plus the page's tiling)

    @property
    def columns(self) -> list[str]:
        """chart: the table's header row."""
        return self.record.get("columns", [])

    @property
    def rows(self) -> list[list[Any]]:
        """chart: the table's body rows (cells as text, numbers normalised as `--format json` writes them)."""
        return self.record.get("rows", [])


@dataclass(frozen=True)
class Document:
    """What `ocr` or `chart` made of one document: its pages, or why it failed."""

    path: Path
    pages: list[Page]
    failed: bool = False
    error: str | None = None

    @property
    def text(self) -> str:
        """The document's pages as markdown, one blank line apart (pages that failed are left out)."""
        return "\n\n".join(page.text for page in self.pages if page.error is None)

    @property
    def flags(self) -> list[str]:
        return sorted({flag for page in self.pages for flag in page.flags})


@dataclass(frozen=True)
class Extraction:
    """What `extract` made of one document: data valid under the schema (or the errors why not)."""

    path: Path
    data: Any
    valid: bool
    errors: list[str]
    flags: list[str]
    pages: int
    record: dict = field(repr=False)  # as `internvl extract` writes it
    failed: bool = False
    error: str | None = None


@dataclass
class Model:
    """A model resolved once for several calls: pass it as `model=` to `ocr`, `chart` and `extract`. The weights
    load on the first call that has work for them, then stay loaded."""

    engine: Any  # engine.base.Engine
    options: Any  # runs.assembly.EngineOptions

    @property
    def name(self) -> str:
        return self.engine.model_id


def load(model: str | None = None, engine: str = "hf", **options: Any) -> Model:
    """Resolves `model` (a preset such as "internvl3-2b-awq", a hub id or a local checkpoint; None: the default
    preset) for `engine` ("hf", "vllm" or "server" with `servers=[URL]`) and reads its configs. Options:
    device, dtype, awq_kernel, servers, concurrency, request_timeout, tensor_parallel, data_parallel."""
    from .runs.assembly import DEFAULT_WINDOW_PAGES, EngineOptions, open_engine

    settings = _engine_options(model, engine, options)
    _refuse_unknown(options, "load")
    return Model(open_engine(settings, max_images=DEFAULT_WINDOW_PAGES), settings)


def ocr(paths: str | Path | list[str | Path], model: str | Model | None = None, output: str | Path | None = None,
        **options: Any) -> list[Document]:
    """Transcribes documents (PDFs, images, folders, glob patterns) page by page. With `output` (a folder, as
    `-o DIR`, or one file), the outputs are written there too, and documents already done there are skipped."""
    return [_document(result) for result in _run("ocr", paths, model, output, options)]


def chart(paths: str | Path | list[str | Path], model: str | Model | None = None, output: str | Path | None = None,
          **options: Any) -> list[Document]:
    """Turns charts into tables: each page's `columns` and `rows`."""
    return [_document(result) for result in _run("chart", paths, model, output, options)]


def extract(paths: str | Path | list[str | Path], schema: Any, model: str | Model | None = None,
            output: str | Path | None = None, **options: Any) -> list[Extraction]:
    """One schema-valid record per document. `schema`: a JSON Schema (dict, file, shipped name such as "invoice",
    inline JSON) or a concise field list ("vendor, total float, date date")."""
    return [_extraction(result) for result in _run("extract", paths, model, output, dict(options, schema=schema))]


# ---------------------------------------------------------------------- one call, through the assembly

@dataclass
class _Finished:
    path: Path
    records: list[dict]
    error: str | None


def _run(command: str, paths, model, output, options: dict) -> list[_Finished]:
    from .runs.assembly import (DocumentCommand, DocumentOptions, ExtractOptions, LoopOptions, PromptOptions,
                                TileOptions, assemble)
    from .runs.batch import BatchSettings, Hooks
    from .schema.loading import check_schema

    given = dict(options)
    handle = model if isinstance(model, Model) else None
    if handle is not None:
        _refuse_engine_options(given, command)
    engine_options = handle.options if handle else _engine_options(model, given.pop("engine", "hf"), given)
    listed = [paths] if isinstance(paths, (str, Path)) else list(paths)
    batch = BatchSettings(paths=[str(p) for p in listed], output=output,
                          **_pick(BatchSettings, given, skip=("paths", "output")))
    extract_options = _pick(ExtractOptions, given)
    if isinstance(extract_options.get("schema"), dict):
        extract_options["schema"] = check_schema(extract_options["schema"])
    settings = DocumentCommand(
        command, batch, engine_options, DocumentOptions(**_pick(DocumentOptions, given)),
        TileOptions(**_pick(TileOptions, given)), PromptOptions(**_pick(PromptOptions, given)),
        LoopOptions(**_pick(LoopOptions, given)), ExtractOptions(**extract_options),
        fmt=given.pop("format", None), text_layer=given.pop("text_layer", True),
        max_new_tokens=given.pop("max_new_tokens", None))
    _refuse_unknown(given, command)
    finished: dict[Path, _Finished] = {}

    def keep(path: Path, result) -> None:
        finished[Path(path)] = _Finished(Path(path), result.records, result.error.message if result.error else None)

    hooks = Hooks(error=lambda error: None, note=log.info, result=keep)
    assembly = assemble(settings, engine=handle.engine if handle else None, hooks=hooks)
    report = assembly.run(hooks, stdout=False)
    for failure in report.failures:  # documents that never produced records: unreadable, or no page succeeded
        if failure.path not in finished:
            finished[failure.path] = _Finished(failure.path, [], failure.error.message)
        elif finished[failure.path].error is None:
            finished[failure.path].error = failure.error.message
    return list(finished.values())


def _engine_options(model: str | None, engine: str, given: dict):
    from .models.presets import DEFAULT_MODEL
    from .runs.assembly import EngineOptions

    return EngineOptions(model=model or DEFAULT_MODEL, engine_name=engine,
                         **_pick(EngineOptions, given, skip=("model", "engine_name")))


def _pick(options: type, given: dict, skip: tuple[str, ...] = ()) -> dict:
    """The entries of `given` that name fields of the dataclass `options`, taken out of `given`."""
    return {f.name: given.pop(f.name) for f in fields(options) if f.name in given and f.name not in skip}


def _refuse_engine_options(given: dict, command: str) -> None:
    """A loaded Model already has its engine: its options belong to the load() that made it."""
    from .runs.assembly import EngineOptions

    engine_names = {f.name for f in fields(EngineOptions)} | {"engine"}
    misplaced = sorted(engine_names & set(given))
    if misplaced:
        raise UsageError(f"{command}(): {', '.join(misplaced)} set{'s' if len(misplaced) == 1 else ''} up an "
                         f"engine, and the Model given has one: pass {'it' if len(misplaced) == 1 else 'them'} "
                         "to internvl_cli.load() instead")


def _refuse_unknown(left: dict, command: str) -> None:
    if left:
        raise UsageError(f"{command}() takes no option {', '.join(sorted(left))}")


def _document(done: _Finished) -> Document:
    pages = [Page(page=r["page"], text=r.get("text", _table_text(r)), flags=list(r.get("flags", [])),
                  error=r.get("error"), record=r) for r in done.records]
    return Document(done.path, pages, failed=done.error is not None, error=done.error)


def _table_text(record: dict) -> str:
    rows = [record.get("columns", []), *record.get("rows", [])]
    return "\n".join(",".join(str(cell) for cell in row) for row in rows if row)


def _extraction(done: _Finished) -> Extraction:
    record = done.records[0] if done.records else {}
    return Extraction(done.path, data=record.get("data"), valid=bool(record.get("valid")),
                      errors=list(record.get("errors", [done.error] if done.error else [])),
                      flags=list(record.get("flags", [])), pages=record.get("pages", 0), record=record,
                      failed=done.error is not None, error=done.error)


__all__ = ["Document", "Extraction", "InternVLError", "Model", "Page", "UsageError", "chart", "extract", "load",
           "ocr"]
