"""Chart scoring: a truth table against an output table, columns matched by header, rows by best matching.

Columns are paired one-to-one by header similarity (rapidfuzz's ratio of the folded names, position breaking
ties), so a renamed or reordered column still lines up; `header_match` is the share of truth columns whose
paired header is equal after folding. Rows are then paired one-to-one by the number of agreeing cells (scipy's
linear_sum_assignment). A cell agrees when both read as numbers within the relative tolerance of the truth
(`--tolerance`, 5%), or as folded text. `cell_accuracy` = agreeing cells / truth cells (rows x columns: missed
rows and columns count as wrong); `cell_precision` = agreeing cells / output cells.
"""
from __future__ import annotations

from dataclasses import dataclass

from .values import fold_text, same_value

Table = list[list[str]]  # header row first


@dataclass(frozen=True)
class TableScore:
    header_matches: int
    columns: int
    correct_cells: int
    cells: int
    predicted_cells: int
    agreeing: frozenset = frozenset()  # (row, column) of the output's agreeing cells, header row 0


def score_table(truth: Table, predicted: Table, tolerance: float = 0.05) -> TableScore:
    """Compares two tables given as rows, the first of each being its header."""
    truth_header, *truth_rows = truth or [[]]
    if not predicted:
        return TableScore(0, len(truth_header), 0, len(truth_header) * len(truth_rows), 0)
    header, *rows = predicted
    columns = _pair_columns(truth_header, header)
    matched_headers = {(0, j) for i, j in columns.items() if fold_text(truth_header[i]) == fold_text(header[j])}
    agreeing = _agreeing_cells(truth_rows, rows, columns, tolerance)
    return TableScore(header_matches=len(matched_headers), columns=len(truth_header), correct_cells=len(agreeing),
                      cells=len(truth_header) * len(truth_rows), predicted_cells=len(header) * len(rows),
                      agreeing=frozenset(matched_headers | agreeing))


def _pair_columns(truth: list[str], predicted: list[str]) -> dict[int, int]:
    if not truth or not predicted:
        return {}
    import numpy as np
    from rapidfuzz import fuzz
    from scipy.optimize import linear_sum_assignment

    similarity = np.array([[fuzz.ratio(fold_text(t), fold_text(p)) / 100 + (0.01 if i == j else 0.0)
                            for j, p in enumerate(predicted)] for i, t in enumerate(truth)])
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return {int(i): int(j) for i, j in zip(rows, cols)}


def _agreeing_cells(truth_rows: Table, rows: Table, columns: dict[int, int], tolerance: float) -> set:
    """The output's cells (row from 1, column) that agree with the truth under the best pairing of rows."""
    if not truth_rows or not rows:
        return set()
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    def agree(t: list[str], p: list[str]) -> list[int]:
        return [j for i, j in columns.items() if i < len(t) and j < len(p) and same_value(t[i], p[j], tolerance)]

    pairs = [[agree(t, p) for p in rows] for t in truth_rows]
    counts = np.array([[len(cell) for cell in row] for row in pairs], dtype=float)
    matched_truth, matched_output = linear_sum_assignment(counts, maximize=True)
    return {(int(o) + 1, j) for t, o in zip(matched_truth, matched_output) for j in pairs[t][o]}


def parse_csv_tables(text: str) -> list[Table]:
    """The tables of a CSV file; several tables (one per chart, as `internvl chart` prints them on stdout) are
    separated by blank lines."""
    import csv
    import io

    tables, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return [[row for row in csv.reader(io.StringIO("\n".join(lines)))] for lines in tables]


def parse_markdown_tables(text: str) -> list[Table]:
    """Pipe tables of a Markdown file (as `internvl chart --format markdown` writes them)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in _split_pipes(stripped.strip("|"))]
            if not all(set(c) <= set("-: ") and c for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _split_pipes(row: str) -> list[str]:
    cells, cell, escaped = [], "", False
    for char in row:
        if char == "|" and not escaped:
            cells.append(cell)
            cell = ""
        else:
            cell += char
        escaped = char == "\\" and not escaped
    return cells + [cell]
