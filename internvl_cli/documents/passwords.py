"""Step 1 helper, PDF passwords: SASLprep (RFC 4013), which PDF 2.0 requires for AES-256 (revision 5/6) files.

PDF 2.0 (ISO 32000-2, 7.6.4.3.3) says the password of an AES-256 file is the UTF-8 encoding of the typed
text after the SASLprep profile of stringprep (RFC 3454), "using the Normalize and BiDi options". MuPDF
does not apply it: it hashes the bytes it is given, and also writes encrypted files from unprepared
passwords. So a reader has to try both forms: what was typed (files made by MuPDF and other tools that
skip the step) and the prepared form (files made by Acrobat and other conforming writers).

The implementation follows RFC 4013 with the Unicode 3.2 tables the RFC is defined on (Python's
`stringprep` module and `unicodedata.ucd_3_2_0`): map (B.1 to nothing, C.1.2 to SPACE), NFKC, prohibit
(C.1.2, C.2.1, C.2.2, C.3-C.9), check bidi (RFC 3454 section 6). A typed password is a "query" in the
RFC's terms, so unassigned code points (A.1) are allowed.
"""
from __future__ import annotations

import stringprep
import unicodedata


class SASLprepError(ValueError):
    """The text cannot be prepared: it holds a prohibited character or breaks the bidi rules."""


_PROHIBITED = (
    (stringprep.in_table_c12, "a non-ASCII space"),
    (stringprep.in_table_c21, "an ASCII control character"),
    (stringprep.in_table_c22, "a non-ASCII control character"),
    (stringprep.in_table_c3, "a private-use character"),
    (stringprep.in_table_c4, "a non-character code point"),
    (stringprep.in_table_c5, "a surrogate code point"),
    (stringprep.in_table_c6, "a character inappropriate for plain text"),
    (stringprep.in_table_c7, "a character inappropriate for canonical representation"),
    (stringprep.in_table_c8, "a character that changes display properties or is deprecated"),
    (stringprep.in_table_c9, "a tagging character"),
)


def saslprep(text: str, *, allow_unassigned: bool = True) -> str:
    """RFC 4013 SASLprep of `text`; raises SASLprepError when the result would hold prohibited output."""
    # 2.1 Mapping: non-ASCII spaces become SPACE, "commonly mapped to nothing" characters are dropped.
    mapped = "".join(" " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch))
    # 2.2 Normalization: Unicode 3.2 NFKC, the version stringprep's tables are defined on.
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    # 2.3 Prohibited output, 2.5 unassigned code points (only for stored strings).
    for ch in prepared:
        for in_table, what in _PROHIBITED:
            if in_table(ch):
                raise SASLprepError(f"U+{ord(ch):04X} is {what}")
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise SASLprepError(f"U+{ord(ch):04X} is unassigned in Unicode 3.2")
    _check_bidi(prepared)
    return prepared


def _check_bidi(text: str) -> None:
    """RFC 3454 section 6: right-to-left text holds no left-to-right character and starts and ends RTL."""
    if not any(stringprep.in_table_d1(ch) for ch in text):
        return
    if any(stringprep.in_table_d2(ch) for ch in text):
        raise SASLprepError("mixes right-to-left and left-to-right characters")
    if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
        raise SASLprepError("right-to-left text must start and end with a right-to-left character")


def password_candidates(password: str, revision: int | None) -> list[str]:
    """The passwords worth trying, in order: as typed, then (AES-256 files only) its SASLprep form if it differs."""
    candidates = [password]
    if revision is not None and revision >= 5:
        try:
            prepared = saslprep(password)
        except SASLprepError:
            return candidates  # no conforming writer could have used it; the typed bytes may still match
        if prepared != password:
            candidates.append(prepared)
    return candidates
