"""Extracted values compared after normalisation: numbers by value, dates as dates, strings case- and space-folded.

A string that reads as a number (`"1,234.50"`, `"€ 3.50"`, `"12 %"`) equals that number; a string that reads as
a date in a common form (`2024-03-15`, `15.03.2024`, `15 March 2024`, `March 15, 2024`, `03/15/2024`) equals
the same date written another way (a slash date like `03/04/2024` may be either day or month first, and matches
both readings); other strings compare with case folded and runs of whitespace made one space.
"""
from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime

_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_CURRENCY = "$€£¥₹"
_MONTH_FORMATS = ("%d %B %Y", "%d %b %Y", "%B %d %Y", "%b %d %Y", "%d-%b-%Y", "%d-%B-%Y", "%B %Y")
_NUMERIC_DATE = re.compile(r"(\d{1,4})([./-])(\d{1,2})\2(\d{1,4})")


def as_number(value: object) -> float | None:
    """The number a value stands for, or None (booleans are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip().strip(_CURRENCY).strip()
    text = text[:-1].strip() if text.endswith("%") else text
    text = text.strip(_CURRENCY).strip()
    if not _NUMBER.fullmatch(text):
        return None
    return float(text.replace(",", ""))


def as_dates(value: object) -> frozenset[date]:
    """Every date a string may stand for (two for an ambiguous slash date), or none."""
    if not isinstance(value, str):
        return frozenset()
    text = " ".join(value.replace(",", " ").split())
    if not text or len(text) > 40:
        return frozenset()
    try:
        return frozenset({datetime.fromisoformat(text).date()})
    except ValueError:
        pass
    for fmt in _MONTH_FORMATS:
        try:
            return frozenset({datetime.strptime(text, fmt).date()})
        except ValueError:
            continue
    match = _NUMERIC_DATE.fullmatch(text)
    if not match:
        return frozenset()
    a, separator, b, c = match.group(1), match.group(2), int(match.group(3)), match.group(4)
    if len(a) == 4:  # 2024/03/15
        return _dates((int(a), b, int(c)))
    year = int(c) + (2000 if len(c) == 2 else 0)
    if separator == ".":  # 15.03.2024 is day first wherever dots are used
        return _dates((year, b, int(a)))
    return _dates((year, b, int(a)), (year, int(a), b))


def _dates(*candidates: tuple[int, int, int]) -> frozenset[date]:
    found = set()
    for year, month, day in candidates:
        try:
            found.add(date(year, month, day))
        except ValueError:
            continue
    return frozenset(found)


def fold_text(value: str) -> str:
    """Case- and space-folded NFC text."""
    return " ".join(unicodedata.normalize("NFC", value).casefold().split())


def same_value(truth: object, predicted: object, tolerance: float = 0.0) -> bool:
    """Whether two scalar values agree after normalisation; numbers within `tolerance` (relative to the truth)."""
    if truth is None or predicted is None:
        return truth is None and predicted is None
    if isinstance(truth, bool) or isinstance(predicted, bool):
        return fold_text(str(truth)) == fold_text(str(predicted))  # True equals "true", never 1
    a, b = as_number(truth), as_number(predicted)
    if a is not None and b is not None:
        return abs(a - b) <= tolerance * abs(a) + 1e-9 * max(1.0, abs(a))
    dates_a, dates_b = as_dates(truth), as_dates(predicted)
    if dates_a and dates_b:
        return bool(dates_a & dates_b)
    return fold_text(str(truth)) == fold_text(str(predicted))
