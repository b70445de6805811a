"""Structured output step: JSON Schema checks, llguidance-constrained decoding, chart tables, validation, voting."""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import re
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import jsonschema
import llguidance
import llguidance.numpy as llnp
import numpy as np
from llguidance import LLMatcher

from internvl_cli.errors import SchemaError
from internvl_cli.resources import data_dir

if TYPE_CHECKING:  # torch is imported lazily: schema checks and `internvl schemas` should not pay ~2 s for it
    import torch

# llguidance compile options: compact JSON (no free whitespace) saves tokens and leaves the model no room to ramble.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}

# Keys whose values are data, not subschemas: never walked for `$ref`/`format`.
_DATA_KEYS = frozenset({"enum", "const", "default", "examples"})


# --------------------------------------------------------------------------------------------------
# Loading and checking schemas
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedSchema:
    """A JSON Schema that passed every load-time check (metaschema, local refs, llguidance compile)."""

    name: str
    path: Path | None
    schema: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())


def _shipped_schema_files() -> dict[str, Path]:
    """Shipped schema name -> file, from the packaged data or the source checkout (resources.data_dir)."""
    try:
        directory = data_dir("schemas")
    except FileNotFoundError:
        return {}  # a broken install: name lookups then fail with "shipped: none"
    return {file.stem: file for file in sorted(directory.glob("*.json"))}


def _resolve_spec(spec: str) -> tuple[str, Path]:
    """A spec is a path to a file, or the name of a shipped schema (with or without `.json`)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path.stem, path
    shipped = _shipped_schema_files()
    name = spec[:-5] if spec.endswith(".json") else spec
    if name in shipped:
        return name, shipped[name]
    names = ", ".join(sorted(shipped)) or "none"
    raise SchemaError(f"no such schema file or shipped schema (shipped: {names})", path=spec)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SchemaError("schema file is not UTF-8 text", path=path) from None
    except OSError as exc:
        raise SchemaError(f"cannot read schema file: {exc.strerror or exc}", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", path=path) from None


def _walk(node: Any, where: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema object with its JSON path, skipping data-valued keywords like `enum`."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            if key not in _DATA_KEYS:
                yield from _walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, f"{where}[{index}]")


def _check_refs(schema: dict[str, Any], source: str | Path) -> None:
    """Only document-local references: a remote `$ref` would mean fetching URLs, which we never do."""
    for where, node in _walk(schema):
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str) and not ref.startswith("#"):
                raise SchemaError(
                    f"{key} {ref!r} at {where} is not local; only '#...' references are supported"
                    " (nothing was fetched)",
                    path=source,
                )


def _check_metaschema(schema: dict[str, Any], source: str | Path) -> None:
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise SchemaError(f"not a valid JSON Schema: {exc.message} at {exc.json_path}", path=source) from None


def check_schema(schema: Any, source: str | Path = "<schema>") -> tuple[str, ...]:
    """Every load-time check on a schema object; raises SchemaError, returns llguidance's warnings."""
    if not isinstance(schema, dict):
        raise SchemaError("a JSON Schema for extraction must be a JSON object", path=source)
    _check_metaschema(schema, source)
    _check_refs(schema, source)
    return _compile_check(json_grammar(schema, source=source), source)


def load_schema(spec: str) -> LoadedSchema:
    """Load a schema file or shipped schema by name and check it fully, before any model is loaded."""
    name, path = _resolve_spec(spec)
    schema = _read_json(path)
    warnings = check_schema(schema, path)
    return LoadedSchema(name=name, path=path, schema=schema, warnings=warnings)


def list_schemas() -> list[tuple[str, str]]:
    """(name, "title: description") of each shipped schema, for `internvl schemas`."""
    rows = []
    for name, path in sorted(_shipped_schema_files().items()):
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            rows.append((name, f"(unreadable: {exc})"))
            continue
        title, description = schema.get("title", ""), schema.get("description", "")
        rows.append((name, f"{title}: {description}" if title and description else title or description))
    return rows


# --------------------------------------------------------------------------------------------------
# Grammars
# --------------------------------------------------------------------------------------------------

# A strict calendar date (what jsonschema's `date` format checker accepts). llguidance's own `date`
# format allows 29 February in every year, which jsonschema then rejects, so we swap in this pattern.
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
DATE_PATTERN = (
    rf"^(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    rf"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)$"
)


# Unbounded JSON numbers may be written with any exponent ("1e400"), which Python reads as inf and no
# JSON writer can emit again. Bounding a number makes llguidance drop exponents altogether; no
# amount on a document comes near 10^15.
NUMBER_LIMIT = 1e15


def _is_number_schema(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "number" or (isinstance(kind, list) and "number" in kind)


def _grammar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The copy of a schema the grammar is built from; validation always uses the original.

    Two tightenings keep every constrained output valid under jsonschema: `format: date` becomes
    DATE_PATTERN (llguidance's own date format allows 29 February in any year), and numbers get
    +-NUMBER_LIMIT where they have no bound of their own (so no exponent can overflow a float).
    """
    schema = copy.deepcopy(schema)
    for _, node in _walk(schema):
        if node.get("format") == "date" and "pattern" not in node:
            del node["format"]
            node["pattern"] = DATE_PATTERN
        if _is_number_schema(node):
            if "minimum" not in node and "exclusiveMinimum" not in node:
                node["minimum"] = -NUMBER_LIMIT
            if "maximum" not in node and "exclusiveMaximum" not in node:
                node["maximum"] = NUMBER_LIMIT
    return schema


def json_grammar(schema: dict[str, Any], *, source: str | Path = "<schema>") -> str:
    """The llguidance grammar (compact JSON) for a schema; SchemaError if llguidance rejects the schema object."""
    try:
        return LLMatcher.grammar_from_json_schema(_grammar_schema(schema), overrides=JSON_OPTIONS)
    except ValueError as exc:
        raise SchemaError(f"cannot build a grammar: {exc}", path=source) from None


def _compile_check(grammar: str, source: str | Path) -> tuple[str, ...]:
    """Compile the grammar without a tokenizer so unsupported keywords fail at load time, not mid-run."""
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, None)
    if is_error:
        cause = " ".join(" ".join(messages).split())
        unsupported = any(word in cause for word in ("Unimplemented", "Unknown format", "not supported"))
        raise SchemaError(
            f"schema not supported for constrained decoding: {cause}", path=source,
            hint="remove or rewrite the unsupported keyword" if unsupported else None,
        )
    return tuple(" ".join(m.split()) for m in messages)


def table_grammar(max_columns: int = 16, max_rows: int = 200, max_cell_chars: int = 64) -> str:
    """Lark grammar (llguidance dialect) for a rectangular CSV table: a header and 1..max_rows data rows.

    Rectangularity is structural: one alternative per column count k, and inside it every line is
    the same k-cell terminal, so a row with a different cell count cannot be generated. Cells are
    bare (no quote or comma) or double-quoted CSV fields ("" escapes a quote), at most
    max_cell_chars characters, and never hold control characters or line separators, so a row is
    one line. A one-column row must not be empty (an empty line reads back as a row with no cells).

    Shaped for llguidance's Earley parser with 150k-token vocabularies, where thousands of tokens
    hold a newline and so cross a row boundary in every mask: a row is one regex terminal (cell and
    comma rules overflow the 50k-item limit at once), and the row count is a left-recursive chain
    `rows_n: rows_(n-1) NL ROW` (`x{1,n}` or right recursion cost O(rows) items per crossing and
    overflow after a few rows).
    """
    if not (1 <= max_columns and 1 <= max_rows and 1 <= max_cell_chars):
        raise ValueError("max_columns, max_rows and max_cell_chars must be positive")
    lines = ["start: " + " | ".join(f"table{k}" for k in range(1, max_columns + 1)), 'NL: "\\n"']
    for k in range(1, max_columns + 1):
        lines += _table_rules(k, max_rows, max_cell_chars)
    return "\n".join(lines)


def _table_rules(k: int, max_rows: int, max_cell_chars: int) -> list[str]:
    """The rules of a k-column table: header, then body{k} = 1..max_rows data rows."""
    # no control characters (newlines included) or Unicode line/paragraph separators in any cell
    bare = f'[^",\\p{{Cc}}\\p{{Zl}}\\p{{Zp}}]{{1,{max_cell_chars}}}'
    quoted = f'"(?:[^"\\p{{Cc}}\\p{{Zl}}\\p{{Zp}}]|""){{0,{max_cell_chars}}}"'
    cell = f"(?:{bare}|{quoted})"
    row = cell if k == 1 else f"{cell}?(?:,{cell}?){{{k - 1}}}"
    rules = [
        f"ROW{k}: /{row}/",
        f"table{k}: ROW{k} NL body{k} NL?",
        f"body{k}: " + " | ".join(f"rows{k}_{n}" for n in range(1, max_rows + 1)),
        f"rows{k}_1: ROW{k}",
    ]
    return rules + [f"rows{k}_{n}: rows{k}_{n - 1} NL ROW{k}" for n in range(2, max_rows + 1)]


def parse_table(text: str) -> list[list[str]]:
    """CSV text -> rows of cells (csv module rules), blank lines dropped, cells stripped of outer spaces."""
    reader = csv.reader(io.StringIO(text.strip("\r\n")))
    return [[cell.strip() for cell in row] for row in reader if row]


def is_rectangular(rows: Sequence[Sequence[str]]) -> bool:
    """True when there is a header and every row has the header's number of cells."""
    return bool(rows) and all(len(row) == len(rows[0]) for row in rows)


_CURRENCY = "€$£¥₹₩₽"
_NUMBER_CELL = re.compile(
    rf"""^\s*
    (?P<sign1>[-+−])?\s*
    (?:[{_CURRENCY}]|[A-Z]{{3}}(?=[\s\d]))?\s*
    (?P<sign2>[-+−])?
    (?P<int>\d{{1,3}}(?:(?P<sep>[,\u00a0\u202f\u2009 ])\d{{3}})?(?:(?P=sep)\d{{3}})*|\d+)
    (?P<frac>\.\d+)?
    \s*(?:%|[{_CURRENCY}]|[A-Z]{{3}})?\s*$""",
    re.VERBOSE,
)


def normalise_number(cell: str) -> str:
    """One cell: the bare number if the cell is clearly numeric, else the cell unchanged.

    Clearly numeric = an optional sign, an optional currency symbol or 3-letter code (before or
    after), digits with optional thousands separators (',' or a space, in groups of exactly three,
    used consistently), an optional '.' decimal part, and an optional trailing '%'. Result: the
    sign ('-' only) and the digits with '.' decimals, e.g. "1,234.5" -> "1234.5", "12 %" -> "12",
    "€ 3.50" -> "3.50", "−7" -> "-7". A decimal comma ("3,50") is ambiguous and left as is.
    """
    match = _NUMBER_CELL.match(cell)
    if not match or (match["sign1"] and match["sign2"]):
        return cell
    negative = (match["sign1"] or match["sign2"]) in ("-", "−")
    digits = re.sub(r"\D", "", match["int"])
    return ("-" if negative else "") + digits + (match["frac"] or "")


def normalise_numbers(rows: list[list[str]], header: bool = True) -> list[list[str]]:
    """normalise_number on every data cell; the header row (if `header`) is left untouched."""
    start = 1 if header else 0
    return [list(row) for row in rows[:start]] + [[normalise_number(c) for c in row] for row in rows[start:]]


# --------------------------------------------------------------------------------------------------
# Constrained decoding with transformers generate()
# --------------------------------------------------------------------------------------------------

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


def _eos_ids(tokenizer: Any, eos_token_id: int | Sequence[int] | None) -> list[int]:
    ids = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
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
    closing: bool = False  # asked to wrap up now, whatever the budget
    in_string: bool = False  # inside a JSON string (tracked from the accepted bytes, for steering)
    escaped: bool = False


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
                 close_after: int | None = None):
        self._tokenizer = tokenizer
        self._close_after = close_after
        self._closers = _closer_tiers(tokenizer) if close_after is not None else None
        self._template = LLMatcher(tokenizer, grammar, log_level=0)  # log_level 0: errors are ours to report
        if self._template.is_error():
            raise ValueError(f"invalid grammar: {_matcher_error(self._template)}")
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
            self._rows[row].closing = True
            if self._closers is None:
                self._closers = _closer_tiers(self._tokenizer)

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
        self._rows = [_Row(self._template.deep_copy()) for _ in range(rows)]
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
                _track_string(row, self._tokenizer.decode_bytes([token]))

    def _allowed_tokens(self, vocab: int) -> np.ndarray:
        """Boolean (rows, vocab) mask of the tokens each row may produce next."""
        live = [i for i, row in enumerate(self._rows) if not row.finished and not row.matcher.is_stopped()]
        bits = self._grammar_masks(live)
        for i, row in enumerate(self._rows):
            # a matcher that hit an llguidance limit (or a dead end) reports it only through is_error()
            stuck = i in live and (row.matcher.is_error() or not bits[i].any())
            if stuck and row.error is None:
                row.error = _matcher_error(row.matcher) or "the grammar allows no token"
            if stuck or i not in live:
                bits[i] = False
                bits[i, self._eos] = True  # complete, finished or stuck: only EOS ends the row cleanly
            elif self._closers is not None and (self._rows[i].closing or (
                    self._close_after is not None and self.steps >= self._close_after)):
                self._steer_to_close(self._rows[i], bits[i])
        if bits.shape[1] >= vocab:
            return bits[:, :vocab]
        # the model's embedding may be padded past the tokenizer: those ids are never allowed
        return np.pad(bits, ((0, 0), (0, vocab - bits.shape[1])))

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
            for tier in ((quote,) if row.in_string else (close, comma)):
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


def _closer_tiers(tokenizer: llguidance.LLTokenizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean vocab masks of tokens holding a quote, a closing brace/bracket (no quote), a comma (no quote)."""
    if id(tokenizer) not in _CLOSER_TIERS:
        size = tokenizer.vocab_size
        quote, close, comma = (np.zeros(size, dtype=bool) for _ in range(3))
        for token in range(size):
            text = tokenizer.decode_bytes([token])
            quote[token] = b'"' in text
            close[token] = not quote[token] and (b"}" in text or b"]" in text)
            comma[token] = not quote[token] and b"," in text
        _CLOSER_TIERS[id(tokenizer)] = (tokenizer, (quote, close, comma))
    return _CLOSER_TIERS[id(tokenizer)][1]


def _track_string(row: _Row, text: bytes) -> None:
    """Follows JSON string boundaries through the accepted bytes (quotes, backslash escapes)."""
    for byte in text:
        if row.escaped:
            row.escaped = False
        elif row.in_string and byte == 0x5C:  # backslash
            row.escaped = True
        elif byte == 0x22:  # quote
            row.in_string = not row.in_string


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
    return GrammarLogitsProcessor(ll_tokenizer(tokenizer, _eos_ids(tokenizer, eos_token_id)), grammar, batch_size,
                                  close_after=close_after)


def json_logits_processor(
    tokenizer: Any, schema: dict[str, Any], batch_size: int | None = None, *,
    eos_token_id: int | Sequence[int] | None = None, close_after: int | None = None,
) -> GrammarLogitsProcessor:
    """A processor holding every row to compact JSON valid under `schema` (see `_grammar_schema`).

    `eos_token_id`: the ids that end generation (generation_config.eos_token_id); default the tokenizer's.
    `close_after`: from this many generated tokens on, steer each row to finish its JSON (see
    `GrammarLogitsProcessor._steer_to_close`); None never steers.
    """
    grammar = json_grammar(schema)
    lltok = ll_tokenizer(tokenizer, _eos_ids(tokenizer, eos_token_id))
    try:
        return GrammarLogitsProcessor(lltok, grammar, batch_size, close_after=close_after)
    except ValueError as exc:  # load_schema() already compiled it, so only unchecked dicts land here
        raise SchemaError(f"schema not supported for constrained decoding: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Validation and voting
# --------------------------------------------------------------------------------------------------


def validate(data: Any, schema: dict[str, Any]) -> list[str]:
    """Every schema violation of `data` as "JSON path: message", formats (e.g. `date`) asserted."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{e.json_path}: {e.message}" for e in errors]


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def parse_json_output(text: str, schema: dict[str, Any]) -> tuple[Any, list[str]]:
    """(data, []) for a decoded output that is JSON valid under the schema, else (None or data, errors).

    A decode cut off by max_new_tokens is not JSON, so it lands here as an error, never as valid data.
    """
    try:
        data = json.loads(text, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        # an error at the very end, or a string never closed, is what a max_new_tokens cut looks like
        cut_off = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        cut = " (output cut off: raise max_new_tokens?)" if cut_off else ""
        return None, [f"$: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}{cut}"]
    except ValueError as exc:
        return None, [f"$: {exc}"]
    return data, validate(data, schema)


def _vote_key(value: Any) -> str:
    """Canonical form for comparing values: key order ignored, 2 == 2.0."""
    def canon(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: canon(x) for k, x in v.items()}
        if isinstance(v, list):
            return [canon(x) for x in v]
        return v
    return json.dumps(canon(value), sort_keys=True, ensure_ascii=False)


def _most_common(values: list[Any]) -> Any:
    """The most frequent value; among equally frequent ones, the one seen first."""
    counts = Counter(_vote_key(v) for v in values)
    best = max(counts.values())
    return next(v for v in values if counts[_vote_key(v)] == best)


def _vote(values: list[Any]) -> Any:
    if values and all(isinstance(v, dict) for v in values):
        return _vote_objects(values)
    return _most_common(values)


def _vote_objects(records: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for record in records for k in record))
    for key in keys:
        present = [r[key] for r in records if key in r]
        # absence is a vote too; a tie keeps whatever the first record did
        if len(present) * 2 < len(records) or (len(present) * 2 == len(records) and key not in records[0]):
            continue
        result[key] = _vote(present)
    return result


def majority_vote(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise majority over N extractions of one document (`--votes N`).

    Rule: for each key (in first-seen order) the records vote on presence (absence counts as a vote);
    if present, nested objects are voted key by key recursively, and any other value (arrays
    included) is voted as a whole, comparing values canonically (key order ignored, 2 == 2.0).
    Every tie goes to the first record's choice (first occurrence). The result may combine fields
    from different records, so validate it again against the schema before emitting it.
    """
    if not records:
        raise ValueError("majority_vote needs at least one record")
    return _vote(list(records))
