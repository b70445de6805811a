"""OCR text metrics: the stated normalisation, then character and word error rates by Levenshtein distance.

Normalisation (README "Evaluation"): Unicode NFC; Markdown and HTML markup removed (page comments, headings,
emphasis, inline code, links and images keep their text, table pipes and separator rows, list bullets, quote
marks, tags); every run of whitespace becomes one space. Case and punctuation are kept: a wrong capital or a lost
comma is an error.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*(?:[-*+]|\d{1,3}[.)])[ \t]+", re.MULTILINE)
_QUOTE = re.compile(r"^[ \t]*>[ \t]?", re.MULTILINE)
_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*$", re.MULTILINE)
_HRULE = re.compile(r"^[ \t]*(?:[-*_][ \t]*){3,}$", re.MULTILINE)
_FENCE = re.compile(r"^[ \t]*(?:```|~~~)[^\n]*$", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~|`)(?=\S)(.+?)(?<=\S)\1", re.DOTALL)
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """The text that error rates are measured on (see the module docstring)."""
    text = unicodedata.normalize("NFC", text)
    text = _COMMENT.sub(" ", text)
    text = _BREAK.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _FENCE.sub(" ", text)
    text = _TABLE_RULE.sub(" ", text)
    text = _HRULE.sub(" ", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    previous = None
    while previous != text:  # nested emphasis (***bold italic***) unwraps one layer per pass
        previous, text = text, _EMPHASIS.sub(r"\2", text)
    text = text.replace("|", " ")
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class TextErrors:
    """Edit distances of a hypothesis from a reference, in characters and in words (both normalised)."""

    char_edits: int
    chars: int
    word_edits: int
    words: int

    @property
    def cer(self) -> float:
        return _rate(self.char_edits, self.chars)

    @property
    def wer(self) -> float:
        return _rate(self.word_edits, self.words)


def _rate(edits: int, length: int) -> float:
    # An empty reference: any output is all insertions, counted against a length of one.
    return edits / max(length, 1)


def text_errors(reference: str, hypothesis: str) -> TextErrors:
    """Levenshtein distances (rapidfuzz) between the normalised texts, over characters and over words."""
    from rapidfuzz.distance import Levenshtein

    ref, hyp = normalise_text(reference), normalise_text(hypothesis)
    ref_words, hyp_words = ref.split(), hyp.split()
    return TextErrors(char_edits=Levenshtein.distance(ref, hyp), chars=len(ref),
                      word_edits=Levenshtein.distance(ref_words, hyp_words), words=len(ref_words))


def text_similarity(reference: str, hypothesis: str) -> float:
    """The omni benchmark's text score: 1 - Levenshtein distance / the longer length, on trimmed lower-case text."""
    from rapidfuzz.distance import Levenshtein

    if reference == hypothesis:
        return 1.0
    ref, hyp = reference.strip().lower(), hypothesis.strip().lower()
    if not reference or not hypothesis:
        return 0.0
    longest = max(len(ref), len(hyp))
    return 1.0 - Levenshtein.distance(ref, hyp) / longest if longest else 1.0
