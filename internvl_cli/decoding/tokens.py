"""Decoding control, token facts every engine needs the same way: which ids end an answer, and each token's text as
the loop detector counts it."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def eos_ids(declared: int | Sequence[int] | None, tokenizer: Any) -> list[int]:
    """The ids that end an answer: those the checkpoint declares (its generation config's `eos_token_id`, one id
    or several), then the tokenizer's own EOS when it is not among them."""
    ids = [declared] if isinstance(declared, int) else list(declared or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


class TokenPieces:
    """Each token's text decoded alone (cached per id): what the loop detector counts characters and lines of,
    identical on every engine so a loop is judged the same everywhere."""

    def __init__(self, tokenizer: Any):
        self._decode = tokenizer.decode
        self._cache: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        piece = self._cache.get(token)
        if piece is None:
            piece = self._cache[token] = self._decode([token])
        return piece

    def of(self, tokens: Iterable[int]) -> list[str]:
        return [self(token) for token in tokens]
