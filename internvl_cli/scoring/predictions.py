"""Reading what a run wrote: an output folder's files (any format `-o` writes, or olmOCR's `{pdf}_pg{N}_repeat{k}.md`)
back into per-document predictions, with time and tokens from the records or the ledger.

An output file's document is its path below the folder minus the output suffix (`a/invoice.pdf.md` ->
`a/invoice.pdf`), as `-o DIR` names them. Its task is read from its content: Markdown with page comments, text
split by form feeds and JSONL records with `text` are OCR; CSV, pipe tables and JSONL records with `columns` are
charts; JSON records with `data` (or `--data-only` values) are extractions.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..documents.inputs import STATE_DIR_NAME, SUPPORTED_EXTENSIONS
from .charts import Table, parse_csv_tables, parse_markdown_tables

OUTPUT_SUFFIXES = (".md", ".txt", ".jsonl", ".json", ".csv")
_PAGE_COMMENT = re.compile(r"^<!-- file: .*? \| page: (\d+)/(\d+) \| source: [^|]*?(?: \| flags: ([^>]*?))? -->$",
                           re.MULTILINE)
_PAGE_FAILED = re.compile(r"^<!-- page failed: .*-->$", re.DOTALL)
BENCH_NAME = re.compile(r"^(?P<base>.+)_pg(?P<page>\d+)_repeat(?P<repeat>\d+)\.md$")


class UnreadableOutput(ValueError):
    """An output file that is not any format a run writes."""


@dataclass
class Prediction:
    """One document's output: its task and what it says, plus cost figures where the run recorded them."""

    file: str                      # the document's path below the input root (`a/invoice.pdf`)
    task: str                      # ocr | chart | extract
    output: Path
    pages: dict[int, list[str]] = field(default_factory=dict)  # ocr: page -> texts (several for repeats)
    page_count: int | None = None   # the document's page count, where the output says it
    lines: dict[int, list[dict]] = field(default_factory=dict)  # ocr: page -> `lines` of the record
    page_sizes: dict[int, list[float]] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)            # chart
    data: object = None                                          # extract
    valid: bool | None = None
    seconds: float | None = None
    recorded_pages: int | None = None  # pages the time and tokens are for
    image_tokens: int | None = None
    failed_pages: int = 0

    def text(self) -> str:
        return "\n".join(texts[0] for _, texts in sorted(self.pages.items()) if texts)


def document_key(relative: str) -> str:
    """A document's name without its extension (`a/invoice.pdf` -> `a/invoice`): what truth files are matched by."""
    stem, ext = os.path.splitext(relative)
    return stem if ext.lower() in SUPPORTED_EXTENSIONS else relative


def output_files(folder: Path, skip: tuple[Path, ...] = ()) -> list[tuple[str, Path]]:
    """(path below the folder, path) of every output file, sorted; hidden files and our state folder left out."""
    found, skipped = [], {os.path.realpath(s) for s in skip}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in skipped)
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(OUTPUT_SUFFIXES):
                path = Path(dirpath, name)
                found.append((PurePosixPath(path.relative_to(folder)).as_posix(), path))
    return found


def read_prediction(relative: str, path: Path) -> Prediction:
    """One output file as a prediction; UnreadableOutput when it is none of the formats."""
    suffix = Path(relative).suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableOutput(f"cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    prediction = Prediction(file=relative[: -len(suffix)], task="ocr", output=path)
    if suffix == ".md":
        _read_markdown(prediction, text)
    elif suffix == ".txt":
        _set_pages(prediction, text.split("\f"))
    elif suffix == ".csv":
        prediction.task, prediction.tables = "chart", parse_csv_tables(text)
    else:
        _read_records(prediction, text, suffix)
    return prediction


def _set_pages(prediction: Prediction, texts: list[str]) -> None:
    if len(texts) > 1 and not texts[-1].strip():
        texts = texts[:-1]  # `--format text` ends its last page with a newline, not a form feed
    prediction.pages = {number: [text] for number, text in enumerate(texts, start=1)}


def _read_markdown(prediction: Prediction, text: str) -> None:
    comments = list(_PAGE_COMMENT.finditer(text))
    if not comments:
        tables = parse_markdown_tables(text)
        if tables and all(line.strip().startswith("|") for line in text.splitlines() if line.strip()):
            prediction.task, prediction.tables = "chart", tables
        else:
            prediction.pages = {1: [text]}
        return
    for i, comment in enumerate(comments):
        end = comments[i + 1].start() if i + 1 < len(comments) else len(text)
        body = text[comment.end():end].strip()
        if _PAGE_FAILED.match(body):
            body = ""
            prediction.failed_pages += 1
        prediction.pages[int(comment.group(1))] = [body]
        prediction.page_count = int(comment.group(2))


def _read_records(prediction: Prediction, text: str, suffix: str) -> None:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UnreadableOutput(f"line {number} is not JSON ({exc.msg})") from None
    if suffix == ".json" and not (records and isinstance(records[0], dict) and "data" in records[0]):
        if len(records) != 1:  # `--data-only` writes the data alone
            raise UnreadableOutput("not an extract record")
        prediction.task, prediction.data = "extract", records[0]
        return
    if not records or not all(isinstance(r, dict) for r in records):
        raise UnreadableOutput("holds no records")
    first = records[0]
    if "data" in first:
        prediction.task, prediction.data, prediction.valid = "extract", first.get("data"), first.get("valid")
        _cost(prediction, [first], pages=first.get("pages"))
    elif "columns" in first:
        prediction.task = "chart"
        prediction.tables = [[r.get("columns") or [], *(r.get("rows") or [])] for r in records]
        _cost(prediction, records, pages=len(records))
    elif "text" in first:
        for record in records:
            page = int(record.get("page") or len(prediction.pages) + 1)
            prediction.pages.setdefault(page, []).append(record.get("text") or "")
            prediction.failed_pages += bool(record.get("error"))
            if record.get("lines") is not None:
                prediction.lines[page] = record["lines"]
            if record.get("page_size"):
                prediction.page_sizes[page] = record["page_size"]
            prediction.page_count = record.get("pages") or prediction.page_count
        _cost(prediction, records, pages=len(records))
        prediction.image_tokens = sum(int(r.get("image_tokens") or 0) for r in records)
    else:
        raise UnreadableOutput("records without text, columns or data")


def _cost(prediction: Prediction, records: list[dict], pages: int | None) -> None:
    seconds = [r.get("seconds") for r in records if isinstance(r.get("seconds"), (int, float))]
    if seconds:
        prediction.seconds = float(sum(seconds))
        prediction.recorded_pages = pages or None


def bench_page_texts(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, dict[int, list[str]]]:
    """olmOCR's naming: `{pdf without .pdf}_pg{N}_repeat{k}.md` -> {pdf stem path: {page: [texts]}}."""
    found: dict[str, dict[int, list[str]]] = {}
    for relative, path in output_files(folder, skip):
        match = BENCH_NAME.match(relative)
        if match:
            pages = found.setdefault(match.group("base"), {})
            pages.setdefault(int(match.group("page")), []).append(path.read_text(encoding="utf-8"))
    return found


@dataclass(frozen=True)
class LedgerRow:
    status: str
    source: str
    error: str | None
    seconds: float | None
    pages: int | None


def ledger_rows(folder: Path) -> dict[str, LedgerRow]:
    """The ledger's latest row per output path (below the folder), when the folder has a ledger."""
    from ..runs.ledger import LEDGER_NAME, Ledger

    if not (folder / STATE_DIR_NAME / LEDGER_NAME).is_file():
        return {}
    with Ledger.open(folder, create=False) as ledger:
        return {job.output_path: LedgerRow(job.status, job.source_path, job.error, job.seconds, job.pages)
                for job in ledger.jobs() if job.output_path}
