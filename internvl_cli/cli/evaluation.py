"""`internvl eval`: score output folders (or runs it starts) against ground truth; tables, JSON lines or HTML."""
from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Optional

import typer

from ..errors import ExitCode, InputFileError, UsageError
from .app import exit_on_error, note, report_error
from .options import BootstrapOpt, EvalJsonOpt, ReportOpt, RunOpt, SeedOpt, ToleranceOpt, TruthOpt

RUN_COMMANDS = ("ocr", "chart", "extract")
RUNS_FOLDER = Path("internvl-eval")
# Exit codes of a run that still leave outputs worth scoring.
_SCORABLE = (ExitCode.OK, ExitCode.PARTIAL, ExitCode.INVALID_OUTPUT)


def eval_outputs(
    outs: Optional[list[Path]] = typer.Argument(None, metavar="OUT", help="Output folders written with -o "
                                                "(or olmOCR-bench candidate folders); several compare side by side."),
    truth: Path = TruthOpt, runs: list[str] = RunOpt, as_json: bool = EvalJsonOpt,
    report: Optional[Path] = ReportOpt, tolerance: float = ToleranceOpt, bootstrap: int = BootstrapOpt,
    seed: int = SeedOpt,
) -> None:
    """Score outputs against ground truth: OCR error rates, olmOCR-bench pass rates, extract field accuracy,
    chart cell accuracy, time and tokens per page. No model is loaded unless --run has work to do.

    Several folders are compared with the first: the same documents, a delta per metric and a paired
    bootstrap interval. Files that cannot be scored (bad truth, a document without truth or output) get one
    line each on stderr and exit code 10 (3 when nothing could be scored).

    \b
    Examples:
      internvl ocr scans/ -o out/ && internvl eval --truth scans/ out/
      internvl eval --truth scans/ out-6-tiles/ out-12-tiles/ --report report.html
      internvl eval --truth scans/ --run "ocr --model internvl3-2b-awq --max-tiles 6"
      internvl eval --truth olmOCR-bench/bench_data olmOCR-bench/bench_data/olmocr --json
    """
    with exit_on_error():
        _require_libraries()
        from ..scoring.evaluation import EvalSettings, evaluate
        from ..scoring.truth import load_truth

        if not truth.exists():
            raise InputFileError("the truth folder does not exist", path=truth)
        folders = list(outs or [])
        if runs:
            documents = load_truth(truth).documents_root
            folders += [run_into(command, documents) for command in runs]
        if not folders:
            raise UsageError("nothing to score", hint="name output folders, or --run a command")
        evaluation = evaluate(truth, folders, EvalSettings(tolerance=tolerance, samples=bootstrap, seed=seed))
        for problem in evaluation.problems:
            report_error(InputFileError(problem.message, path=problem.path))
        if as_json:
            _print_json(evaluation)
        else:
            typer.echo(render_tables(evaluation), nl=False)
        if report is not None:
            from ..runs.outputs import atomic_write_text
            from ..scoring.report import render_report

            atomic_write_text(report, render_report(evaluation))
            note(f"report written to {report}")
        code = evaluation.exit_code()
        if code != ExitCode.OK:
            raise typer.Exit(int(code))


def _require_libraries() -> None:
    try:
        import rapidfuzz  # noqa: F401
        import scipy  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"internvl eval needs {exc.name}", hint='pip install "internvl-cli[eval]"') from None


def run_into(command: str, documents: Path) -> Path:
    """Runs `internvl COMMAND DOCUMENTS -o FOLDER` in this process (the CLI itself, so config defaults and checks
    apply as typed) and returns FOLDER; documents already done there are skipped by the ledger, so a rerun
    loads no model. The one place eval starts a run."""
    from .app import app

    words = shlex.split(command)
    if not words or words[0] not in RUN_COMMANDS:
        raise UsageError(f"--run takes a document command ({', '.join(RUN_COMMANDS)}) and its options, "
                         f"not {command!r}", hint='e.g. --run "ocr --max-tiles 6"')
    folder = _named_output(words) or RUNS_FOLDER / _folder_name(command)
    if _named_output(words) is None:
        words += ["-o", str(folder)]
    if not any(w == "--include" or w.startswith("--include=") for w in words):
        from ..documents.inputs import SUPPORTED_EXTENSIONS

        for extension in sorted(SUPPORTED_EXTENSIONS):  # only documents: the truth files beside them are skipped
            words += ["--include", f"*{extension}"]
    note(f"running: internvl {command} (into {folder})")
    code = app([words[0], str(documents), *words[1:]], prog_name="internvl", standalone_mode=False) or 0
    if code not in _SCORABLE:
        raise typer.Exit(int(code))
    return folder


def _named_output(words: list[str]) -> Path | None:
    for i, word in enumerate(words):
        if word in ("-o", "--output") and i + 1 < len(words):
            return Path(words[i + 1])
        if word.startswith("--output="):
            return Path(word.split("=", 1)[1])
    return None


def _folder_name(command: str) -> str:
    """A readable, stable folder name for a command: its words, then a short hash of it."""
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", command).strip("-")[:60]
    return f"{slug}-{hashlib.sha256(command.encode()).hexdigest()[:8]}"


# -- printing --------------------------------------------------------------------------------------------


def _print_json(evaluation) -> None:
    from ..scoring.evaluation import bench_summary

    for run in evaluation.runs:
        for document in run.documents:
            line = {"out": str(run.out), "file": document.file, "task": document.task,
                    "metrics": document.metrics}
            if document.pages:
                line["pages"] = document.pages
            typer.echo(json.dumps(line, ensure_ascii=False))
    summary = []
    for run in evaluation.runs:
        tasks = {task: run.summary(task) for task in ("ocr", "chart", "extract") if run.by_task(task)}
        entry = {"out": str(run.out), "tasks": tasks}
        if run.by_task("extract"):
            entry["fields"] = {path: _precision_recall(c) for path, c in run.field_counts().items()}
        if evaluation.truth.bench is not None:
            entry["olmocr"] = bench_summary(run, evaluation.settings)
        summary.append(entry)
    comparisons = [{"task": c.task, "metric": c.metric, "base": c.base, "other": c.other,
                    "base_value": c.base_value, "other_value": c.other_value, "delta": c.delta,
                    "interval": list(c.interval) if c.interval else None, "documents": c.documents}
                   for c in evaluation.comparisons]
    problems = [{"path": p.path, "message": p.message} for p in evaluation.problems]
    typer.echo(json.dumps({"summary": summary, "comparisons": comparisons, "problems": problems},
                          ensure_ascii=False))


def _precision_recall(counts: dict[str, int]) -> dict[str, float | int]:
    return {"precision": counts["correct"] / counts["output"] if counts["output"] else 0.0,
            "recall": counts["correct"] / counts["truth"] if counts["truth"] else 0.0, **counts}


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                 for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    return "\n".join([line(header), *(line(r) for r in rows)]) + "\n"


def render_tables(evaluation) -> str:
    """The terminal view: per task a metric table (one column per run), the comparisons, the olmOCR score."""
    from ..scoring.evaluation import bench_summary
    from ..scoring.stats import COUNTS

    runs = evaluation.runs
    names = [str(run.out) for run in runs]
    parts = []
    if evaluation.truth.bench is not None:
        rows = []
        for run in runs:
            s = bench_summary(run, evaluation.settings)
            low, high = s["interval"] or (0.0, 0.0)
            rows.append([str(run.out), f"{s['score']:.1%}", f"{low:.1%}-{high:.1%}", str(s["tests"])]
                        + [f"{s['by_type'].get(t, 0):.1%}" for t in _bench_types(evaluation)])
        parts.append("olmOCR-bench (mean of the test files' pass rates; 95% bootstrap interval)\n"
                     + _table(["run", "score", "interval", "tests", *_bench_types(evaluation)], rows))
    for task in ("ocr", "chart", "extract"):
        summaries = [run.summary(task) for run in runs]
        if not any(s.get("documents") for s in summaries):
            continue
        metrics = [m for m in dict.fromkeys(m for s in summaries for m in s) if m not in COUNTS]
        rows = [[m, *(_format(s.get(m)) for s in summaries)] for m in metrics]
        parts.append(f"{task}: " + ", ".join(f"{s.get('documents', 0)} documents in {n}"
                                           for s, n in zip(summaries, names)) + "\n"
                     + _table(["metric", *names], rows))
        if task == "extract":
            for run in runs:
                counts = run.field_counts()
                rows = [[path, _format(pr["precision"]), _format(pr["recall"]), str(c["truth"]), str(c["output"])]
                        for path, c in list(counts.items())[:25] for pr in [_precision_recall(c)]]
                more = f"({len(counts) - 25} more fields in --json)\n" if len(counts) > 25 else ""
                parts.append(f"fields in {run.out}\n"
                             + _table(["field", "precision", "recall", "truth", "output"], rows) + more)
    if evaluation.comparisons:
        rows = [[c.task, c.metric, f"{c.other} vs {c.base}", _format(c.base_value), _format(c.other_value),
                 f"{c.delta:+.4f}", f"[{c.interval[0]:+.4f}, {c.interval[1]:+.4f}]" if c.interval else "-",
                 str(c.documents)] for c in evaluation.comparisons]
        parts.append("comparisons (same documents; 95% paired bootstrap interval of the delta)\n"
                     + _table(["task", "metric", "runs", "base", "other", "delta", "interval", "paired"], rows))
    return "\n".join(parts) if parts else "nothing scored\n"


def _bench_types(evaluation) -> list[str]:
    return sorted({test.type for test in evaluation.truth.bench or []})
