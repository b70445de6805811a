"""The flags records carry (what to check on a page or a document), one name each, shared by documents, engines
and tasks. README's flag lists are checked against this enum (tests/test_readme.py)."""
from __future__ import annotations

from enum import Enum


class Flag(str, Enum):
    """A record's flag. A str, so records serialise byte for byte as before (`"flags": ["truncated"]`) and compare
    equal to the plain strings read back from outputs."""

    # set by engines, on one answer
    TRUNCATED = "truncated"  # the answer hit --max-new-tokens or the end of the model's context
    REPETITION = "repetition"  # the model looped: the loop was cut (or a constrained answer wrapped up)
    CLOSED_EARLY = "closed-early"  # a constrained answer was steered to its shortest valid ending
    CONTEXT_FULL = "context-full"  # the prompt alone filled the context: no answer
    EMPTY_ANSWER = "empty-answer"  # a server answered nothing (null or empty content), twice
    # set by tasks
    RETRIED = "retried"  # a second attempt was made (a loop, or an answer the schema rejects)
    FAILED = "failed"  # the page could not be read or answered
    RAGGED_ROWS_DROPPED = "ragged-rows-dropped"  # chart: a row cut off mid-way was dropped
    WINDOWS_DROPPED = "windows-dropped"  # extract: a window's answer could not be merged into a valid record
    VOTED = "voted"  # extract: the record is the field-wise majority of several sampled answers
    BOX_REPAIRED = "box-repaired"  # ocr lines: a box with swapped corners or reaching off the page: ordered, clipped
    BOX_DROPPED = "box-dropped"  # ocr lines: a box missing, malformed, empty, off-page, overlapping or out of order
    BOXES_CAPPED = "boxes-capped"  # ocr lines: more lines than are grounded per page; the rest have no box
    # set by documents, on a page
    REPAIRED_PDF = "repaired-pdf"  # MuPDF repaired the file, or its page tree was rebuilt
    OVERSIZED_PAGE = "oversized-page"  # a PDF page over 200 inches
    TRUNCATED_IMAGE = "truncated-image"  # the image file was cut short: only its top part was read
    BROKEN_PAGE = "broken-page"  # the PDF's object for this page is missing or damaged

    # As the plain string everywhere: printed, formatted, hashed (a set may hold flags read back as text).
    __str__ = str.__str__
    __format__ = str.__format__
    __hash__ = str.__hash__
