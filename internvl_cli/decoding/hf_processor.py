"""Decoding control for transformers generate(), constraints: an llguidance logits processor per batch.

Grammars are compiled once per (grammar, tokenizer) and copied for every row of every batch. Beyond the
grammar, the processor keeps every JSON object's keys unique (a grammar cannot: `{"a":1,"a":2}` or an
escaped `"\u0061"` beside `"a"`), by refusing the token that would close a key already present.
"""
from __future__ import annotations

import json
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import llguidance
import llguidance.numpy as llnp
import numpy as np
from llguidance import LLMatcher

from ..errors import SchemaError
from .constraints import Constraint
from .constraints import constraint_grammar, json_grammar
from .json_state import JsonState
from .steering import Steering
from .tokens import eos_ids

if TYPE_CHECKING:  # torch is imported lazily: schema checks and `internvl schemas` should not pay ~2 s for it
    import torch

# The HF -> llguidance tokenizer bridge costs ~1 s for a 150k vocabulary: build it once per tokenizer.
_LL_TOKENIZERS: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], llguidance.LLTokenizer]] = (
    weakref.WeakKeyDictionary()
)
_EXECUTOR: llguidance.LLExecutor | None = None


def ll_tokenizer(tokenizer: Any, eos_token_ids: Sequence[int]) -> llguidance.LLTokenizer:
    """llguidance's view of a fast HF tokenizer (via llguidance.hf), cached per tokenizer and EOS set."""
    import llguidance.hf  # imports transformers: only when a model is about to run anyway

    per_tokenizer = _LL_TOKENIZERS.setdefault(tokenizer, {})
    key = tuple(eos_token_ids)
    if key not in per_tokenizer:
        per_tokenizer[key] = llguidance.hf.from_tokenizer(tokenizer, eos_token=list(key))
    return per_tokenizer[key]


def _executor() -> llguidance.LLExecutor:
    """One thread pool for all processors: masks of a batch are computed in parallel, outside the GIL."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = llguidance.LLExecutor()
    return _EXECUTOR


def _end_ids(tokenizer: Any, eos_token_id: int | Sequence[int] | None) -> list[int]:
    ids = eos_ids(eos_token_id, tokenizer)
    if not ids:
        raise ValueError("constrained decoding needs an EOS token id (the tokenizer has none)")
    return ids


@dataclass
class _Row:
    """Decoding state of one batch row."""

    matcher: LLMatcher
    tokens: list[int] = field(default_factory=list)
    finished: bool = False
    error: str | None = None
    closed: bool = False  # steered to the shortest way out (budget running out, or a loop)
    # when to wrap up: this processor's own (it counts the row's tokens), or the engine's, which feeds it
    steering: Steering = field(default_factory=lambda: Steering(None, constrained=True))
    counts_tokens: bool = True
    json: JsonState = field(default_factory=JsonState)


class GrammarLogitsProcessor:
    """A transformers logits processor: each batch row is held to an llguidance grammar.

    Works with greedy and sampled `generate()` (no beam search), with left padding: it only reads the
    last column of `input_ids`, i.e. the token the model actually produced for each row on the
    previous step, and feeds it to that row's matcher. Rows whose grammar is complete, or finished,
    or broken, may only produce EOS. It duck-types `transformers.LogitsProcessor` (same `__call__`)
    so that importing this module does not import torch. One processor serves one `generate()` call;
    a call that does not continue the previous one (new length or batch size) restarts it.
    Do not combine with `min_new_tokens`: it bans EOS exactly when a complete grammar needs it.
    """

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammar: str, batch_size: int | None = None,
                 close_after: int | None = None, steering: Sequence[Steering] | None = None):
        self._tokenizer = tokenizer
        self._close_after = close_after
        self._steering = list(steering) if steering is not None else None
        self._closers = _closer_tiers(tokenizer) if close_after is not None else None
        self._template = compiled_matcher(tokenizer, grammar)
        self._token_bytes = _token_bytes(tokenizer)
        self._token_ids = _token_ids(tokenizer)
        self._eos = list(tokenizer.eos_tokens)
        self._rows: list[_Row] = []
        self._seen_length: int | None = None
        self.mask_seconds = 0.0  # time spent masking in this generate() call, for --verbose timings
        self.steps = 0
        self._start(batch_size or 0)

    # -- public state ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all rows, so the processor can serve another generate() call."""
        self._start(0)

    def finalize(self, sequences: "torch.Tensor") -> list[str]:
        """Feed the tokens generate() appended after the last processor call; returns each row's text.

        generate() stops right after sampling, so the last token of a row never reaches `__call__`.
        """
        if self._seen_length is not None:
            for column in zip(*sequences[:, self._seen_length :].tolist()):
                self._consume(list(column))
            self._seen_length = sequences.shape[1]
        return self.texts()

    def texts(self) -> list[str]:
        """The text each row's matcher accepted so far (exact bytes, no EOS, no tokenizer clean-up)."""
        return [self._tokenizer.decode_str(row.tokens) for row in self._rows]

    @property
    def complete(self) -> list[bool]:
        """Per row: the grammar was satisfied (accepting state) and no token was ever rejected."""
        return [row.error is None and row.matcher.is_accepting() for row in self._rows]

    def request_close(self, row: int) -> None:
        """Steer `row` to finish now (e.g. it is looping), whatever its budget."""
        if row < len(self._rows):
            self._rows[row].steering.request_close()

    @property
    def closed(self) -> list[bool]:
        """Per row: the answer was steered to a close because the token budget ran low (flag it to the user)."""
        return [row.closed for row in self._rows]

    @property
    def errors(self) -> list[str | None]:
        """Per row: why the matcher stopped accepting tokens (None when it never did)."""
        return [row.error for row in self._rows]

    # -- the generate() hook -----------------------------------------------------------------------

    def __call__(self, input_ids: "torch.LongTensor", scores: "torch.FloatTensor") -> "torch.FloatTensor":
        started = time.perf_counter()
        rows, length = input_ids.shape
        if self._seen_length is None or length != self._seen_length + 1 or rows != len(self._rows):
            self._start(rows)  # first step of a generate() call: the prompt is not ours to check
        else:
            self._consume(input_ids[:, -1].tolist())
        self._seen_length = length
        allowed = self._allowed_tokens(scores.shape[-1])
        self.mask_seconds += time.perf_counter() - started
        self.steps += 1
        return _apply_mask(scores, allowed)

    # -- internals ---------------------------------------------------------------------------------

    def _start(self, rows: int) -> None:
        """Fresh rows; each follows the engine's Steering of its answer when one was given (the engine feeds it),
        else its own, counting the tokens this processor accepts."""
        given = self._steering if self._steering is not None and len(self._steering) == rows else None
        self._rows = [_Row(self._template.deep_copy(), steering=given[i], counts_tokens=False) if given else
                      _Row(self._template.deep_copy(), steering=Steering(None, True, self._close_after))
                      for i in range(rows)]
        self._seen_length = None
        self.mask_seconds, self.steps = 0.0, 0

    def _consume(self, tokens: list[int]) -> None:
        for row, token in zip(self._rows, tokens):
            if row.finished:
                continue  # generate() pads finished rows; those tokens are not the model's
            if not row.matcher.consume_token(token):
                row.error = row.error or _matcher_error(row.matcher) or f"token {token} rejected"
                row.finished = True
            elif token in self._eos:
                row.finished = True
            else:
                row.tokens.append(token)
                row.json.feed(self._token_bytes[token] if token < len(self._token_bytes) else b"")
                if row.counts_tokens:
                    row.steering.feed(token)

    def _allowed_tokens(self, vocab: int) -> np.ndarray:
        """Boolean (rows, vocab) mask of the tokens each row may produce next."""
        live = [i for i, row in enumerate(self._rows) if not row.finished and not row.matcher.is_stopped()]
        bits = self._grammar_masks(live)
        for i, row in enumerate(self._rows):
            # a matcher that hit an llguidance limit (or a dead end) reports it only through is_error()
            stuck = i in live and (row.matcher.is_error() or not bits[i].any())
            if stuck and row.error is None:
                row.error = _matcher_error(row.matcher) or "the grammar allows no token"
            if not stuck and i in live:
                stuck = self._forbid_used_keys(row, bits[i])
                if stuck and row.error is None:
                    row.error = "every way to end this key repeats a key the object already has"
            if stuck or i not in live:
                bits[i] = False
                bits[i, self._eos] = True  # complete, finished or stuck: only EOS ends the row cleanly
            elif row.steering.wrapping_up:
                if self._closers is None:
                    self._closers = _closer_tiers(self._tokenizer)
                self._steer_to_close(row, bits[i])
        if bits.shape[1] >= vocab:
            return bits[:, :vocab]
        # the model's embedding may be padded past the tokenizer: those ids are never allowed
        return np.pad(bits, ((0, 0), (0, vocab - bits.shape[1])))

    def _forbid_used_keys(self, row: _Row, allowed: np.ndarray) -> bool:
        """Masks the tokens that would repeat a key of the current object; True if no token is left.

        Refused: a token that closes a key already used, and a token that spells a used key when the grammar
        then allows nothing but closing it (a dead end otherwise found one token too late).
        """
        state = row.json
        if not state.used_keys() or not (state.expect_key or (state.in_string and state.is_key)):
            return False
        quotes = _quote_tokens(self._tokenizer)
        candidates = set(np.nonzero(allowed[: len(quotes)] & quotes)[0].tolist())
        if state.in_string and state.is_key:
            written = bytes(state.key)
            for used in state.used_keys():
                spelled = json.dumps(used, ensure_ascii=False)[1:-1].encode("utf-8")
                token = self._token_ids.get(spelled[len(written):]) if spelled.startswith(written) else None
                if token is not None and token < len(allowed) and allowed[token]:
                    candidates.add(token)
        for token in sorted(candidates):
            verdict = state.after(self._token_bytes[token])
            if verdict == "repeat" or (verdict == "at-used-key" and self._only_closing_follows(row, token)):
                allowed[token] = False
        return not allowed.any()

    def _only_closing_follows(self, row: _Row, token: int) -> bool:
        """Whether, after `token`, the grammar allows nothing but tokens that close the string."""
        matcher = row.matcher.deep_copy()
        if not matcher.consume_token(token):
            return True
        bitmask = np.zeros(llnp.get_bitmask_shape(1, self._tokenizer.vocab_size), dtype=np.int32)
        llnp.fill_next_token_bitmask(matcher, bitmask, 0)
        bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")[0, : self._tokenizer.vocab_size]
        following = np.nonzero(bits)[0].tolist()
        return bool(following) and all(self._token_bytes[t][:1] == b'"' for t in following)

    def _steer_to_close(self, row: _Row, allowed: np.ndarray) -> None:
        """Near the end of the budget, narrow the grammar's choices to the ones that finish soonest.

        Without this, an answer cut by max_new_tokens is invalid JSON and is lost. Preference: EOS when
        the grammar is complete, then tokens that close a string/object/array, then a separator (which
        moves on to the next required field); the model still picks among them. Only rows that would
        otherwise be cut are affected, and they are flagged.
        """
        vocab = len(allowed)
        eos_ok = [e for e in self._eos if e < vocab and allowed[e]]
        quote, close, comma = self._closers
        if eos_ok:
            choice = np.zeros_like(allowed)
            choice[eos_ok] = True
        else:
            choice = None
            # inside a string only a quote ends it ("}" there is text); outside, close brackets before commas
            for tier in ((quote,) if row.json.in_string else (close, comma)):
                # the mask may be wider than the tokenizer (bitmask padding, padded embeddings)
                narrowed = allowed.copy()
                narrowed[: len(tier)] &= tier[:vocab]
                narrowed[len(tier):] = False
                if narrowed.any():
                    choice = narrowed
                    break
        if choice is not None and not np.array_equal(choice, allowed):
            allowed[:] = choice
            row.closed = True

    def _grammar_masks(self, live: list[int]) -> np.ndarray:
        """llguidance's masks for the live rows, unpacked to booleans (other rows all False)."""
        bitmask = np.zeros(llnp.get_bitmask_shape(len(self._rows), self._tokenizer.vocab_size), dtype=np.int32)
        if len(live) == 1:  # one row: a thread-pool hop costs more than it saves
            llnp.fill_next_token_bitmask(self._rows[live[0]].matcher, bitmask, live[0])
        elif live:
            llnp.fill_next_token_bitmask_par(_executor(), [(self._rows[i].matcher, i) for i in live], bitmask)
        return np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little").astype(bool)


# id(LLTokenizer) -> (the tokenizer, kept so the id stays its own, tiers); LLTokenizer takes no weak references
_CLOSER_TIERS: dict[int, tuple[Any, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
_TOKEN_BYTES: dict[int, tuple[Any, list[bytes]]] = {}
_TOKEN_IDS: dict[int, tuple[Any, dict[bytes, int]]] = {}
# (id(LLTokenizer), grammar) -> (the tokenizer, its compiled matcher): compiling a large schema costs ~1 s,
# so it happens once per run, not per batch or vote; rows get deep copies.
_COMPILED: OrderedDict[tuple[int, str], tuple[Any, LLMatcher]] = OrderedDict()
_COMPILED_LIMIT = 16


def compiled_matcher(tokenizer: llguidance.LLTokenizer, grammar: str) -> LLMatcher:
    """The grammar compiled for this tokenizer, once (a template: copy it, never advance it)."""
    key = (id(tokenizer), grammar)
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key][1]
    matcher = LLMatcher(tokenizer, grammar, log_level=0)  # log_level 0: errors are ours to report
    if matcher.is_error():
        raise ValueError(f"invalid grammar: {_matcher_error(matcher)}")
    _COMPILED[key] = (tokenizer, matcher)
    while len(_COMPILED) > _COMPILED_LIMIT:
        _COMPILED.popitem(last=False)
    return matcher


def _token_bytes(tokenizer: llguidance.LLTokenizer) -> list[bytes]:
    if id(tokenizer) not in _TOKEN_BYTES:
        _TOKEN_BYTES[id(tokenizer)] = (tokenizer, [tokenizer.decode_bytes([t]) for t in range(tokenizer.vocab_size)])
    return _TOKEN_BYTES[id(tokenizer)][1]


def _token_ids(tokenizer: llguidance.LLTokenizer) -> dict[bytes, int]:
    """Token bytes -> token id (the first id, when several tokens spell the same bytes)."""
    if id(tokenizer) not in _TOKEN_IDS:
        ids: dict[bytes, int] = {}
        for token, text in enumerate(_token_bytes(tokenizer)):
            ids.setdefault(text, token)
        _TOKEN_IDS[id(tokenizer)] = (tokenizer, ids)
    return _TOKEN_IDS[id(tokenizer)][1]


def _quote_tokens(tokenizer: llguidance.LLTokenizer) -> np.ndarray:
    return _closer_tiers(tokenizer)[0]


def _closer_tiers(tokenizer: llguidance.LLTokenizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean vocab masks of tokens holding a quote, a closing brace/bracket (no quote), a comma (no quote)."""
    if id(tokenizer) not in _CLOSER_TIERS:
        size = tokenizer.vocab_size
        quote, close, comma = (np.zeros(size, dtype=bool) for _ in range(3))
        for token, text in enumerate(_token_bytes(tokenizer)):
            quote[token] = b'"' in text
            close[token] = not quote[token] and (b"}" in text or b"]" in text)
            comma[token] = not quote[token] and b"," in text
        _CLOSER_TIERS[id(tokenizer)] = (tokenizer, (quote, close, comma))
    return _CLOSER_TIERS[id(tokenizer)][1]


def _matcher_error(matcher: LLMatcher) -> str:
    """llguidance's error, first line only (the rest is a multi-line parser state dump)."""
    return matcher.get_error().strip().split("\n")[0][:300]


def _apply_mask(scores: "torch.Tensor", allowed: np.ndarray) -> "torch.Tensor":
    import torch

    mask = torch.from_numpy(allowed).to(scores.device, non_blocking=True)
    return scores.masked_fill(~mask, float("-inf"))


def grammar_logits_processor(
    tokenizer: Any, lark: str, batch_size: int | None = None, *, eos_token_id: int | Sequence[int] | None = None,
    close_after: int | None = None,
) -> GrammarLogitsProcessor:
    """A processor holding every row to a Lark grammar (llguidance dialect), e.g. `table_grammar()`."""
    grammar = LLMatcher.grammar_from_lark(lark)
    return GrammarLogitsProcessor(ll_tokenizer(tokenizer, _end_ids(tokenizer, eos_token_id)), grammar, batch_size,
                                  close_after=close_after)


def json_logits_processor(
    tokenizer: Any, schema: dict[str, Any], batch_size: int | None = None, *,
    eos_token_id: int | Sequence[int] | None = None, close_after: int | None = None,
) -> GrammarLogitsProcessor:
    """A processor holding every row to compact JSON valid under `schema`, as given (tasks pass the
    grammar's copy of a user schema, `schema.loading.LoadedSchema.grammar`).

    `eos_token_id`: the ids that end generation (generation_config.eos_token_id); default the tokenizer's.
    `close_after`: from this many generated tokens on, steer each row to finish its JSON (see
    `GrammarLogitsProcessor._steer_to_close`); None never steers.
    """
    grammar = json_grammar(schema)
    lltok = ll_tokenizer(tokenizer, _end_ids(tokenizer, eos_token_id))
    try:
        return GrammarLogitsProcessor(lltok, grammar, batch_size, close_after=close_after)
    except ValueError as exc:  # load_schema() already compiled it, so only unchecked dicts land here
        raise SchemaError(f"schema not supported for constrained decoding: {exc}") from None




_GRAMMARS: OrderedDict[Constraint, str] = OrderedDict()


def constraint_logits_processor(
    tokenizer: Any, constraint: Constraint, batch_size: int | None = None, *,
    eos_token_id: int | Sequence[int] | None = None, close_after: int | None = None,
    steering: Sequence[Steering] | None = None,
) -> GrammarLogitsProcessor:
    """A processor for an engine-neutral Constraint (a JSON Schema's text, or Lark text); its grammar is
    built and compiled once per constraint and tokenizer, however many batches and votes use it.

    `steering`: the engine's Steering of each batch row, which it feeds as tokens are generated; the processor
    wraps a row up when its Steering says so (then `close_after` is the Steerings' business)."""
    grammar = _GRAMMARS.get(constraint)
    if grammar is None:
        grammar = _GRAMMARS[constraint] = constraint_grammar(constraint)
        while len(_GRAMMARS) > _COMPILED_LIMIT:
            _GRAMMARS.popitem(last=False)
    lltok = ll_tokenizer(tokenizer, _end_ids(tokenizer, eos_token_id))
    try:
        return GrammarLogitsProcessor(lltok, grammar, batch_size, close_after=close_after, steering=steering)
    except ValueError as exc:  # load_schema() already compiled it, so only unchecked constraints land here
        raise SchemaError(f"schema not supported for constrained decoding: {exc}") from None
