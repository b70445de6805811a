"""SASLprep (RFC 4013) for AES-256 PDF passwords: the RFC's own examples, the tables it names, and which forms are tried."""
from __future__ import annotations

import unicodedata

import pytest

from internvl_cli.documents.passwords import SASLprepError, password_candidates, saslprep


@pytest.mark.parametrize("typed,prepared", [
    ("I\u00adX", "IX"),        # RFC 4013 section 3, example 1: SOFT HYPHEN mapped to nothing
    ("user", "user"),          # 2: no transformation
    ("USER", "USER"),          # 3: case preserved
    ("\u00aa", "a"),           # 4: FEMININE ORDINAL INDICATOR, NFKC
    ("\u2168", "IX"),          # 5: ROMAN NUMERAL NINE, NFKC
    ("a\u00a0b\u3000c", "a b c"),          # C.1.2 non-ASCII spaces become SPACE
    ("pa\u0308ssword", "p\u00e4ssword"),   # NFD input composes
    ("x\u200by\ufeffz", "xyz"),            # B.1 zero-width space and BOM vanish
])
def test_rfc_4013_mapping_and_normalisation(typed, prepared):
    assert saslprep(typed) == prepared


@pytest.mark.parametrize("text,fragment", [
    ("\u0007", "ASCII control"),                  # RFC 4013 example 6
    ("\u0627\u0031", "right-to-left"),            # example 7: RTL must start and end RTL
    ("\u0627a\u0628", "mixes"),                   # RandALCat with LCat
    ("a\ue000", "private-use"),                   # C.3
    ("a\ufffe", "non-character"),                 # C.4
    ("a\u200e", "display properties"),            # C.8 LEFT-TO-RIGHT MARK
    ("a\U000e0001", "tagging"),                   # C.9
    ("a\x85", "non-ASCII control"),               # C.2.2
])
def test_prohibited_output_and_bidi_are_refused(text, fragment):
    with pytest.raises(SASLprepError, match=fragment):
        saslprep(text)


def test_right_to_left_passwords_pass_when_well_formed():
    assert saslprep("\u0627\u0031\u0628") == "\u0627\u0031\u0628"


def test_unassigned_code_points_are_allowed_in_queries_only():
    unassigned = "\u0221"  # unassigned in Unicode 3.2, the version stringprep's tables use
    assert saslprep(unassigned) == unassigned
    with pytest.raises(SASLprepError, match="unassigned"):
        saslprep(unassigned, allow_unassigned=False)


def test_candidates_try_the_typed_form_first_and_the_prepared_form_only_for_aes_256():
    decomposed = unicodedata.normalize("NFD", "p\u00e4ssw\u00f6rd")
    assert password_candidates(decomposed, 6) == [decomposed, "p\u00e4ssw\u00f6rd"]
    assert password_candidates(decomposed, 5) == [decomposed, "p\u00e4ssw\u00f6rd"]
    assert password_candidates(decomposed, 4) == [decomposed]  # RC4/AES-128: PDFDocEncoding, no SASLprep
    assert password_candidates(decomposed, None) == [decomposed]
    assert password_candidates("plain", 6) == ["plain"]
    assert password_candidates("bell\u0007", 6) == ["bell\u0007"]  # not preparable: only as typed
