"""Scoring runs: truth + output folders -> per-document scores, per-run summaries, paired comparisons (the core of
`internvl eval`; the CLI only prints what this returns)."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ExitCode
from . import stats
from .bench import TestResult, run_tests, score as bench_score
from .boxes import box_hits, scaled
from .charts import score_table
from .fields import field_accuracy, leaf_paths
from .predictions import (Prediction, UnreadableOutput, bench_page_texts, document_key, ledger_rows,
                          output_files, read_prediction)
from .text import text_errors, text_similarity
from .truth import MISSING, Problem, Truth, TruthSet, load_truth

TASKS = ("ocr", "chart", "extract", "olmocr")


@dataclass(frozen=True)
class EvalSettings:
    tolerance: float = 0.05     # relative, for chart cells
    samples: int = 1000         # bootstrap resamples
    seed: int = 0
    confidence: float = 0.95


@dataclass
class DocumentScore:
    out: str
    file: str
    task: str
    metrics: dict[str, float]
    pages: list[dict] = field(default_factory=list)
    detail: dict = field(default_factory=dict)   # what the HTML report shows


@dataclass
class RunScore:
    out: Path
    documents: list[DocumentScore] = field(default_factory=list)
    bench: list[TestResult] | None = None
    problems: list[Problem] = field(default_factory=list)

    def by_task(self, task: str) -> list[DocumentScore]:
        return [d for d in self.documents if d.task == task]

    def summary(self, task: str) -> dict[str, float]:
        metrics = [d.metrics for d in self.by_task(task)]
        names = dict.fromkeys(name for m in metrics for name in m)
        summary = {name: stats.aggregate(name, metrics) for name in names}
        summary = {name: value for name, value in summary.items() if value is not None}
        summary["documents"] = len(metrics)
        return summary

    def field_counts(self) -> dict[str, dict[str, int]]:
        """Per field path over the run's extract documents: truth scalars, output scalars, correct ones."""
        totals: dict[str, Counter] = {"truth": Counter(), "output": Counter(), "correct": Counter()}
        for document in self.by_task("extract"):
            for kind in totals:
                totals[kind].update(document.detail.get(f"{kind}_paths", {}))
        paths = sorted(set(totals["truth"]) | set(totals["output"]))
        return {p: {kind: totals[kind][p] for kind in totals} for p in paths}


@dataclass
class Comparison:
    task: str
    metric: str
    base: str
    other: str
    base_value: float
    other_value: float
    interval: tuple[float, float] | None
    documents: int

    @property
    def delta(self) -> float:
        return self.other_value - self.base_value


@dataclass
class Evaluation:
    truth: TruthSet
    runs: list[RunScore]
    comparisons: list[Comparison]
    settings: EvalSettings

    @property
    def problems(self) -> list[Problem]:
        return self.truth.problems + [p for run in self.runs for p in run.problems]

    def exit_code(self) -> ExitCode:
        """OK when nothing went wrong; PARTIAL when some documents scored and some files could not; INPUT_FILE
        when nothing could be scored."""
        if not self.problems:
            return ExitCode.OK
        scored = any(run.documents for run in self.runs)
        return ExitCode.PARTIAL if scored else ExitCode.INPUT_FILE


def evaluate(truth_root: Path, outs: list[Path], settings: EvalSettings = EvalSettings()) -> Evaluation:
    """Scores every output folder against the truth, then compares each later folder with the first."""
    outs = [Path(o) for o in outs]
    truth = load_truth(Path(truth_root), skip=tuple(outs))
    runs = [_score_bench(truth, out) if truth.bench is not None else _score_beside(truth, out, settings)
            for out in outs]
    comparisons = [c for other in runs[1:] for c in compare_runs(runs[0], other, truth, settings)]
    return Evaluation(truth, runs, comparisons, settings)


# -- beside-document truth ----------------------------------------------------------------------------


def _score_beside(truth: TruthSet, out: Path, settings: EvalSettings) -> RunScore:
    run = RunScore(out)
    if not out.is_dir():
        run.problems.append(Problem(str(out), "not a folder of outputs (pass the -o folder of a run)"))
        return run
    ledger = ledger_rows(out)
    tasks_seen: set[str] = set()
    scored: set[tuple[str, str]] = set()
    for relative, prediction in _predictions(out, run):
        tasks_seen.add(prediction.task)
        _add_ledger_cost(prediction, ledger.get(relative))
        found = truth.truths.get(document_key(prediction.file))
        if found is None or not found.has(prediction.task):
            message = f"no {prediction.task} truth for {prediction.file} under {truth.root}"
            run.problems.append(Problem(str(prediction.output), message))
            continue
        run.documents.append(score_document(str(out), prediction, found, settings))
        scored.add((found.key, prediction.task))
    failures = _ledger_failures(ledger, truth)
    for key, item in sorted(truth.truths.items()):
        for task in sorted(tasks_seen):
            if item.has(task) and (key, task) not in scored:
                reason = failures.get(key)
                message = f"failed in the run: {reason}" if reason else f"no {task} output for it in {out}"
                run.problems.append(Problem(str(item.files.get(task)), message))
    return run


def _predictions(out: Path, run: RunScore):
    """(path below the folder, prediction) of every output file; unreadable ones become the run's problems."""
    for relative, path in output_files(out):
        try:
            yield relative, read_prediction(relative, path)
        except UnreadableOutput as error:
            run.problems.append(Problem(str(path), str(error)))


def _add_ledger_cost(prediction: Prediction, row) -> None:
    if row is None or prediction.seconds is not None or row.seconds is None:
        return
    prediction.seconds, prediction.recorded_pages = row.seconds, row.pages


def _ledger_failures(ledger: dict, truth: TruthSet) -> dict[str, str]:
    failures = {}
    root = os.path.abspath(truth.documents_root)
    for row in ledger.values():
        if row.status == "failed" and row.source:
            relative = os.path.relpath(row.source, root)
            if not relative.startswith(os.pardir):
                failures[document_key(Path(relative).as_posix())] = row.error or "failed"
    return failures


def score_document(out: str, prediction: Prediction, truth: Truth, settings: EvalSettings) -> DocumentScore:
    scorer = {"ocr": _score_ocr, "chart": _score_chart, "extract": _score_extract}[prediction.task]
    document = scorer(out, prediction, truth, settings)
    document.metrics.update(_cost(prediction))
    return document


def _cost(prediction: Prediction) -> dict[str, float]:
    if prediction.seconds is None or not prediction.recorded_pages:
        return {}
    pages = prediction.recorded_pages
    cost = {"seconds_per_page": prediction.seconds / pages, "timed_pages": pages}
    if prediction.image_tokens:
        cost["image_tokens_per_page"] = prediction.image_tokens / pages
    return cost


def _score_ocr(out: str, prediction: Prediction, truth: Truth, settings: EvalSettings) -> DocumentScore:
    reference_pages = truth.text.split("\f")
    if len(reference_pages) > 1 and not reference_pages[-1].strip():
        reference_pages = reference_pages[:-1]
    output_pages = {page: texts[0] for page, texts in prediction.pages.items() if texts}
    pages = []
    if len(reference_pages) > 1 or len(output_pages) == 1:
        numbers = sorted(set(range(1, len(reference_pages) + 1)) | set(output_pages))
        for number in numbers:
            reference = reference_pages[number - 1] if number <= len(reference_pages) else ""
            errors = text_errors(reference, output_pages.get(number, ""))
            pages.append({"page": number, "cer": errors.cer, "wer": errors.wer, "chars": errors.chars,
                          "words": errors.words})
        hypothesis = "\n".join(output_pages.get(n, "") for n in numbers)
    else:
        hypothesis = "\n".join(text for _, text in sorted(output_pages.items()))
    reference = "\n".join(reference_pages)
    errors = text_errors(reference, hypothesis)
    metrics = {"cer": errors.cer, "wer": errors.wer, "chars": errors.chars, "words": errors.words,
               "pages": len(pages) or max(len(reference_pages), len(output_pages))}
    if truth.omni:
        metrics["text_similarity"] = text_similarity(reference, hypothesis)
    if truth.lines is not None:
        metrics.update(_box_metrics(prediction, truth))
    return DocumentScore(out, prediction.file, "ocr", metrics, pages,
                         {"truth": reference, "output": hypothesis})


def _box_metrics(prediction: Prediction, truth: Truth) -> dict[str, float]:
    lines = prediction.lines.get(1, [])
    scale = _box_scale(prediction.page_sizes.get(1), truth.document)
    boxes = [scaled(line["box"], scale) for line in lines if isinstance(line, dict) and line.get("box")]
    hits = box_hits([line.box for line in truth.lines], boxes)
    return {"box_recall": hits / len(truth.lines) if truth.lines else 0.0, "truth_boxes": len(truth.lines),
            "box_precision": hits / len(boxes) if boxes else 0.0, "output_boxes": len(boxes)}


def _box_scale(page_size: list[float] | None, document: Path | None) -> tuple[float, float]:
    """Output boxes are in the record's page size; truth boxes in the image's pixels."""
    if not page_size or document is None or document.suffix.lower() == ".pdf":
        return (1.0, 1.0)
    try:
        from PIL import Image

        with Image.open(document) as image:
            width, height = image.size
    except OSError:
        return (1.0, 1.0)
    return (width / page_size[0], height / page_size[1]) if page_size[0] and page_size[1] else (1.0, 1.0)


def _score_chart(out: str, prediction: Prediction, truth: Truth, settings: EvalSettings) -> DocumentScore:
    scores = [score_table(t, prediction.tables[i] if i < len(prediction.tables) else [], settings.tolerance)
              for i, t in enumerate(truth.tables)]
    columns, cells = sum(s.columns for s in scores), sum(s.cells for s in scores)
    output_cells = sum(s.predicted_cells for s in scores)
    correct = sum(s.correct_cells for s in scores)
    metrics = {"header_match": sum(s.header_matches for s in scores) / columns if columns else 0.0,
               "cell_accuracy": correct / cells if cells else 0.0,
               "cell_precision": correct / output_cells if output_cells else 0.0,
               "columns": columns, "cells": cells, "output_cells": output_cells}
    return DocumentScore(out, prediction.file, "chart", metrics,
                         detail={"truth_tables": truth.tables, "output_tables": prediction.tables,
                                 "agreeing": [sorted(s.agreeing) for s in scores]})


def _score_extract(out: str, prediction: Prediction, truth: Truth, settings: EvalSettings) -> DocumentScore:
    accuracy, diff, fields = field_accuracy(truth.data, prediction.data)
    metrics = {"field_accuracy": accuracy, "fields": fields}
    if prediction.valid is not None:
        metrics["valid"] = 1.0 if prediction.valid else 0.0
    detail = {"truth": truth.data, "output": prediction.data, "truth_paths": leaf_paths(truth.data),
              "output_paths": leaf_paths(prediction.data) if prediction.data is not None else Counter(),
              "correct_paths": diff.correct, "added": diff.added, "deleted": diff.deleted, "changed": diff.changed}
    return DocumentScore(out, prediction.file, "extract", metrics, detail=detail)


# -- olmOCR-bench -------------------------------------------------------------------------------------


def _score_bench(truth: TruthSet, out: Path) -> RunScore:
    run = RunScore(out)
    if not out.is_dir():
        run.problems.append(Problem(str(out), "not a folder of outputs (pass the -o folder of a run)"))
        run.bench = []
        return run
    texts = _bench_texts(out, truth, run)
    run.bench = run_tests(truth.bench, texts)
    by_pdf: dict[str, list[TestResult]] = {}
    for result in run.bench:
        by_pdf.setdefault(result.test.pdf, []).append(result)
    for pdf, results in sorted(by_pdf.items()):
        if not any((pdf, page) in texts for page in {r.test.page for r in results}):
            run.problems.append(Problem(pdf, f"no output for it in {out}; its {len(results)} tests fail"))
        passed = sum(r.passed for r in results)
        run.documents.append(DocumentScore(str(out), pdf, "olmocr",
                                           {"pass_rate": passed / len(results), "tests": len(results),
                                            "passed": passed},
                                           detail={"results": results, "texts": {
                                               page: texts.get((pdf, page), [""])[0]
                                               for page in sorted({r.test.page for r in results})}}))
    return run


def _bench_texts(out: Path, truth: TruthSet, run: RunScore) -> dict[tuple[str, int], list[str]]:
    """(pdf, page) -> the texts of that page: olmOCR's `_pgN_repeatK.md` files, or internvl's own outputs
    (`{pdf}.md` with page comments, `.jsonl`, `.txt`), named by the PDF's path below pdfs/ (or below the truth)."""
    texts: dict[tuple[str, int], list[str]] = {}
    for base, pages in bench_page_texts(out).items():
        for page, repeats in pages.items():
            texts[(base + ".pdf", page)] = repeats
    if texts:
        return texts
    for _, prediction in _predictions(out, run):
        if prediction.task != "ocr":
            continue
        name = prediction.file[len("pdfs/"):] if prediction.file.startswith("pdfs/") else prediction.file
        for page, repeats in prediction.pages.items():
            texts[(name, page)] = repeats
    return texts


def bench_summary(run: RunScore, settings: EvalSettings) -> dict:
    """olmOCR-bench's figures for one run: the score with its interval, pass rates by type and by file."""
    results = run.bench or []
    by_file: dict[str, list[float]] = {}
    by_type: dict[str, list[float]] = {}
    for result in results:
        by_file.setdefault(result.test.source, []).append(float(result.passed))
        by_type.setdefault(result.test.type, []).append(result.share)
    interval = stats.stratified_interval(list(by_file.values()), settings.samples, settings.seed,
                                         settings.confidence)
    return {"score": bench_score(results), "interval": interval, "tests": len(results),
            "by_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
            "by_file": {f: {"passed": int(sum(v)), "tests": len(v)} for f, v in sorted(by_file.items())}}


# -- comparisons ---------------------------------------------------------------------------------------


def compare_runs(base: RunScore, other: RunScore, truth: TruthSet, settings: EvalSettings) -> list[Comparison]:
    """Each metric of each task over the documents both runs scored, with a paired bootstrap interval."""
    if truth.bench is not None:
        return _compare_bench(base, other, settings)
    found = []
    for task in TASKS[:3]:
        mine = {d.file: d.metrics for d in base.by_task(task)}
        theirs = {d.file: d.metrics for d in other.by_task(task)}
        common = sorted(set(mine) & set(theirs))
        if not common:
            continue
        a, b = [mine[f] for f in common], [theirs[f] for f in common]
        for metric in dict.fromkeys(m for d in a for m in d if m not in stats.COUNTS):
            base_value, other_value = stats.aggregate(metric, a), stats.aggregate(metric, b)
            if base_value is None or other_value is None:
                continue
            interval = stats.paired_interval(metric, a, b, settings.samples, settings.seed, settings.confidence)
            found.append(Comparison(task, metric, str(base.out), str(other.out), base_value, other_value,
                                    interval, len(common)))
    return found


def _compare_bench(base: RunScore, other: RunScore, settings: EvalSettings) -> list[Comparison]:
    theirs = {r.test.id: r for r in other.bench or []}
    pairs = [(r, theirs[r.test.id]) for r in base.bench or [] if r.test.id in theirs]
    if not pairs:
        return []
    files = sorted({a.test.source for a, _ in pairs})
    groups = [[float(a.passed) for a, _ in pairs if a.test.source == f] for f in files]
    paired = [[float(b.passed) for a, b in pairs if a.test.source == f] for f in files]
    interval = stats.stratified_interval(groups, settings.samples, settings.seed, settings.confidence, paired)
    found = [Comparison("olmocr", "score", str(base.out), str(other.out), bench_score([a for a, _ in pairs]),
                        bench_score([b for _, b in pairs]), interval, len(pairs))]
    for kind in sorted({a.test.type for a, _ in pairs}):
        a_shares = [a.share for a, _ in pairs if a.test.type == kind]
        b_shares = [b.share for a, b in pairs if a.test.type == kind]
        found.append(Comparison("olmocr", kind, str(base.out), str(other.out), sum(a_shares) / len(a_shares),
                                sum(b_shares) / len(b_shares), None, len(a_shares)))
    return found
