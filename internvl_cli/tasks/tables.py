"""Step 4g, chart tables, engine-neutral: the rectangular-CSV grammar text, parsing, and number normalising."""
from __future__ import annotations

import csv
import io
import re
from typing import Sequence

def table_grammar(max_columns: int = 16, max_rows: int = 200, max_cell_chars: int = 64) -> str:
    """Lark grammar (llguidance dialect) for a rectangular CSV table: a header and 1..max_rows data rows.

    Rectangularity is structural: one alternative per column count k, and inside it every line is
    the same k-cell terminal, so a row with a different cell count cannot be generated. Cells are
    bare (no quote or comma) or double-quoted CSV fields ("" escapes a quote), at most
    max_cell_chars characters, and never hold control characters or line separators, so a row is
    one line. A one-column row must not be empty (an empty line reads back as a row with no cells).

    Shaped for llguidance's Earley parser with 150k-token vocabularies, where thousands of tokens
    hold a newline and so cross a row boundary in every mask: a row is one regex terminal (cell and
    comma rules overflow the 50k-item limit at once), and the row count is a left-recursive chain
    `rows_n: rows_(n-1) NL ROW` (`x{1,n}` or right recursion cost O(rows) items per crossing and
    overflow after a few rows).
    """
    if not (1 <= max_columns and 1 <= max_rows and 1 <= max_cell_chars):
        raise ValueError("max_columns, max_rows and max_cell_chars must be positive")
    lines = ["start: " + " | ".join(f"table{k}" for k in range(1, max_columns + 1)), 'NL: "\\n"']
    for k in range(1, max_columns + 1):
        lines += _table_rules(k, max_rows, max_cell_chars)
    return "\n".join(lines)


def _table_rules(k: int, max_rows: int, max_cell_chars: int) -> list[str]:
    """The rules of a k-column table: header, then body{k} = 1..max_rows data rows."""
    # no control characters (newlines included) or Unicode line/paragraph separators in any cell
    bare = f'[^",\\p{{Cc}}\\p{{Zl}}\\p{{Zp}}]{{1,{max_cell_chars}}}'
    quoted = f'"(?:[^"\\p{{Cc}}\\p{{Zl}}\\p{{Zp}}]|""){{0,{max_cell_chars}}}"'
    cell = f"(?:{bare}|{quoted})"
    row = cell if k == 1 else f"{cell}?(?:,{cell}?){{{k - 1}}}"
    rules = [
        f"ROW{k}: /{row}/",
        f"table{k}: ROW{k} NL body{k} NL?",
        f"body{k}: " + " | ".join(f"rows{k}_{n}" for n in range(1, max_rows + 1)),
        f"rows{k}_1: ROW{k}",
    ]
    return rules + [f"rows{k}_{n}: rows{k}_{n - 1} NL ROW{k}" for n in range(2, max_rows + 1)]


def parse_table(text: str) -> list[list[str]]:
    """CSV text -> rows of cells (csv module rules), blank lines dropped, cells stripped of outer spaces."""
    reader = csv.reader(io.StringIO(text.strip("\r\n")))
    return [[cell.strip() for cell in row] for row in reader if row]


def is_rectangular(rows: Sequence[Sequence[str]]) -> bool:
    """True when there is a header and every row has the header's number of cells."""
    return bool(rows) and all(len(row) == len(rows[0]) for row in rows)


_CURRENCY = "€$£¥₹₩₽"
_NUMBER_CELL = re.compile(
    rf"""^\s*
    (?P<sign1>[-+−])?\s*
    (?:[{_CURRENCY}]|[A-Z]{{3}}(?=[\s\d]))?\s*
    (?P<sign2>[-+−])?
    (?P<int>\d{{1,3}}(?:(?P<sep>[,\u00a0\u202f\u2009 ])\d{{3}})?(?:(?P=sep)\d{{3}})*|\d+)
    (?P<frac>\.\d+)?
    \s*(?:%|[{_CURRENCY}]|[A-Z]{{3}})?\s*$""",
    re.VERBOSE,
)


def normalise_number(cell: str) -> str:
    """One cell: the bare number if the cell is clearly numeric, else the cell unchanged.

    Clearly numeric = an optional sign, an optional currency symbol or 3-letter code (before or
    after), digits with optional thousands separators (',' or a space, in groups of exactly three,
    used consistently), an optional '.' decimal part, and an optional trailing '%'. Result: the
    sign ('-' only) and the digits with '.' decimals, e.g. "1,234.5" -> "1234.5", "12 %" -> "12",
    "€ 3.50" -> "3.50", "−7" -> "-7". A decimal comma ("3,50") is ambiguous and left as is.
    """
    match = _NUMBER_CELL.match(cell)
    if not match or (match["sign1"] and match["sign2"]):
        return cell
    negative = (match["sign1"] or match["sign2"]) in ("-", "−")
    digits = re.sub(r"\D", "", match["int"])
    return ("-" if negative else "") + digits + (match["frac"] or "")


def normalise_numbers(rows: list[list[str]], header: bool = True) -> list[list[str]]:
    """normalise_number on every data cell; the header row (if `header`) is left untouched."""
    start = 1 if header else 0
    return [list(row) for row in rows[:start]] + [[normalise_number(c) for c in row] for row in rows[start:]]


