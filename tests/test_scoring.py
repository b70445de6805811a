"""The metrics of `internvl eval`, each against values worked out by hand and, where a reference implementation
exists, against it: rapidfuzz's distances, the omni benchmark's own test cases, and olmOCR-bench's scorer (its
per-test results on its sample data, recorded once from allenai/olmocr and kept in tests/data/olmocr-bench)."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from conftest import TESTS
from internvl_cli.scoring import stats
from internvl_cli.scoring.bench import load_tests, near_match_starts, normalise, parse_test, run_tests, score
from internvl_cli.scoring.bench_tables import html_tables, markdown_tables
from internvl_cli.scoring.boxes import box_hits, iou, is_icdar, parse_icdar
from internvl_cli.scoring.charts import score_table
from internvl_cli.scoring.fields import compare, field_accuracy, leaf_paths
from internvl_cli.scoring.predictions import bench_page_texts
from internvl_cli.scoring.text import normalise_text, text_errors, text_similarity
from internvl_cli.scoring.truth import load_truth
from internvl_cli.scoring.values import as_dates, as_number, same_value

BENCH = TESTS / "data" / "olmocr-bench"


# -- OCR text -------------------------------------------------------------------------------------------

def test_normalisation_drops_markup_and_folds_whitespace():
    page = ("<!-- file: a.pdf | page: 1/1 | source: vision -->\n# Invoice  **42**\n\n| Item | Total |\n|---|---|\n"
            "| Tea | 3.50 |\n\n- first *point*\n> quoted [link](http://x)<br>e\u0301")
    assert normalise_text(page) == "Invoice 42 Item Total Tea 3.50 first point quoted link \u00e9"


def test_cer_and_wer_by_hand():
    errors = text_errors("the cat sat", "the bat sat down")
    assert (errors.char_edits, errors.chars) == (6, 11)          # c->b, then " down" inserted
    assert (errors.word_edits, errors.words) == (2, 3)           # cat->bat, down inserted
    assert errors.cer == pytest.approx(6 / 11) and errors.wer == pytest.approx(2 / 3)
    assert text_errors("", "").cer == 0.0 and text_errors("", "ab").cer == 2.0


def test_distances_are_rapidfuzz_levenshtein():
    from rapidfuzz.distance import Levenshtein

    rng = random.Random(7)
    for _ in range(50):
        a = "".join(rng.choice("ab cd") for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice("ab ce") for _ in range(rng.randint(0, 30)))
        errors = text_errors(a, b)
        assert errors.char_edits == Levenshtein.distance(" ".join(a.split()), " ".join(b.split()))
        assert errors.word_edits == Levenshtein.distance(a.split(), b.split())


def test_omni_text_similarity():
    assert text_similarity("Hello", "hello") == 1.0                 # trimmed and lower-cased
    assert text_similarity("abcd", "abcf") == pytest.approx(0.75)
    assert text_similarity("abc", "") == 0.0


# -- extract --------------------------------------------------------------------------------------------

# The omni benchmark's own cases (tests/evaluation/json.test.ts in getomni-ai/benchmark) and their scores.
OMNI_CASES = [
    ({"a": 1, "b": 2}, {"a": 1, "b": 3}, 0.5),
    ({"a": 1, "b": {"c": 2, "d": 4, "e": 4}}, {"a": 1, "b": {"c": 2, "d": 4, "e": 5}}, 0.75),
    ({"a": 1, "b": [{"c": 2, "d": 4, "e": 4, "f": [2, 9]}]}, {"a": 1, "b": [{"c": 2, "d": 4, "e": 5, "f": [2, 3]}]}, 0.5),
    ({"a": 1, "b": [{"c": 1, "d": 2}, {"c": 3, "d": 4}]}, {"a": 1, "b": [{"c": 3, "d": 4}, {"c": 1, "d": 2}]}, 1.0),
    ({"a": 1, "b": [1, 2, 3]}, {"a": 1, "b": None}, 0.25),
    ({"a": 1, "b": [{"c": 1, "d": 1}, {"c": 2}, {"c": 3, "e": 4}]}, {"a": 1, "b": None}, 0.1667),
    ({"a": 1, "b": {"c": 1, "d": {"e": 1, "f": 2}}}, {"a": 1, "b": {"c": 1, "d": None}}, 0.5),
    ({"a": [{"b": 1, "c": None}]}, {"a": [{"b": 1, "c": 2}]}, 0.5),
    ({"a": [{"b": 1, "c": None, "f": 4}]}, {"a": [{"b": 1, "c": {"d": 2}, "f": 4}]}, 0.6667),
    ({"a": [{"b": 1, "c": None, "f": 4}]}, {"a": [{"b": 1, "c": {"d": 2, "e": 3}, "f": 4}]}, 0.3333),
    ({"a": [{"b": 1, "c": None, "f": 4}]}, {"a": [{"b": 1, "c": [3], "f": 4}]}, 0.6667),
    ({"a": [{"b": 1, "c": 2}]}, {"a": [{"b": 1, "c": None}]}, 0.5),
    ({"a": [{"b": 1, "c": {"d": 2}}]}, {"a": [{"b": 1, "c": None}]}, 0.5),
    ({"a": [{"b": 1, "c": {"d": 2, "e": 3}}]}, {"a": [{"b": 1, "c": None}]}, 0.3333),
    ({"a": [{"b": 1, "c": [3, 2]}]}, {"a": [{"b": 1, "c": None}]}, 0.3333),
]


@pytest.mark.parametrize("truth, predicted, expected", OMNI_CASES)
def test_field_accuracy_gives_omni_scores(truth, predicted, expected):
    assert round(field_accuracy(truth, predicted)[0], 4) == expected


def test_values_are_normalised_before_comparing():
    truth = {"total": 1234.5, "date": "2024-03-15", "shop": "Café Luna", "paid": True}
    output = {"total": "1,234.50", "date": "15 March 2024", "shop": "  CAFÉ   luna ", "paid": True}
    assert field_accuracy(truth, output)[0] == 1.0
    assert as_number("€ 3.50") == 3.5 and as_number("12 %") == 12.0 and as_number("3.5.1") is None
    assert as_dates("03/04/2024") == as_dates("2024-03-04") | as_dates("2024-04-03")   # either order
    assert same_value("15.03.2024", "March 15, 2024") and not same_value("15.03.2024", "2024-03-16")
    assert not same_value(True, 1) and not same_value(None, "")


def test_arrays_of_objects_pair_by_content_and_count_per_field():
    truth = {"items": [{"name": "Tea", "price": 3.5}, {"name": "Cake", "price": 4.2}]}
    output = {"items": [{"name": "cake", "price": 4.2}, {"name": "Tea", "price": 3.4}, {"name": "Jam", "price": 1}]}
    accuracy, diff, fields = field_accuracy(truth, output)
    # Tea/Tea and Cake/cake pair up: one changed price, and the unmatched Jam adds its 2 fields.
    assert (diff.changed, diff.added, diff.deleted, fields) == (1, 2, 0, 4)
    assert accuracy == pytest.approx(1 - 3 / 4)
    assert diff.correct == {"items[].name": 2, "items[].price": 1}
    assert leaf_paths(output) == {"items[].name": 3, "items[].price": 3}
    assert compare([1, 2, 2], [2, 1]).deleted == 1


# -- charts ---------------------------------------------------------------------------------------------

def test_chart_tables_match_columns_by_header_and_rows_by_content():
    truth = [["quarter", "value"], ["Q1", "12.5"], ["Q2", "15.0"], ["Q3", "9.8"], ["Q4", "18.2"]]
    output = [["Value", "Quarter"], ["18.2", "Q4"], ["12.9", "Q1"], ["15.0", "Q2"], ["9", "Q3"]]
    result = score_table(truth, output, tolerance=0.05)
    assert (result.header_matches, result.columns) == (2, 2)
    # 12.9 is within 5% of 12.5 (3.2%); 9 is not within 5% of 9.8 (8.2%): 7 of 8 cells agree.
    assert (result.correct_cells, result.cells, result.predicted_cells) == (7, 8, 8)
    assert score_table(truth, output, tolerance=0.0).correct_cells == 6
    assert score_table(truth, [], 0.05).correct_cells == 0


# -- line boxes -----------------------------------------------------------------------------------------

def test_icdar_lines_are_told_apart_and_boxes_matched_by_iou():
    icdar = "\ufeff10,10,110,10,110,30,10,30,TAN WOON YANN\n10,40,60,40,60,60,10,60,TOTAL: 9.00, CASH\n"
    assert is_icdar(icdar) and not is_icdar("12,5 is a number\nplain text\n")
    lines = parse_icdar(icdar)
    assert [l.text for l in lines] == ["TAN WOON YANN", "TOTAL: 9.00, CASH"] and lines[0].box == (10, 10, 110, 30)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    truth = [line.box for line in lines]
    assert box_hits(truth, [(12, 11, 108, 31), (200, 200, 210, 210)]) == 1   # second box misses the second line
    assert box_hits(truth, [(10, 10, 110, 30), (10, 10, 110, 30)]) == 1      # one-to-one: no double counting


# -- intervals ------------------------------------------------------------------------------------------

def test_pooled_summaries_and_seeded_paired_intervals():
    docs_a = [{"cer": 0.5, "chars": 10}, {"cer": 0.0, "chars": 30}, {"field_accuracy": 1.0}]
    assert stats.aggregate("cer", docs_a) == pytest.approx(5 / 40)
    a = [{"cer": 0.2 + 0.01 * i, "chars": 10} for i in range(20)]
    b = [{"cer": 0.1 + 0.01 * i, "chars": 10} for i in range(20)]
    interval = stats.paired_interval("cer", a, b, samples=500, seed=3)
    assert interval == stats.paired_interval("cer", a, b, samples=500, seed=3)      # seeded: repeatable
    assert interval[0] == pytest.approx(-0.1) and interval[1] == pytest.approx(-0.1)  # a constant difference
    assert stats.paired_interval("cer", a[:1], b[:1], 500, 3) is None


# -- olmOCR-bench ---------------------------------------------------------------------------------------

def test_olmocr_normalisation():
    assert normalise("**Bold**  and _it_<br/>“quoted” – ok") == 'Bold and it "quoted" - ok'


def test_near_matches_agree_with_brute_force():
    from rapidfuzz.distance import Levenshtein

    rng = random.Random(5)
    for _ in range(40):
        text = "".join(rng.choice("abc ") for _ in range(40))
        pattern = "".join(rng.choice("abc") for _ in range(6))
        for k in (1, 2):
            brute = sorted({s for s in range(len(text) + 1) for e in range(s, len(text) + 1)
                            if Levenshtein.distance(pattern, text[s:e]) <= k and e > s})
            assert near_match_starts(pattern, text, k) == brute
    assert near_match_starts("ab", "xabyab", 0) == [1, 4]


def test_tables_read_as_olmocr_reads_them():
    md = "| Year | Sales |\n|---|---|\n| 2023 | 4.5% |\n| 2024 | 2.4% |"
    grid = markdown_tables(md)[0]
    cell = next(c for c, t in grid.text.items() if t == "2.4%")
    assert {grid.text[c] for c in grid.neighbours(cell, "up")} == {"4.5%"}
    assert {grid.text[c] for c in grid.heading_cells(cell, "up")} == {"Sales"}
    html = ("<table><thead><tr><th rowspan=2>Region</th><th colspan=2>Sales</th></tr>"
            "<tr><th>2023</th><th>2024</th></tr></thead><tr><td>North</td><td>1</td><td>2<br>est.</td></tr></table>")
    grid = html_tables(html)[0]
    cell = next(c for c, t in grid.text.items() if t == "2\nest.")
    assert {grid.text[c] for c in grid.neighbours(cell, "left")} == {"1"}
    assert {grid.text[c] for c in grid.heading_cells(cell, "up")} == {"2024", "Sales"}
    assert {grid.text[c] for c in grid.neighbours((0, 1), "down")} == {"2023", "2024"}


def _recorded() -> dict[str, bool]:
    return {r["id"]: r["passed"] for r in json.loads((BENCH / "olmocr_scorer_results.json").read_text())["results"]}


def test_bench_checks_give_olmocr_scorers_results_test_for_test():
    truth = load_truth(BENCH)
    texts = {(base + ".pdf", page): repeats
             for base, pages in bench_page_texts(BENCH / "olmocr_pipeline").items() for page, repeats in pages.items()}
    results = run_tests(truth.bench, texts)
    recorded = _recorded()
    assert len(results) == len(recorded) == 120
    assert {r.test.id: r.passed for r in results} == recorded
    # olmOCR's score: the mean of the files' pass rates (dataset.jsonl 87/99, blanks.jsonl 1/1, baseline 19/20).
    assert score(results) == pytest.approx((87 / 99 + 1 + 19 / 20) / 3)


def test_bad_test_lines_are_refused_as_olmocr_refuses_them(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"pdf": "a.pdf", "page": 1, "id": "1", "type": "present", "text": "x"}\nnot json\n'
                    '{"pdf": "a.pdf", "page": 1, "id": "1", "type": "present", "text": "y"}\n'
                    '{"pdf": "a.pdf", "page": 1, "id": "2", "type": "order", "before": "ab", "after": "cd", '
                    '"max_diffs": 2}\n{"pdf": "a.pdf", "page": 1, "id": "3", "type": "footnote", "marker": "1"}\n')
    tests, bad = load_tests(path)
    assert [t.id for t in tests] == ["1"]
    assert [n for n, _ in bad] == [2, 3, 4, 5]
    assert re.search("not JSON", bad[0][1]) and "duplicate" in bad[1][1] and "not supported" in bad[3][1]
    with pytest.raises(ValueError):
        parse_test({"pdf": "a.pdf", "page": 0, "id": "x", "type": "baseline"}, "t.jsonl")
