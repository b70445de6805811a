"""Schema formats, string formats for extract: the grammar's pattern for each JSON Schema format and the format checker.

Every pattern here is a conservative subset of what the format's checker accepts (jsonschema's checkers,
with its `format-nongpl` extras): whatever the grammar lets the model write under `format` is a valid
value. The patterns use only the regex features that llguidance and Python's `re` read alike (classes,
groups, alternation, bounded repeats), so they also serve as the checker of last resort for a format
whose checker library is missing from a broken install.
"""
from __future__ import annotations

import re
from typing import Any

import jsonschema

# Calendar dates with leap years (jsonschema's `date` checker uses datetime.date): years 0001-9999.
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    rf"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
# RFC 3339 times as rfc3339-validator reads them: no leap seconds (it refuses :60 at any time of day).
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
# RFC 3339 appendix A durations, no gaps between the units (P1Y1D is not one); numbers bounded.
_N = r"[0-9]{1,6}"
_DUR_TIME = rf"T(?:{_N}H(?:{_N}M(?:{_N}S)?)?|{_N}M(?:{_N}S)?|{_N}S)"
_DURATION = (
    rf"P(?:(?:{_N}Y(?:{_N}M(?:{_N}D)?)?|{_N}M(?:{_N}D)?|{_N}D)(?:{_DUR_TIME})?|{_DUR_TIME}|{_N}W)"
)
# Host names: up to 4 labels of at most 62 characters (so at most 251 in all, under RFC 1035's 253),
# letters, digits and single inner hyphens (IDNA refuses "--" in the third and fourth place).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,60}[A-Za-z0-9])?"
_HOSTNAME = rf"{_LABEL}(?:\.{_LABEL}){{0,3}}"
_IDN_LABEL = r"[a-z0-9]{1,20}(?:-[a-z0-9]{1,20}){0,2}"
_IDN_HOSTNAME = rf"{_IDN_LABEL}(?:\.{_IDN_LABEL}){{0,3}}"
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_EMAIL = rf"{_ATEXT}{{1,32}}(?:\.{_ATEXT}{{1,32}}){{0,3}}@{_HOSTNAME}"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = r"[0-9a-fA-F]{1,4}"
_IPV6 = "|".join([
    rf"(?:{_H}:){{7}}{_H}", rf"(?:{_H}:){{1,7}}:", rf"(?:{_H}:){{1,6}}:{_H}", rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
    rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}", rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}",
    rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}", rf"{_H}:(?::{_H}){{1,6}}", rf":(?::{_H}){{1,7}}", "::",
])
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# URIs: scheme://host[:port]/path?query#fragment in RFC 3986's unreserved, sub-delims and %XX only.
_PCHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-F]{2})"
_QUERY = rf"(?:{_PCHAR}|[/?])"
_TAIL = rf"(?:\?{_QUERY}{{0,200}})?(?:#{_QUERY}{{0,200}})?"
_URI = rf"[a-z][a-z0-9+.-]{{0,15}}://{_HOSTNAME}(?::[0-9]{{1,5}})?(?:/{_PCHAR}{{0,60}}){{0,12}}{_TAIL}"
_URI_REFERENCE = rf"(?:{_URI}|(?:/{_PCHAR}{{1,60}}){{1,12}}{_TAIL}|#{_QUERY}{{0,200}})"
_VARSPEC = r"[A-Za-z0-9_]{1,20}(?::[1-9][0-9]{0,2}|\*)?"  # uri_template takes prefixes below 1000
_URI_TEMPLATE = (
    rf"(?:[A-Za-z0-9._~:/?#@!$&()*+,;=-]|%[0-9A-F]{{2}}|\{{[+#./;?&]?{_VARSPEC}(?:,{_VARSPEC}){{0,3}}\}})"
    r"{0,100}"
)
_POINTER = r"(?:/(?:[^~/]|~[01]){0,60}){0,12}"
# jsonschema refuses a 0 anywhere after the first digit (it reads "10" as a leading zero): so do we
_RELATIVE_POINTER = rf"(?:0|[1-9]{{1,6}})(?:#|{_POINTER})"
# Regular expressions: literals, escaped metacharacters, \d \w \s and '.', each optionally quantified.
_REGEX = r"(?:(?:[A-Za-z0-9 _-]|\\[.*+?()\[\]{}|^$\\/dws]|\.)[*+?]?){0,40}"

PATTERNS: dict[str, str] = {
    "date": _DATE, "time": _TIME, "date-time": rf"{_DATE}T{_TIME}", "duration": _DURATION,
    "email": _EMAIL, "idn-email": _EMAIL, "hostname": _HOSTNAME, "idn-hostname": _IDN_HOSTNAME,
    "ipv4": _IPV4, "ipv6": _IPV6, "uuid": _UUID,
    "uri": _URI, "iri": _URI, "uri-reference": _URI_REFERENCE, "iri-reference": _URI_REFERENCE,
    "uri-template": _URI_TEMPLATE, "json-pointer": _POINTER, "relative-json-pointer": _RELATIVE_POINTER,
    "regex": _REGEX,
}

# The formats each draft defines; a format outside its draft's list is an annotation (neither enforced nor checked).
_COMMON = frozenset(PATTERNS) - {"duration", "uuid"}
DRAFT_FORMATS: dict[str, frozenset[str]] = {
    "draft6": frozenset({"date-time", "email", "hostname", "ipv4", "ipv6", "uri", "uri-reference", "uri-template",
                         "json-pointer"}),
    "draft7": _COMMON,
    "draft2019-09": frozenset(PATTERNS),
    "draft2020-12": frozenset(PATTERNS),
}


def grammar_pattern(fmt: str) -> str:
    """The anchored pattern the grammar uses for a known format."""
    return f"^(?:{PATTERNS[fmt]})$"


def _pattern_check(fmt: str):
    compiled = re.compile(grammar_pattern(fmt))

    def check(instance: Any) -> bool:
        return not isinstance(instance, str) or compiled.fullmatch(instance) is not None

    return check


def format_checker(validator_class: type, draft: str) -> jsonschema.FormatChecker:
    """The validator's own format checker, completed: a format of the draft whose checking library is not
    installed is checked against its grammar pattern (stricter, never laxer), so no install trusts a format."""
    checker = jsonschema.FormatChecker(())
    checker.checkers = dict(validator_class.FORMAT_CHECKER.checkers)  # the draft's own functions (names clash)
    for fmt in sorted(DRAFT_FORMATS.get(draft, frozenset()) - set(checker.checkers)):
        checker.checks(fmt)(_pattern_check(fmt))
    return checker


def missing_checkers(validator_class: type, draft: str) -> list[str]:
    """Formats of the draft that jsonschema cannot check in this install (checked by pattern instead)."""
    return sorted(DRAFT_FORMATS.get(draft, frozenset()) - set(validator_class.FORMAT_CHECKER.checkers))
