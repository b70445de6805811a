"""Ground truth in the forms people have: files beside each document, olmOCR-bench JSONL tests, omni JSON.

Beside a document `X.pdf` (or `X.png`, ...), in the same folder and named `X.*` or `X.pdf.*`:
`X.txt` / `X.md` reference text for OCR (pages split by form feeds; a `.txt` in ICDAR line form gives line boxes
too, see `boxes`), `X.json` the expected `data` for extract (or an omni benchmark document: `trueJsonOutput` for
extract, `trueMarkdownOutput` for OCR), `X.csv` the expected table for chart. A folder whose top level holds
JSONL files of olmOCR-bench tests (objects with `pdf`, `page`, `id`, `type`) is an olmOCR-bench folder: its
documents are under `pdfs/`. Problems (a file that does not parse, a truth file with no document beside it, a
document with no truth) are collected, one per file, and never stop the others.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..documents.inputs import STATE_DIR_NAME, SUPPORTED_EXTENSIONS
from .bench import BenchTest, baseline_test, load_tests
from .boxes import TruthLine, is_icdar, parse_icdar
from .charts import Table, parse_csv_tables
from .predictions import document_key

TRUTH_SUFFIXES = {".txt": "text", ".md": "text", ".json": "data", ".csv": "table"}
MISSING = object()  # no expected data (as opposed to an expected null)


@dataclass
class Problem:
    """One file that could not be scored, and why; shown as one line each and counted apart."""

    path: str
    message: str


@dataclass
class Truth:
    """What one document should give, in whichever forms its truth files provide."""

    key: str
    document: Path | None = None
    text: str | None = None           # OCR reference, pages split by form feeds
    lines: list[TruthLine] | None = None
    data: object = MISSING            # extract
    tables: list[Table] | None = None  # chart
    omni: bool = False
    files: dict[str, Path] = field(default_factory=dict)  # kind -> truth file
    tried: bool = False               # a truth file was there, even if it could not be read

    def has(self, task: str) -> bool:
        return {"ocr": self.text is not None, "chart": self.tables is not None,
                "extract": self.data is not MISSING}[task]


@dataclass
class TruthSet:
    root: Path
    documents_root: Path               # where the documents are: the root, or its pdfs/ for olmOCR-bench
    truths: dict[str, Truth] = field(default_factory=dict)
    bench: list[BenchTest] | None = None
    problems: list[Problem] = field(default_factory=list)

    def documents(self) -> list[Path]:
        return sorted(t.document for t in self.truths.values() if t.document is not None)


def load_truth(root: Path, skip: tuple[Path, ...] = ()) -> TruthSet:
    """Reads every truth file under `root` (a folder, or one olmOCR-bench JSONL file); `skip` are output folders
    that may sit inside it."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".jsonl":
        return _load_bench(root.parent, [root], skip)
    bench_files = sorted(p for p in root.glob("*.jsonl") if _is_bench_file(p))
    if bench_files:
        return _load_bench(root, bench_files, skip)
    return _load_beside(root, skip)


def _files(root: Path, skip: tuple[Path, ...]):
    skipped = {os.path.realpath(s) for s in skip}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in skipped
                             and not os.path.isdir(os.path.join(dirpath, d, STATE_DIR_NAME)))
        for name in sorted(filenames):
            if not name.startswith("."):
                path = Path(dirpath, name)
                yield PurePosixPath(path.relative_to(root)).as_posix(), path


def _load_beside(root: Path, skip: tuple[Path, ...]) -> TruthSet:
    found = TruthSet(root=root, documents_root=root)
    for relative, path in _files(root, skip):
        suffix = path.suffix.lower()
        if suffix in SUPPORTED_EXTENSIONS:
            found.truths.setdefault(document_key(relative), Truth(document_key(relative))).document = path
        elif suffix in TRUTH_SUFFIXES:
            key = document_key(relative[: -len(suffix)])
            truth = found.truths.setdefault(key, Truth(key))
            truth.tried = True
            problem = _read_truth_file(truth, path, suffix)
            if problem:
                found.problems.append(Problem(str(path), problem))
    has_documents = any(t.document for t in found.truths.values())
    for key, truth in sorted(found.truths.items()):
        if truth.document is None and has_documents and truth.files:
            for path in truth.files.values():
                found.problems.append(Problem(str(path), f"no document {PurePosixPath(key).name}.* beside this "
                                              "truth file"))
            del found.truths[key]  # reported once: its outputs, if any, are then outputs without truth
        elif truth.document is not None and not truth.tried:
            found.problems.append(Problem(str(truth.document), "no truth file beside this document "
                                          "(X.txt or X.md for ocr, X.json for extract, X.csv for chart)"))
    return found


def _read_truth_file(truth: Truth, path: Path, suffix: str) -> str | None:
    """Adds one file to a document's truth; the problem, if any, in words."""
    kind = TRUTH_SUFFIXES[suffix]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read it ({getattr(exc, 'strerror', None) or exc})"
    if kind == "data":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"not JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        if isinstance(data, dict) and ("trueJsonOutput" in data or "trueMarkdownOutput" in data):
            truth.omni = True
            if "trueJsonOutput" in data:
                data_problem = _set(truth, "data", data["trueJsonOutput"], path)
                if data_problem:
                    return data_problem
            if isinstance(data.get("trueMarkdownOutput"), str) and truth.text is None:
                truth.text = data["trueMarkdownOutput"]
                truth.files.setdefault("text", path)
            return None
        return _set(truth, "data", data, path)
    if kind == "table":
        tables = parse_csv_tables(text)
        if not tables or not tables[0] or not tables[0][0]:
            return "no table in it (a header row, then one row per line)"
        return _set(truth, "tables", tables, path)
    if suffix == ".txt" and is_icdar(text):
        try:
            truth.lines = parse_icdar(text)
        except ValueError as exc:
            return f"not an ICDAR line file ({exc})"
        return _set(truth, "text", "\n".join(line.text for line in truth.lines), path)
    return _set(truth, "text", text, path)


def _set(truth: Truth, attribute: str, value: object, path: Path) -> str | None:
    kind = {"data": "extract", "tables": "chart", "text": "ocr"}[attribute]
    if kind in truth.files and not (attribute == "text" and truth.omni and truth.files[kind].suffix == ".json"):
        return f"a second {kind} truth for this document (using {truth.files[kind]})"
    setattr(truth, attribute, value)
    truth.files[kind] = path
    return None


def _is_bench_file(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    first = json.loads(line)
                    return isinstance(first, dict) and {"pdf", "type"} <= first.keys()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return False


def _load_bench(root: Path, files: list[Path], skip: tuple[Path, ...]) -> TruthSet:
    pdf_root = root / "pdfs" if (root / "pdfs").is_dir() else root
    found = TruthSet(root=root, documents_root=pdf_root, bench=[])
    for path in files:
        tests, bad = load_tests(path)
        found.bench += tests
        found.problems += [Problem(f"{path}:{number}", reason) for number, reason in bad]
    pdfs = sorted(relative for relative, _ in _files(pdf_root, skip) if relative.lower().endswith(".pdf")) \
        if pdf_root != root else []
    named = sorted({test.pdf for test in found.bench})
    for pdf in pdfs:
        found.truths[pdf] = Truth(pdf, document=pdf_root / pdf)
        if pdf not in named:
            found.problems.append(Problem(str(pdf_root / pdf), "no test names this document"))
    if pdfs:
        for pdf in sorted(set(named) - set(pdfs)):
            found.problems.append(Problem(str(pdf_root / pdf), "tests name this document, but it is not there"))
    for pdf in sorted(set(pdfs) | set(named)):
        if not any(t.type == "baseline" and t.pdf == pdf for t in found.bench):
            found.bench.append(baseline_test(pdf))
    return found
