"""The HTML report of an evaluation: one self-contained file (inline style, no scripts, nothing fetched) with the
summaries and, per document, truth against each run's output with the differences marked."""
from __future__ import annotations

import difflib
import json
from html import escape

from .evaluation import Evaluation, bench_summary
from .text import normalise_text

MAX_WORDS = 20000
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;
vertical-align:top}th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
del{background:#fdd;text-decoration:line-through}ins{background:#dfd;text-decoration:none}
.ok{background:#e6f6e6}.bad{background:#fbe3e3}.text{white-space:pre-wrap;font-family:ui-monospace,monospace;
font-size:12px;border:1px solid #ddd;padding:.5em;max-height:30em;overflow:auto}details{margin:.4em 0}
summary{cursor:pointer}.problems li{color:#a00}
"""


def render_report(evaluation: Evaluation) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>internvl eval</title>"
             f"<style>{_STYLE}</style></head><body><h1>internvl eval</h1>",
             f"<p>Truth: <code>{escape(str(evaluation.truth.root))}</code>; runs: "
             + ", ".join(f"<code>{escape(str(run.out))}</code>" for run in evaluation.runs) + "</p>"]
    parts.append(_summaries(evaluation))
    if evaluation.problems:
        parts.append("<h2>Problems</h2><ul class='problems'>" + "".join(
            f"<li><code>{escape(p.path)}</code>: {escape(p.message)}</li>" for p in evaluation.problems) + "</ul>")
    parts.append("<h2>Documents</h2><p>Truth against output: <del>missing or wrong in the output</del>, "
                 "<ins>only in the output</ins>.</p>")
    files = sorted({(d.task, d.file) for run in evaluation.runs for d in run.documents})
    for task, file in files:
        parts.append(_document(evaluation, task, file))
    parts.append("</body></html>")
    return "".join(parts)


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return escape(str(value))


def _summaries(evaluation: Evaluation) -> str:
    html = ["<h2>Summary</h2>"]
    if evaluation.truth.bench is not None:
        rows = []
        for run in evaluation.runs:
            s = bench_summary(run, evaluation.settings)
            low, high = s["interval"] or (0.0, 0.0)
            types = ", ".join(f"{t} {v:.1%}" for t, v in s["by_type"].items())
            rows.append(f"<tr><td>{escape(str(run.out))}</td><td class='num'>{s['score']:.1%}</td>"
                        f"<td class='num'>{low:.1%} – {high:.1%}</td><td>{escape(types)}</td></tr>")
        html.append("<table><tr><th>run</th><th>olmOCR-bench score</th><th>interval</th><th>by type</th></tr>"
                    + "".join(rows) + "</table>")
    for task in ("ocr", "chart", "extract"):
        summaries = [run.summary(task) for run in evaluation.runs]
        if not any(s.get("documents") for s in summaries):
            continue
        metrics = list(dict.fromkeys(m for s in summaries for m in s))
        head = "".join(f"<th>{escape(str(run.out))}</th>" for run in evaluation.runs)
        body = "".join(f"<tr><td>{escape(m)}</td>" + "".join(f"<td class='num'>{_number(s.get(m, ''))}</td>"
                                                            for s in summaries) + "</tr>" for m in metrics)
        html.append(f"<h3>{task}</h3><table><tr><th>metric</th>{head}</tr>{body}</table>")
    if evaluation.comparisons:
        rows = "".join(
            f"<tr><td>{c.task}</td><td>{escape(c.metric)}</td><td>{escape(c.other)} vs {escape(c.base)}</td>"
            f"<td class='num'>{c.delta:+.4f}</td><td class='num'>"
            + (f"[{c.interval[0]:+.4f}, {c.interval[1]:+.4f}]" if c.interval else "") + f"</td>"
            f"<td class='num'>{c.documents}</td></tr>" for c in evaluation.comparisons)
        html.append("<h3>Comparisons (paired bootstrap)</h3><table><tr><th>task</th><th>metric</th><th>runs</th>"
                    "<th>delta</th><th>interval</th><th>paired</th></tr>" + rows + "</table>")
    return "".join(html)


def _document(evaluation: Evaluation, task: str, file: str) -> str:
    html = [f"<details><summary><b>{escape(file)}</b> ({task})"]
    scores = [(run, next((d for d in run.documents if d.task == task and d.file == file), None))
              for run in evaluation.runs]
    html.append(" — " + "; ".join(
        f"{escape(str(run.out))}: " + ", ".join(f"{k} {_number(v)}" for k, v in d.metrics.items()
                                                 if k in ("cer", "wer", "field_accuracy", "cell_accuracy",
                                                          "pass_rate", "box_recall"))
        for run, d in scores if d is not None) + "</summary>")
    for run, document in scores:
        if document is None:
            html.append(f"<p>{escape(str(run.out))}: no output scored.</p>")
            continue
        html.append(f"<h4>{escape(str(run.out))}</h4>")
        html.append({"ocr": _ocr, "chart": _chart, "extract": _extract, "olmocr": _bench}[task](document))
    html.append("</details>")
    return "".join(html)


def _ocr(document) -> str:
    truth = normalise_text(document.detail["truth"]).split()[:MAX_WORDS]
    output = normalise_text(document.detail["output"]).split()[:MAX_WORDS]
    marked = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, truth, output, autojunk=False).get_opcodes():
        if op == "equal":
            marked.append(escape(" ".join(truth[i1:i2])))
            continue
        if i2 > i1:
            marked.append(f"<del>{escape(' '.join(truth[i1:i2]))}</del>")
        if j2 > j1:
            marked.append(f"<ins>{escape(' '.join(output[j1:j2]))}</ins>")
    pages = "".join(f"<tr><td>{p['page']}</td><td class='num'>{p['cer']:.4f}</td><td class='num'>{p['wer']:.4f}"
                    f"</td></tr>" for p in document.pages)
    table = f"<table><tr><th>page</th><th>cer</th><th>wer</th></tr>{pages}</table>" if pages else ""
    return table + f"<div class='text'>{' '.join(marked)}</div>"


def _grid(rows: list[list[str]], marks=None) -> str:
    body = []
    for r, row in enumerate(rows):
        tag = "th" if r == 0 else "td"
        cells = "".join(
            f"<{tag}" + ("" if marks is None else f" class='{'ok' if (r, c) in marks else 'bad'}'")
            + f">{escape(str(cell))}</{tag}>" for c, cell in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return "<table>" + "".join(body) + "</table>"


def _chart(document) -> str:
    detail = document.detail
    parts = []
    for i, truth in enumerate(detail["truth_tables"]):
        output = detail["output_tables"][i] if i < len(detail["output_tables"]) else []
        marks = {tuple(cell) for cell in detail["agreeing"][i]}
        parts.append("<table><tr><th>truth</th><th>output (agreeing cells green)</th></tr><tr><td>"
                     + _grid(truth) + "</td><td>" + (_grid(output, marks) if output else "no table") + "</td></tr>"
                     "</table>")
    return "".join(parts)


def _flatten(value: object, path: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{path}.{key}" if path else str(key)))
        return out or {path or "$": {}}
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{path}[{index}]"))
        return out or {path or "$": []}
    return {path or "$": value}


def _extract(document) -> str:
    from .values import same_value

    detail = document.detail
    truth, output = _flatten(detail["truth"]), _flatten(detail["output"]) if detail["output"] is not None else {}
    rows = []
    for path in list(dict.fromkeys(list(truth) + list(output))):
        t, o = truth.get(path, "—"), output.get(path, "—")
        ok = path in truth and path in output and same_value(t, o) if not isinstance(t, (dict, list)) else t == o
        rows.append(f"<tr class='{'ok' if ok else 'bad'}'><td><code>{escape(path)}</code></td>"
                    f"<td>{escape(json.dumps(t, ensure_ascii=False))}</td>"
                    f"<td>{escape(json.dumps(o, ensure_ascii=False))}</td></tr>")
    counts = (f"<p>added {detail['added']}, deleted {detail['deleted']}, changed {detail['changed']} "
              f"(array elements are shown by position; the score pairs them by content)</p>")
    return counts + "<table><tr><th>field</th><th>truth</th><th>output</th></tr>" + "".join(rows) + "</table>"


def _bench(document) -> str:
    rows = "".join(
        f"<tr class='{'ok' if r.passed else 'bad'}'><td>{escape(r.test.id)}</td><td>{r.test.type}</td>"
        f"<td>{r.test.page}</td><td>{'pass' if r.passed else 'fail'}</td><td>{escape(r.why)}</td></tr>"
        for r in document.detail["results"])
    texts = "".join(f"<p>page {page}:</p><div class='text'>{escape(text)}</div>"
                    for page, text in document.detail["texts"].items())
    return ("<table><tr><th>test</th><th>type</th><th>page</th><th>result</th><th>why</th></tr>" + rows
            + "</table>" + texts)
