"""`internvl eval` as a user drives it: runs forced through the real tiny model and scored, comparisons with
intervals, olmOCR-bench's sample data, the HTML report, and bad truth reported one line per file."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import SAMPLES, TESTS
from forcing import forced_engines

BENCH = TESTS / "data" / "olmocr-bench"
BENCH_SCORE = (87 / 99 + 1 + 19 / 20) / 3   # olmOCR's own scorer on its sample data (tests/test_scoring.py)


def _json_lines(stdout: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return lines[:-1], lines[-1]


@pytest.fixture()
def ocr_truth(tmp_path) -> Path:
    truth = tmp_path / "truth"
    truth.mkdir()
    shutil.copy(SAMPLES / "chart.png", truth / "a.png")
    shutil.copy(SAMPLES / "receipt.jpg", truth / "b.jpg")
    (truth / "a.txt").write_text("hello world\n")
    (truth / "b.md").write_text("# hello there world\n")
    return truth


def test_runs_forced_through_the_model_score_as_worked_out_and_compare(cli, tiny_model, ocr_truth, tmp_path,
                                                                        monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    model = f"--model {tiny_model} --device cpu"
    # Each block undoes its forcing on leaving (monkeypatch.context), so the second run writes its own answer.
    with monkeypatch.context() as patch, forced_engines(patch, {"Transcribe": "hello world"}):
        code, out, err = cli("eval", "--truth", ocr_truth, "--run", f"ocr {model} --format jsonl -o {first}",
                             "--json")
    assert code == 0, err
    documents, summary = _json_lines(out)
    cer = {d["file"]: d["metrics"]["cer"] for d in documents}
    assert cer == {"a.png": 0.0, "b.jpg": pytest.approx(6 / 17)}        # "there " missing from 17 characters
    assert summary["summary"][0]["tasks"]["ocr"]["cer"] == pytest.approx(6 / 28)   # pooled over 28 characters
    assert documents[0]["metrics"]["seconds_per_page"] >= 0 and documents[0]["metrics"]["image_tokens_per_page"] > 0

    # A rerun over the finished folder is free: the ledger skips both documents, so no model loads.
    code, out, err = cli("eval", "--truth", ocr_truth, "--run", f"ocr {model} --format jsonl -o {first}")
    assert code == 0 and "loading model" not in err and "2 documents already done" in err

    with monkeypatch.context() as patch, forced_engines(patch, {"Transcribe": "hello world!"}):
        code, out, err = cli("eval", "--truth", ocr_truth, "--run", f"ocr {model} -o {second}")
    assert code == 0, err
    code, out, err = cli("eval", "--truth", ocr_truth, first, second, "--json", "--seed", "1")
    assert code == 0, err
    comparison = next(c for c in _json_lines(out)[1]["comparisons"] if c["metric"] == "cer")
    # a: 1 insertion in 11 characters; b: 6 deletions and 1 insertion in 17.
    assert comparison["other_value"] == pytest.approx(8 / 28) and comparison["delta"] == pytest.approx(2 / 28)
    low, high = comparison["interval"]
    assert low == pytest.approx(1 / 17) and high == pytest.approx(1 / 11)   # the two documents' own deltas
    assert comparison["documents"] == 2
    again = cli("eval", "--truth", ocr_truth, first, second, "--json", "--seed", "1")[1]
    assert again == out                                                     # seeded: the same figures
    code, out, err = cli("eval", "--truth", ocr_truth, first, second)
    assert "comparisons" in out and "+0.0714" in out


def _write_outputs(out: Path) -> None:
    out.mkdir()
    (out / "chart.png.csv").write_text("Quarter,Value\nQ4,18.2\nQ1,12.9\nQ2,15.0\nQ3,9\n")
    record = {"file": "truth/receipt.jpg", "pages": 1, "valid": True, "errors": [], "flags": [], "seconds": 2.5,
              "data": {"shop": "CAFE  LUNA", "total": "15.65", "date": "15.03.2024",
                       "items": [{"name": "Cake", "price": 4.2}, {"name": "Tea", "price": 3.4}]}}
    (out / "receipt.jpg.json").write_text(json.dumps(record) + "\n")


def _chart_and_extract_truth(tmp_path: Path) -> Path:
    truth = tmp_path / "truth"
    truth.mkdir()
    shutil.copy(SAMPLES / "chart.png", truth)
    shutil.copy(SAMPLES / "receipt.jpg", truth)
    (truth / "chart.csv").write_text("quarter,value\nQ1,12.5\nQ2,15.0\nQ3,9.8\nQ4,18.2\n")
    (truth / "receipt.json").write_text(json.dumps(
        {"shop": "Cafe Luna", "total": 15.65, "date": "2024-03-15",
         "items": [{"name": "Tea", "price": 3.5}, {"name": "Cake", "price": 4.2}]}))
    return truth


def test_chart_and_extract_outputs_score_by_their_metrics(cli, tmp_path):
    truth = _chart_and_extract_truth(tmp_path)
    _write_outputs(tmp_path / "out")
    code, out, err = cli("eval", "--truth", truth, tmp_path / "out", "--json")
    assert code == 0, err
    documents, summary = _json_lines(out)
    chart = next(d for d in documents if d["task"] == "chart")["metrics"]
    assert chart["header_match"] == 1.0 and chart["cell_accuracy"] == pytest.approx(7 / 8)  # 9 vs 9.8 is off by 8%
    extract = next(d for d in documents if d["task"] == "extract")["metrics"]
    assert extract["field_accuracy"] == pytest.approx(1 - 1 / 7) and extract["valid"] == 1.0   # one price wrong
    assert extract["seconds_per_page"] == 2.5
    fields = summary["summary"][0]["fields"]
    assert fields["items[].price"] == {"precision": 0.5, "recall": 0.5, "truth": 2, "output": 2, "correct": 1}
    code, out, err = cli("eval", "--truth", truth, tmp_path / "out", "--tolerance", "0.1")
    assert code == 0 and re.search(r"cell_accuracy +1\.0000\n", out)    # 9 is within 10% of 9.8


def test_omni_documents_are_truth_for_extract_and_ocr(cli, tmp_path):
    truth, out = tmp_path / "truth", tmp_path / "out"
    truth.mkdir()
    out.mkdir()
    shutil.copy(SAMPLES / "receipt.jpg", truth)
    (truth / "receipt.json").write_text(json.dumps({
        "imageUrl": "receipt.jpg", "metadata": {}, "jsonSchema": {"type": "object"},
        "trueJsonOutput": {"totals": {"total": 48.43, "tax": 6.18}}, "trueMarkdownOutput": "Total 48.43"}))
    (out / "receipt.jpg.json").write_text(json.dumps({"file": "receipt.jpg", "data": {"totals": {"total": 48.43}},
                                                      "valid": True}) + "\n")
    (out / "receipt.jpg.md").write_text("<!-- file: receipt.jpg | page: 1/1 | source: vision -->\n\ntotal 48.43\n")
    code, stdout, err = cli("eval", "--truth", truth, out, "--json")
    assert code == 0, err
    metrics = {d["task"]: d["metrics"] for d in _json_lines(stdout)[0]}
    assert metrics["extract"]["field_accuracy"] == 0.5          # tax deleted: 1 of 2 fields
    assert metrics["ocr"]["cer"] == pytest.approx(1 / 11) and metrics["ocr"]["text_similarity"] == 1.0


def test_olmocr_sample_data_scores_as_olmocrs_scorer_in_every_output_form(cli, tmp_path):
    code, out, err = cli("eval", "--truth", BENCH, BENCH / "olmocr_pipeline", "--json")
    assert code == 0, err
    documents, summary = _json_lines(out)
    assert summary["summary"][0]["olmocr"]["score"] == pytest.approx(BENCH_SCORE)
    assert len(documents) == 21 and sum(d["metrics"]["tests"] for d in documents) == 120

    # internvl's own -o outputs of the same pages: {pdf}.md with page comments, and JSONL records.
    markdown, records = tmp_path / "md", tmp_path / "jsonl"
    pages: dict[str, dict[int, str]] = {}
    for path in sorted((BENCH / "olmocr_pipeline").rglob("*_repeat1.md")):
        base, page = re.match(r"(.+)_pg(\d+)_repeat1\.md$", path.relative_to(BENCH / "olmocr_pipeline").as_posix()).groups()
        pages.setdefault(base + ".pdf", {})[int(page)] = path.read_text()
    for pdf, texts in pages.items():
        count = max(texts)
        sections = "".join(f"<!-- file: {pdf} | page: {n}/{count} | source: vision -->\n\n{t}\n\n"
                           for n, t in sorted(texts.items()))
        lines = "".join(json.dumps({"file": pdf, "page": n, "pages": count, "text": t}) + "\n"
                        for n, t in sorted(texts.items()))
        for target, content in ((markdown / (pdf + ".md"), sections), (records / (pdf + ".jsonl"), lines)):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    code, out, err = cli("eval", "--truth", BENCH, BENCH / "olmocr_pipeline", markdown, records, "--json")
    assert code == 0, err
    documents, summary = _json_lines(out)
    by_run: dict[str, dict[str, float]] = {}
    for document in documents:
        by_run.setdefault(document["out"], {})[document["file"]] = document["metrics"]["passed"]
    assert len({json.dumps(v, sort_keys=True) for v in by_run.values()}) == 1   # the same tests pass
    scores = [run["olmocr"]["score"] for run in summary["summary"]]
    assert scores == pytest.approx([BENCH_SCORE] * 3)
    assert {c["delta"] for c in summary["comparisons"] if c["metric"] == "score"} == {0.0}


def test_report_is_one_self_contained_file_with_differences_marked(cli, ocr_truth, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png.md").write_text("<!-- file: a.png | page: 1/1 | source: vision -->\n\nhello wor<ld\n")
    (out / "b.jpg.md").write_text("<!-- file: b.jpg | page: 1/1 | source: vision -->\n\nhello there world\n")
    report = tmp_path / "report.html"
    code, _, err = cli("eval", "--truth", ocr_truth, out, "--report", report)
    assert code == 0, err
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    for external in ("http://", "https://", "<script", "<link", "src="):
        assert external not in html
    assert "<del>world</del>" in html and "<ins>wor&lt;ld</ins>" in html   # escaped, marked


def test_bad_truth_and_missing_documents_get_one_line_each(cli, tmp_path):
    truth, out = tmp_path / "truth", tmp_path / "out"
    truth.mkdir()
    out.mkdir()
    for name in ("good.png", "broken.png", "untruthful.png"):
        shutil.copy(SAMPLES / "chart.png", truth / name)
    (truth / "good.txt").write_text("hello")
    (truth / "broken.json").write_text("{not json")
    (truth / "lonely.txt").write_text("no document beside me")
    (truth / "table.csv").write_text("")
    (out / "good.png.md").write_text("hello\n")
    (out / "stray.png.md").write_text("who am I\n")
    (out / "bad.png.jsonl").write_text("{oops\n")
    code, stdout, err = cli("eval", "--truth", truth, out)
    assert code == 10                                         # some scored, some could not: PARTIAL
    lines = err.strip().splitlines()
    assert all(line.startswith("internvl: error: ") for line in lines) and "Traceback" not in err
    expected = {"broken.json: not JSON", "lonely.txt: no document lonely.* beside this truth file",
                "table.csv: no table in it", "untruthful.png: no truth file beside this document",
                "stray.png.md: no ocr truth for stray.png", "bad.png.jsonl: line 1 is not JSON"}
    for fragment in expected:
        assert sum(fragment in line for line in lines) == 1, fragment
    assert len(lines) == len(expected)
    assert "ocr: 1 documents" in stdout

    (out / "good.png.md").unlink()
    code, _, err = cli("eval", "--truth", truth, out)
    assert code == 3 and "good.txt: no ocr output for it" in err     # nothing scored: INPUT_FILE
    code, _, err = cli("eval", "--truth", tmp_path / "nowhere", out)
    assert code == 3 and err.count("\n") == 1
    code, _, err = cli("eval", "--truth", truth, "--run", "inspect x")
    assert code == 2 and "--run takes a document command" in err
