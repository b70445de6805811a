"""Step 3b, degenerate-loop detection: InternVL can repeat a phrase until max_new_tokens; spot it and stop it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RepetitionRule:
    """A tail counts as degenerate when one period repeats `min_repeats` times and covers `min_span` tokens.

    The defaults leave real documents alone (a 20-column markdown rule `|---` is 20 repeats of ~2 tokens,
    40 tokens) while a looping line is caught within a few hundred tokens.
    """

    max_period: int = 64
    min_repeats: int = 10
    min_span: int = 96


def repeated_period(tokens: Sequence[int], rule: RepetitionRule = RepetitionRule()) -> int | None:
    """The period p if the tail of `tokens` is one p-gram repeated per `rule`, else None."""
    n = len(tokens)
    for period in range(1, rule.max_period + 1):
        repeats = max(rule.min_repeats, -(-rule.min_span // period))
        span = period * repeats
        if span > n:
            continue
        tail = tokens[n - span:]
        unit = tail[:period]
        if all(tail[i] == unit[i % period] for i in range(period, span)):
            return period
    return None


def trim_repetition(tokens: Sequence[int], period: int) -> list[int]:
    """Cuts a looping tail back to its first occurrence, keeping what came before the loop."""
    tokens = list(tokens)
    end = len(tokens)
    while end - 2 * period >= 0 and tokens[end - period:end] == tokens[end - 2 * period:end - period]:
        end -= period
    return tokens[:end]
