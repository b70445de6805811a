"""olmOCR-bench: its JSONL unit tests per page (present, absent, order, table, math, baseline), checked on OCR text
the way its own scorer checks them, and scored as it scores them.

Text is normalised first (`normalise`): `<br>` to a space, Markdown bold and italics and `<b>`/`<i>` tags
removed, whitespace runs to one space, Unicode NFC, typographic quotes, dashes and the micro sign to their ASCII
(or Greek mu) forms. `present`/`absent`: rapidfuzz's partial_ratio of the text against the page (case-folded
when `case_sensitive` is false; within `first_n`/`last_n` characters when given) reaches 1 - max_diffs/len.
`order`: some match of `before` starts before some match of `after`, each within `max_diffs` edits (exact
substrings when 0). `table`: some cell of some table (`bench_tables`) matches `cell` (ratio >= max(0.5,
1 - max_diffs/len)) and every neighbour named (up, down, left, right, top_heading, left_heading) matches too.
`math`: an equation of the page ($...$, $$...$$, \\(...\\), \\[...\\]) equals the test's LaTeX, or holds it as
a run of symbols (spacing, sizing and grouping tokens dropped): olmOCR renders both with KaTeX in a browser and
compares the symbols' positions, which needs a browser; this is the stated approximation. `baseline`: the page
has alphanumeric text (or at most `max_length` characters of it, for blank pages), does not end in an n-gram
(n <= 5) repeated more than `max_repeats` (30) times, and holds no CJK characters or emoji.

A test's result over a page's repeats (`{pdf}_pg{N}_repeat{k}.md`) is the share of repeats passing; it passes
when more than half do. The score is the mean over test files of each file's pass rate, a baseline test per PDF
without one forming the file `baseline`, with a bootstrapped interval resampling within each file.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from .bench_tables import Grid, html_tables, markdown_tables

TEST_TYPES = ("present", "absent", "order", "table", "math", "baseline")
_REPLACEMENTS = str.maketrans({"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "＿": "_",
                               "–": "-", "—": "-", "‑": "-", "‒": "-", "−": "-", "\u00b5": "\u03bc"})
_TABLE_KEYS = ("up", "down", "left", "right", "top_heading", "left_heading")
_DISALLOWED = re.compile("[\u4e00-\u9fff\u3040-\u309f\u30a0-\u30ff\U0001f600-\U0001f64f\U0001f300-\U0001f5ff"
                         "\U0001f680-\U0001f6ff\U0001f1e0-\U0001f1ff]")


def normalise(text: str) -> str:
    text = re.sub(r"<br/?>", " ", text)
    text = re.sub(r"\*\*(.*?)\*\*", r"\1", text)
    text = re.sub(r"__(.*?)__", r"\1", text)
    text = re.sub(r"</?[bi]>", "", text)
    text = re.sub(r"(\*\*|__)(.*?)\1", r"\2", text)
    text = re.sub(r"(\*|_)(.*?)\1", r"\2", text)
    text = re.sub(r"\s+", " ", text)
    return unicodedata.normalize("NFC", text).translate(_REPLACEMENTS)


@dataclass
class BenchTest:
    """One olmOCR-bench test: which page it is about, its type and its fields (texts already normalised)."""

    id: str
    pdf: str
    page: int
    type: str
    source: str  # the JSONL file it came from ("baseline" for the one added per PDF)
    spec: dict = field(default_factory=dict)

    def check(self, content: str) -> tuple[bool, str]:
        """(passed, why not) on one page's text."""
        return _CHECKS[self.type](self.spec, content)


class BadTest(ValueError):
    """A test line that olmOCR's loader would refuse."""


def load_tests(path: Path) -> tuple[list[BenchTest], list[tuple[int, str]]]:
    """The tests of a JSONL file, and (line number, reason) for each line that is not a valid test."""
    tests, bad, seen = [], [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            test = parse_test(json.loads(line), path.name)
        except (json.JSONDecodeError, BadTest, TypeError, ValueError) as error:
            bad.append((number, _reason(error)))
            continue
        if test.id in seen:
            bad.append((number, f"duplicate test id {test.id!r}"))
            continue
        seen.add(test.id)
        tests.append(test)
    return tests, bad


def _reason(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"not JSON ({error.msg}, column {error.colno})"
    return str(error)


def parse_test(data: dict, source: str) -> BenchTest:
    if not isinstance(data, dict):
        raise BadTest("a test must be a JSON object")
    kind = data.get("type")
    if kind not in TEST_TYPES:
        raise BadTest(f"test type {kind!r} is not supported (supported: {', '.join(TEST_TYPES)})")
    if not data.get("pdf") or not data.get("id"):
        raise BadTest("a test needs its pdf and id")
    max_diffs = data.get("max_diffs", 0)
    if not isinstance(max_diffs, int) or isinstance(max_diffs, bool) or max_diffs < 0:
        raise BadTest("max_diffs must be a whole number >= 0")
    spec = dict(data, max_diffs=max_diffs)
    for key in {"present": ("text",), "absent": ("text",), "order": ("before", "after"),
                "table": ("cell",) + _TABLE_KEYS}.get(kind, ()):
        spec[key] = normalise(str(spec.get(key) or ""))
    if kind in ("present", "absent") and not spec["text"].strip():
        raise BadTest("the text to look for is empty")
    if kind == "order":
        if not spec["before"].strip() or not spec["after"].strip():
            raise BadTest("before and after must not be empty")
        if max_diffs > len(spec["before"]) // 2 or max_diffs > len(spec["after"]) // 2:
            raise BadTest("max_diffs is more than half of before or after")
    if kind == "math" and not str(spec.get("math") or "").strip():
        raise BadTest("the math expression is empty")
    page = data.get("page")
    if not isinstance(page, int) or isinstance(page, bool) or page < 1:
        raise BadTest("page must be a page number from 1")
    return BenchTest(id=str(data["id"]), pdf=str(data["pdf"]), page=page, type=kind, source=source, spec=spec)


def baseline_test(pdf: str) -> BenchTest:
    """The test olmOCR adds for a PDF that has no baseline test of its own."""
    return BenchTest(id=f"{pdf}_baseline", pdf=pdf, page=1, type="baseline", source="baseline", spec={})


# -- the checks ---------------------------------------------------------------------------------------


def _threshold(max_diffs: int, text: str) -> float:
    return 1.0 - max_diffs / (len(text) or 1)


def _presence(spec: dict, content: str) -> tuple[bool, str]:
    from rapidfuzz import fuzz

    query, content = spec["text"], normalise(content)
    if spec.get("case_sensitive", True) is False:
        query, content = query.lower(), content.lower()
    first, last = spec.get("first_n"), spec.get("last_n")
    if first and last:
        content = content[:first] + content[-last:]
    elif first:
        content = content[:first]
    elif last:
        content = content[-last:]
    threshold = _threshold(spec["max_diffs"], query)
    ratio = fuzz.partial_ratio(query, content) / 100.0
    found = ratio >= threshold
    if spec["type"] == "present":
        return found, "" if found else f"'{query[:40]}' not found (best match {ratio:.3f} < {threshold:.3f})"
    return not found, "" if not found else f"'{query[:40]}' found (match {ratio:.3f} >= {threshold:.3f})"


def _order(spec: dict, content: str) -> tuple[bool, str]:
    content, k = normalise(content), spec["max_diffs"]
    before, after = near_match_starts(spec["before"], content, k), near_match_starts(spec["after"], content, k)
    if not before:
        return False, f"'{spec['before'][:40]}' not found"
    if not after:
        return False, f"'{spec['after'][:40]}' not found"
    if min(before) < max(after):
        return True, ""
    return False, f"'{spec['before'][:40]}' does not come before '{spec['after'][:40]}'"


def near_match_starts(pattern: str, text: str, max_edits: int) -> list[int]:
    """Where substrings of `text` within `max_edits` Levenshtein edits of `pattern` start (all exact occurrences
    when 0). Semi-global edit distance over the reversed strings, one vectorised row per pattern character."""
    if max_edits == 0:
        starts, at = [], text.find(pattern)
        while at >= 0:
            starts.append(at)
            at = text.find(pattern, at + 1)
        return starts
    import numpy as np

    reversed_text = np.frombuffer(text[::-1].encode("utf-32-le"), dtype=np.uint32)
    n = len(reversed_text)
    positions = np.arange(n + 1)
    row = np.zeros(n + 1, dtype=np.int64)  # a match may begin anywhere: no cost before it
    for i, char in enumerate(pattern[::-1], start=1):
        best = np.empty(n + 1, dtype=np.int64)
        best[0] = i
        best[1:] = np.minimum(row[:-1] + (reversed_text != ord(char)), row[1:] + 1)
        row = positions + np.minimum.accumulate(best - positions)  # insertions along the text
    ends = np.nonzero(row <= max_edits)[0]
    return sorted(int(n - end) for end in ends if end > 0)


def _table(spec: dict, content: str) -> tuple[bool, str]:
    from rapidfuzz import fuzz

    tables = ([] if spec.get("ignore_markdown_tables") else markdown_tables(content)) + html_tables(content)
    if not tables:
        return False, "no tables found"
    k = spec["max_diffs"]
    target = spec["cell"]
    threshold = max(0.5, _threshold(k, target))
    for grid in tables:
        for cell, text in grid.text.items():
            if fuzz.ratio(target, normalise(text)) / 100.0 >= threshold and _relations_hold(spec, grid, cell, k):
                return True, ""
    return False, f"no cell '{target[:40]}' with the stated neighbours"


def _relations_hold(spec: dict, grid: Grid, cell, max_diffs: int) -> bool:
    from rapidfuzz import fuzz

    for key in _TABLE_KEYS:
        wanted = spec.get(key)
        if not wanted:
            continue
        if key == "top_heading":
            others = grid.heading_cells(cell, "up")
        elif key == "left_heading":
            others = grid.heading_cells(cell, "left")
        else:
            others = grid.neighbours(cell, key)
        threshold = max(0.5, _threshold(max_diffs, wanted))
        if not any(fuzz.ratio(wanted, normalise(grid.text[o])) / 100.0 >= threshold for o in others):
            return False
    return True


_EQUATIONS = (r"\\\((.+?)\\\)", r"\\\[(.+?)\\\]", r"\$\$(.+?)\$\$", r"\$(.+?)\$")
_LATEX_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|\S")
# What renders as nothing of its own: grouping, sizing, spacing, and font or text commands (KaTeX draws
# `\\mathcal{I}`, `\\text{Ann}` and `\\operatorname{Ann}` as the letters themselves).
_LATEX_NOISE = {"{", "}", "\\left", "\\right", "\\middle", "\\big", "\\Big", "\\bigg", "\\Bigg", "\\bigl",
                "\\bigr", "\\Bigl", "\\Bigr", "\\biggl", "\\biggr", "\\displaystyle", "\\textstyle", "\\limits",
                "\\,", "\\;", "\\:", "\\!", "\\ ", "\\quad", "\\qquad", "~", "\\mathrm", "\\mathit", "\\mathbf",
                "\\mathcal", "\\mathbb", "\\mathsf", "\\mathtt", "\\mathfrak", "\\mathscr", "\\boldsymbol", "\\bm",
                "\\text", "\\textrm", "\\textbf", "\\textit", "\\operatorname", "\\rm", "\\bf", "\\it", "\\cal"}
# Commands KaTeX draws as their letters (`\\sin` is "sin"), and the prime written as an apostrophe.
_LATEX_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
                "log", "ln", "lg", "exp", "lim", "liminf", "limsup", "max", "min", "sup", "inf", "det", "dim",
                "ker", "hom", "deg", "arg", "gcd", "Pr"}


def equations(content: str) -> list[str]:
    """The equations of a page, each delimiter in turn, as olmOCR finds them."""
    found = []
    for pattern in _EQUATIONS:
        found += [match.strip() for match in re.findall(pattern, content, flags=re.DOTALL)]
        content = re.sub(pattern, "", content, flags=re.DOTALL)
    return found


def latex_symbols(latex: str) -> list[str]:
    """The symbols an equation draws, in order, with what draws nothing of its own left out."""
    symbols = []
    for token in _LATEX_TOKEN.findall(latex):
        if token in _LATEX_NOISE:
            continue
        if token == "'":
            symbols += ["^", "\\prime"]
        elif token[1:] in _LATEX_WORDS and token.startswith("\\"):
            symbols += list(token[1:])
        else:
            symbols.append(token)
    return symbols


def _math(spec: dict, content: str) -> tuple[bool, str]:
    math = str(spec["math"])
    found = equations(content)
    if math in found:
        return True, ""
    wanted = latex_symbols(math)
    for equation in found:
        symbols = latex_symbols(equation)
        if any(symbols[i:i + len(wanted)] == wanted for i in range(len(symbols) - len(wanted) + 1)):
            return True, ""
    return False, f"no equation holding {math[:40]}"


def _baseline(spec: dict, content: str) -> tuple[bool, str]:
    length = len("".join(c for c in content if c.isalnum()).strip())
    if spec.get("max_length") is not None:
        if spec.get("max_length_skips_image_alt_tags"):
            length = len("".join(c for c in re.sub(r"!\[.*?\]\(.*?\)", "", content) if c.isalnum()).strip())
        ok = length <= spec["max_length"]
        return ok, "" if ok else f"{length} characters on a page expected to be blank"
    if length == 0:
        return False, "no alphanumeric characters"
    limit = spec.get("max_repeats", 30)
    for size, count in enumerate(_ending_repeats(content, 5), start=1):
        if count > limit:
            return False, f"ends with {count} repeats of a {size}-gram"
    if spec.get("check_disallowed_characters", True) and _DISALLOWED.search(content):
        return False, "holds disallowed characters (CJK or emoji)"
    return True, ""


def _ending_repeats(content: str, largest: int) -> list[int]:
    """For n = 1..largest: how many times the text's last n characters repeat back to back at its end."""
    text = re.sub(r"\s+", " ", content)
    counts = []
    for size in range(1, largest + 1):
        if len(text) < size:
            counts.append(0)
            continue
        tail, count, at = text[-size:], 0, len(text) - size
        while at >= 0 and text[at:at + size] == tail:
            count += 1
            at -= size
        counts.append(count)
    return counts


_CHECKS = {"present": _presence, "absent": _presence, "order": _order, "table": _table, "math": _math,
           "baseline": _baseline}


# -- scoring ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    test: BenchTest
    share: float      # of the page's repeats that passed (0 when the page has no output)
    why: str          # the first failure's reason, or "" / "no output for this page"

    @property
    def passed(self) -> bool:
        return self.share > 0.5


def run_tests(tests: list[BenchTest], page_texts: dict[tuple[str, int], list[str]]) -> list[TestResult]:
    """Each test on every repeat of its page; `page_texts` maps (pdf, page) to the repeats' texts."""
    results = []
    for test in tests:
        repeats = page_texts.get((test.pdf, test.page), [])
        if not repeats:
            results.append(TestResult(test, 0.0, "no output for this page"))
            continue
        outcomes = [test.check(text) for text in repeats]
        passes = sum(ok for ok, _ in outcomes)
        why = next((reason for ok, reason in outcomes if not ok), "")
        results.append(TestResult(test, passes / len(outcomes), why))
    return results


def score(results: list[TestResult]) -> float:
    """olmOCR-bench's score: the mean over test files of each file's pass rate."""
    by_file: dict[str, list[bool]] = {}
    for result in results:
        by_file.setdefault(result.test.source, []).append(result.passed)
    return sum(sum(v) / len(v) for v in by_file.values()) / len(by_file) if by_file else 0.0
