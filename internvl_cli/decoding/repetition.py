"""Decoding control, degenerate-loop detection: tells a model stuck repeating itself from a page that really repeats.

Pure and streaming, shared by every engine: feed each generated token as it comes (a token id with its text, or
single characters for engines that only see text), and ask whether the tail has become a loop and where to cut.

Documents repeat themselves too: a table of identical rows, an empty form, a sheet of identical address labels,
a wide table's separator row, dotted leaders. They repeat only as far as a page reaches, though, while a looping
model repeats until its token budget. So a run is called a loop only once it is longer than a page could print.
"""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoopRule:
    """When a tail that repeats one unit back to back stops being document structure.

    The run (from the unit's first occurrence to the newest token) is a loop once it holds at least `min_repeats`
    repeats and is longer than a page prints: `max_tokens` tokens or more, more than `max_chars` characters or
    more than `max_lines` lines; or, for a short unit (at most `short_unit_chars` characters) repeating within
    one line, more than `max_line_chars` characters. Units of up to `max_period` tokens are followed; a loop of
    a longer unit runs to the token budget (and is flagged truncated).

    The defaults sit well above the most repetitive pages we know of (a sheet of 30 identical four-line address
    labels is 150 lines and ~1,700 characters, 1,450 tokens even for our tiny test tokenizer; 14 rows of a
    12-column table of zeros ~840 characters; a 60-column table's separator row 241 characters within one
    line) and cut a loop no later than
    `bound(period)` tokens after it began: 2,048 for any unit of up to 256 tokens, far sooner for most (a word
    or a table cell looping within a line: 500 characters; a short line: 300 lines).
    """

    min_repeats: int = 8
    max_tokens: int = 2048
    max_chars: int = 4000
    max_lines: int = 300
    max_line_chars: int = 500
    short_unit_chars: int = 16
    max_period: int = 256
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("min_repeats", "max_tokens", "max_chars", "max_lines", "max_line_chars", "short_unit_chars",
                     "max_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"LoopRule.{name} must be at least 1")
        if self.min_repeats < 2:
            raise ValueError("LoopRule.min_repeats must be at least 2: one occurrence is not a repetition")

    @classmethod
    def off(cls) -> LoopRule:
        """A rule that never fires: every answer runs to EOS or its budget."""
        return cls(enabled=False)

    def bound(self, period: int) -> int:
        """The most tokens a loop of `period` tokens runs (from its first occurrence) before it is detected."""
        return max(self.max_tokens, self.min_repeats * period)


@dataclass(frozen=True)
class Loop:
    """A detected loop: `period` tokens repeated from token `start` on; keep `tokens[:keep]` (one occurrence)."""

    period: int
    start: int
    tokens: int  # length of the repeated run, in tokens
    chars: int
    lines: int

    @property
    def keep(self) -> int:
        return self.start + self.period

    @property
    def repeats(self) -> float:
        return self.tokens / self.period


class LoopDetector:
    """Follows one answer token by token; `feed` returns the Loop once the tail is one (and keeps returning it).

    For every period p up to `rule.max_period` it keeps the length of the current run of tokens equal to the
    token p places earlier, so each token costs O(max_period) vectorised work, whatever the answer's length.
    """

    def __init__(self, rule: LoopRule = LoopRule()):
        self.rule = rule
        self.loop: Loop | None = None
        self.count = 0
        self._periods = np.arange(1, rule.max_period + 1, dtype=np.int64)
        self._runs = np.zeros(rule.max_period, dtype=np.int64)
        self._ids = np.zeros(1024, dtype=np.int64)
        self._chars = np.zeros(1025, dtype=np.int64)  # prefix sums: characters / newlines before token i
        self._lines = np.zeros(1025, dtype=np.int64)
        self._symbols: dict[Hashable, int] = {}

    def feed(self, token: Hashable, text: str | None = None) -> Loop | None:
        """Adds the next generated token (and its text, for character and line counts); returns the loop if any.

        Without `text` a token counts as one character and never as a line break.
        """
        if self.loop is not None or not self.rule.enabled:
            self.count += 1
            return self.loop
        index = self.count
        self._grow(index + 1)
        symbol = self._symbols.setdefault(token, len(self._symbols))
        self._ids[index] = symbol
        chars, breaks = (1, 0) if text is None else (len(text), text.count("\n"))
        self._chars[index + 1] = self._chars[index] + chars
        self._lines[index + 1] = self._lines[index] + breaks
        self.count += 1
        reach = min(index, self.rule.max_period)  # periods that have a token p places back
        if reach == 0:
            return None
        runs = self._runs[:reach]
        matches = self._ids[index - self._periods[:reach]] == symbol
        runs[:] = np.where(matches, runs + 1, 0)
        self.loop = self._judge(index, reach)
        return self.loop

    def extend(self, tokens, texts=None) -> Loop | None:
        """Feeds several tokens (with their texts, when given); returns the loop if any."""
        for position, token in enumerate(tokens):
            self.feed(token, None if texts is None else texts[position])
        return self.loop

    def _judge(self, index: int, reach: int) -> Loop | None:
        rule = self.rule
        periods = self._periods[:reach]
        spans = self._runs[:reach] + periods  # a run of r matches at period p is a p-periodic span of r + p tokens
        candidates = np.nonzero(spans >= rule.min_repeats * periods)[0]
        if candidates.size == 0:
            return None
        periods, spans = periods[candidates], spans[candidates]
        starts = index + 1 - spans
        chars = self._chars[index + 1] - self._chars[starts]
        lines = self._lines[index + 1] - self._lines[starts]
        unit_chars = self._chars[starts + periods] - self._chars[starts]
        beyond_a_page = (spans >= rule.max_tokens) | (chars > rule.max_chars) | (lines > rule.max_lines)
        beyond_a_line = (lines == 0) & (unit_chars <= rule.short_unit_chars) & (chars > rule.max_line_chars)
        hits = np.nonzero(beyond_a_page | beyond_a_line)[0]
        if hits.size == 0:
            return None
        first = hits[0]  # the shortest period: its unit is the loop's true unit, not a multiple of it
        return Loop(period=int(periods[first]), start=int(starts[first]), tokens=int(spans[first]),
                    chars=int(chars[first]), lines=int(lines[first]))

    def _grow(self, size: int) -> None:
        if size <= len(self._ids):
            return
        capacity = 2 * len(self._ids)
        self._ids = np.resize(self._ids, capacity)
        self._chars = np.resize(self._chars, capacity + 1)
        self._lines = np.resize(self._lines, capacity + 1)


def find_loop(tokens, texts=None, rule: LoopRule = LoopRule()) -> Loop | None:
    """The first loop a detector finds while `tokens` stream in (None if they never become one)."""
    detector = LoopDetector(rule)
    for position, token in enumerate(tokens):
        loop = detector.feed(token, None if texts is None else texts[position])
        if loop is not None:
            return loop
    return None


def find_text_loop(text: str, rule: LoopRule = LoopRule()) -> Loop | None:
    """The loop `find_loop(list(text), list(text), rule)` finds (characters as tokens, line breaks counted),
    for a whole answer at once: what a server's answer without token ids is judged on.

    The streaming detector pays ~250 small numpy calls per character. Here each period costs a few passes over
    the text, and only its runs long enough to fire are looked at one by one. The detector's verdict at a
    character depends on the text up to it alone, so prefixes of doubling length are judged first: a loop
    early in a long answer costs what its prefix costs, and an answer without one at most twice one pass."""
    if not rule.enabled or len(text) < 2:
        return None
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    breaks = np.flatnonzero(codes == ord("\n"))
    length = min(len(codes), 8 * 1024)
    while True:
        loop = _first_loop(codes[:length], breaks[breaks < length], rule)
        if loop is not None or length == len(codes):
            return loop
        length = min(len(codes), 2 * length)


def _first_loop(codes: np.ndarray, breaks: np.ndarray, rule: LoopRule) -> Loop | None:
    """The loop that fires at the earliest character (the shortest period on a tie), as the detector's."""
    best: tuple[int, int, int] | None = None  # (index it fires at, period, start)
    # A run fires no sooner than this many characters in: a page's worth (or a line's, for a short unit).
    page = min(rule.max_tokens, rule.max_chars + 1, rule.max_lines + 1)
    for period in range(1, min(rule.max_period, len(codes) - 1) + 1):
        shortest = max(rule.min_repeats * period,
                       min(page, rule.max_line_chars + 1) if period <= rule.short_unit_chars else page)
        end = len(codes) if best is None else best[0]  # only a loop firing earlier than the best so far wins
        if end < shortest or not _may_run(codes[:end], period, shortest - period):
            continue
        same = np.empty(end - period + 2, dtype=np.int8)  # same[1 + j]: character period + j repeats its own
        same[0] = same[-1] = 0
        np.equal(codes[period:end], codes[:end - period], out=same[1:-1].view(bool))
        edges = np.flatnonzero(np.diff(same))  # where runs begin and end, alternately
        firsts, lasts = edges[0::2], edges[1::2] - 1
        long_enough = np.flatnonzero(lasts - firsts + 1 + period >= shortest)
        for run in long_enough:  # a run of repeats over characters [first, last], its unit begins period before
            first, last = int(firsts[run]) + period, int(lasts[run]) + period
            fires = _fires_at(first - period, last, period, breaks, rule)
            if fires is not None and (best is None or fires < best[0]):
                best = (fires, period, first - period)
            if fires is not None:
                break  # later runs of this period fire later
    if best is None:
        return None
    fires, period, start = best
    lines = int(np.count_nonzero((breaks >= start) & (breaks <= fires)))
    return Loop(period=period, start=start, tokens=fires - start + 1, chars=fires - start + 1, lines=lines)


def _may_run(codes: np.ndarray, period: int, repeats: int, samples: int = 8) -> bool:
    """Whether characters may repeat the one `period` before them `repeats` times in a row. Such a run holds
    `samples` neighbouring multiples of repeats // samples, so comparing only there rules most periods out at
    a fraction of a pass (ordinary text matches itself by chance far less often than 8 times in a row)."""
    samples = min(samples, repeats)
    step = repeats // samples
    hits = codes[period::step] == codes[:len(codes) - period:step]
    for shift in range(1, samples):
        hits = hits[:-1] & hits[1:]  # hits[k]: samples k .. k + shift all repeat
    return bool(hits.any())


def _fires_at(start: int, last: int, period: int, breaks: np.ndarray, rule: LoopRule) -> int | None:
    """The first character (at most `last`) at which a `period`-periodic span from `start` is a loop, if any."""
    repeated = start + rule.min_repeats * period - 1  # from here on the span holds min_repeats units
    ahead = int(np.searchsorted(breaks, start))  # the first line break in the span, as an index into breaks
    beyond = [start + min(rule.max_tokens, rule.max_chars + 1) - 1]  # longer than a page prints
    if ahead + rule.max_lines < len(breaks):
        beyond.append(int(breaks[ahead + rule.max_lines]))  # more lines than a page prints
    if period <= rule.short_unit_chars:  # a short unit within one line, longer than a line prints
        within_line = start + rule.max_line_chars
        next_break = int(breaks[ahead]) if ahead < len(breaks) else last + 1
        if max(within_line, repeated) < next_break:
            beyond.append(within_line)
    fires = min(max(repeated, index) for index in beyond)
    return fires if fires <= last else None
