"""Step 4e, the extract task: a whole document (pages as several images) -> one JSON record valid under a schema."""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..flags import Flag
from ..documents.tiling import TilingConfig, prepare_page
from ..engine.base import GenerationRequest, Sampling
from ..errors import InvalidOutputError, UsageError
from .base import DocumentResult, DocumentTask, Outcome, Unit, UnitBudget, UnitContext, clean_value, digest, json_line
from .prompts import PromptSet, prompt_set
from ..schema.answers import Answer, choose_answer, parse_answer
from ..schema.loading import LoadedSchema

MAX_ANCHOR_CHARS = 6000
# The schema's documentation in the prompt is bounded: a 2 MB schema must not become a 1.4M-token prompt.
MAX_FIELDS_CHARS = 6000
MAX_DESCRIPTION_CHARS = 200
MAX_FIELD_DEPTH = 8
# An answer the full schema rejects (the grammar enforces only part of some schemas) is tried again, sampled.
MAX_RETRIES = 2
CHARS_PER_TOKEN = 4  # a generous average, so estimates err towards "it fits"
# format -> output file suffix (-o DIR): whole records, or only the data of valid ones (--data-only)
SUFFIXES = {"record": ".json", "data": ".json"}
FORMATS = tuple(SUFFIXES)


@dataclass
class ExtractOptions:
    """How a document is shown to the model: pages per window and the tile budget shared by a window's pages."""

    tiling: TilingConfig
    sampling: Sampling
    window_pages: int = 6
    window_tiles: int = 24
    votes: int = 1
    password: str | None = None
    pages: str | None = None
    use_text_layer: bool = True
    frames: str | None = None  # multi-frame images: None (TIFF all, others first), "all" or "first"
    system: str | None = None  # None: the checkpoint's own system message; "": none; else this text


class ExtractTask(DocumentTask):
    name = "extract"
    max_retries = MAX_RETRIES

    def __init__(self, options: ExtractOptions, schema: LoadedSchema, model_id: str,
                 prompts: PromptSet | None = None):
        super().__init__(options)
        self.schema = schema
        self.model_id = model_id
        self.prompts = prompts or prompt_set("extract")
        self.constraint = schema.constraint  # built once: the engine compiles it once per run
        self.fields, self.fields_listed, self.fields_total = describe_fields(schema)

    def budget(self) -> UnitBudget:
        """A window: its shared tile budget plus a thumbnail per page, and the answer budget."""
        o = self.options
        return UnitBudget(o.window_tiles + o.window_pages, o.sampling.max_new_tokens)

    def fingerprint(self) -> dict:
        o = self.options
        return {
            "task": self.name, "model": self.model_id, "schema": self.schema.schema, **self.prompts.fingerprint(),
            "tiling": o.tiling.__dict__, "sampling": asdict(o.sampling),
            "window_pages": o.window_pages, "window_tiles": o.window_tiles, "votes": o.votes, "pages": o.pages,
            "text_layer": o.use_text_layer, **({"frames": o.frames} if o.frames else {}),
            **({"system": o.system} if o.system is not None else {}),
            "grammar": digest(self.constraint.spec), "retries": self.max_retries,
        }

    # ---------------------------------------------------------------- before the model loads

    def preflight(self, context_length: int | None) -> list[str]:
        """Notes for the user about this schema and budget; UsageError when a prompt cannot fit the context."""
        notes = [f"schema {self.schema.name}: {warning}" for warning in self.schema.warnings]
        if self.schema.unenforced:
            notes.append(f"schema {self.schema.name}: validated but not enforced while decoding: "
                         f"{', '.join(self.schema.unenforced)} (failing answers are retried, then marked invalid)")
        if self.fields_listed < self.fields_total:
            notes.append(f"schema {self.schema.name}: the prompt lists {self.fields_listed} of "
                         f"{self.fields_total} fields (descriptions shortened to fit; the schema still applies)")
        if context_length:
            images, text, shortest = self.max_image_tokens(), self._text_tokens(), self._shortest_tokens()
            if images + text + shortest > context_length:
                raise UsageError(
                    f"a prompt cannot fit the model's context of {context_length} tokens: up to {images} image "
                    f"tokens per window (--window-tiles {self.options.window_tiles}, --window-pages "
                    f"{self.options.window_pages}) + about {text} text tokens + at least {shortest} answer tokens",
                    hint="lower --window-tiles or --window-pages")
            budget = self.options.sampling.max_new_tokens
            if images + text + budget > context_length:
                notes.append(f"--max-new-tokens {budget} may not fit the model's context of {context_length} "
                             f"tokens beside the prompt (up to {images + text} tokens)")
        return notes

    def fit_window(self, context_length: int | None) -> str | None:
        """Shrinks the window until a prompt fits the context: tiles first (pages keep reading together), then
        pages. Returns the note that says so, or None when the window already fits (or the context is unknown)."""
        o = self.options
        if not context_length or self._fits(o.window_pages, o.window_tiles, context_length):
            return None
        for pages in range(o.window_pages, 0, -1):
            for tiles in range(o.window_tiles, pages - 1, -1):
                if self._fits(pages, tiles, context_length):
                    note = (f"the model's context of {context_length} tokens holds a window of {pages} pages and "
                            f"{tiles} tiles, not {o.window_pages} and {o.window_tiles}: windows sized to fit "
                            "(--window-pages, --window-tiles)")
                    self.options = replace(o, window_pages=pages, window_tiles=tiles)
                    return note
        return None  # not even one page of one tile fits: preflight says so

    def _fits(self, pages: int, tiles: int, context_length: int) -> bool:
        images = self.max_image_tokens(pages, tiles)
        return images + self._text_tokens() + self._shortest_tokens() <= context_length

    def _text_tokens(self) -> int:
        template = max(len(self.prompts.plain.text), len(self.prompts.anchored.text) if self.prompts.anchored else 0)
        return math.ceil((template + len(self.fields) + MAX_ANCHOR_CHARS + 200) / CHARS_PER_TOKEN)

    def _shortest_tokens(self) -> int:
        return math.ceil((self.schema.shortest or 1) / CHARS_PER_TOKEN)

    def max_image_tokens(self, window_pages: int | None = None, window_tiles: int | None = None) -> int:
        """The most image tokens one window can take (each page's share of --window-tiles, plus thumbnails)."""
        tiling = self.options.tiling
        window_pages = window_pages or self.options.window_pages
        window_tiles = window_tiles or self.options.window_tiles
        worst = 0
        for pages in range(1, window_pages + 1):
            per_page = max(1, min(tiling.max_tiles, window_tiles // pages))
            tiles = per_page + (1 if per_page > 1 and tiling.use_thumbnail else 0)
            worst = max(worst, pages * (tiles * tiling.image_seq_length + 2))
        return worst

    # ---------------------------------------------------------------- units

    def units(self, path: Path) -> Iterator[Unit]:
        window: list = []
        key = 0
        for page in self.pages(path):
            if page.error is not None:
                raise page.error  # a document is one unit: an unreadable page fails it
            window.append(page)
            if len(window) == self.options.window_pages:
                yield from self._window_units(key, window)
                key += self.options.votes
                window = []
        if window:
            yield from self._window_units(key, window)

    def _window_units(self, key: int, pages: list) -> Iterator[Unit]:
        """One request per vote for a window; the window's tile budget is shared by its pages."""
        per_page = max(1, min(self.options.tiling.max_tiles, self.options.window_tiles // len(pages)))
        tiling = replace(self.options.tiling, min_tiles=min(self.options.tiling.min_tiles, per_page),
                         max_tiles=per_page)
        images = [prepare_page(page, tiling) for page in pages]
        numbers = [page.number for page in pages]
        text = self._prompt(pages, numbers)
        for vote in range(self.options.votes):
            sampling = self.options.sampling
            if self.options.votes > 1:
                sampling = replace(sampling, do_sample=True, seed=(sampling.seed or 0) + vote)
            request = GenerationRequest(images=images, text=text, sampling=sampling,
                                        constraint=self.constraint, system=self.options.system)
            yield Unit(key=key + vote, request=request, pages=numbers, plans=[image.plan for image in images],
                       context=UnitContext(window=numbers[0], source=self._source(pages),
                                           page_flags=[flag for page in pages for flag in page.flags]))

    def _source(self, pages: list) -> str:
        anchored = self.options.use_text_layer and any(p.text_layer for p in pages)
        return "vision+text-layer" if anchored else "vision"

    def _prompt(self, pages: list, numbers: list[int]) -> str:
        """The whole prompt text of a window (the one place it is assembled)."""
        note = (f"pages {numbers[0]}-{numbers[-1]} of {pages[0].count}, one image per page"
                if len(numbers) > 1 else f"page {numbers[0]} of {pages[0].count}")
        template = self.prompts.plain
        anchor = ""
        if self.options.use_text_layer and any(p.text_layer for p in pages) and self.prompts.anchored is not None:
            template = self.prompts.anchored
            anchor = "\n\n".join(f"[page {p.number}]\n{p.text_layer}" for p in pages if p.text_layer)
        return template.fill(fields=self.fields, page_note=note, text_layer=anchor[:MAX_ANCHOR_CHARS])

    def retry_request(self, unit: Unit, result) -> GenerationRequest | None:
        """An answer the full schema rejects is tried again, sampled (the grammar may enforce only part of it).

        Not when it was cut by the token budget: a retry would be cut as well.
        """
        answer = parse_answer(result.text, self.schema, clean=clean_value)
        if answer.valid or (result.finish_reason == "length" and not answer.parsed):
            return None
        base = unit.request.sampling
        sampling = replace(base, do_sample=True, seed=(base.seed or 0) + 7919 * (unit.attempts + 1) + unit.key)
        return replace(unit.request, sampling=sampling)

    # ---------------------------------------------------------------- results

    def finish(self, path: Path, outcomes: list[Outcome], page_count: int) -> DocumentResult:
        windows: dict[int, list[tuple[Answer, list[str]]]] = {}
        spans: dict[int, list[int]] = {}
        problems: dict[int, list[str]] = {}
        seconds, retried, model = 0.0, False, None
        for outcome in outcomes:
            context = outcome.unit.context
            window = context.window if context.window is not None else outcome.unit.pages[0]
            spans[window] = outcome.unit.pages
            windows.setdefault(window, [])
            if outcome.error is not None or outcome.result is None:
                problems.setdefault(window, []).append(outcome.error.message if outcome.error else "no result")
                continue
            tries = outcome.unit.earlier + [outcome.result]
            retried = retried or len(tries) > 1
            page_flags = list(context.page_flags)
            for result in tries:
                seconds += result.seconds
                model = model or result.model
                flags = page_flags + list(result.flags) + ([Flag.TRUNCATED] if result.finish_reason == "length" else [])
                # JSON escapes let control characters through: none reach the output, and what is
                # validated is exactly what is printed
                windows[window].append((parse_answer(result.text, self.schema, clean=clean_value), flags))
        data, errors, flags = self._combine(windows, spans, problems)
        if retried:
            flags.append(Flag.RETRIED)
        pages = sorted({p for o in outcomes for p in o.unit.pages})
        valid = not errors
        record = {
            "file": str(path), "pages": len(pages), "data": data, "valid": valid, "errors": errors, "flags": flags,
            "unenforced": self.schema.unenforced, "model": model or self.model_id, "seconds": round(seconds, 3),
            "source": outcomes[0].unit.context.source if outcomes else None,
        }
        # Every document gets its record, valid or not: an invalid one carries its errors.
        result = DocumentResult(path=path, records=[record], page_count=len(pages), seconds=seconds,
                                keep_output=True)
        if not valid:
            result.failed = True
            result.error = InvalidOutputError(f"no schema-valid record: {errors[0]}", path=path)
        return result

    def _combine(self, windows: dict[int, list[tuple[Answer, list[str]]]], spans: dict[int, list[int]],
                 problems: dict[int, list[str]]) -> tuple[Any, list[str], list[str]]:
        """One window's answer each (votes and retries chosen among), merged in page order, validated."""
        chosen: list[tuple[int, Answer, list[str]]] = []
        for window in sorted(windows):
            tries = windows[window]
            if not tries:
                chosen.append((window, Answer(None, [], False), []))
                continue
            answer, how = choose_answer([a for a, _ in tries], self.schema)
            flags = _flags_of(tries, answer)
            if how == "vote":
                flags.append(Flag.VOTED)
            chosen.append((window, answer, flags))
        valid = [(w, a, f) for w, a, f in chosen if a.valid]
        if not valid:  # nothing valid: the first window's best answer, with every window's errors
            data = chosen[0][1].data if chosen else None
            errors = [f"pages {_span(spans[w])}: {e}" for w, a, _ in chosen for e in (a.errors or problems.get(w, []))]
            return data, errors or ["$: no answer"], sorted({f for _, _, fs in chosen for f in fs})
        data, flags = valid[0][1].data, list(valid[0][2])
        dropped = len(chosen) - len(valid)
        for _, answer, answer_flags in valid[1:]:
            merged = _merge(data, answer.data)
            if self.schema.check(merged):
                dropped += 1  # this window's answer cannot be merged into a valid record
                continue
            data = merged
            flags.extend(answer_flags)
        if dropped:
            flags.append(Flag.WINDOWS_DROPPED)
        return data, self.schema.check(data), sorted(set(flags))

    def render(self, result: DocumentResult, fmt: str) -> str:
        record = result.records[0]
        if fmt == "data":  # --data-only: pipelines get valid data or nothing
            return json_line(record["data"]) if record["valid"] else ""
        return json_line(record)


def _flags_of(tries: list[tuple[Answer, list[str]]], answer: Answer) -> list[str]:
    """The flags of the tries behind the chosen answer (all valid tries when it is a field-wise vote)."""
    same = [flags for a, flags in tries if a.valid and a.data == answer.data] or [
        flags for a, flags in tries if a.valid] or [flags for a, flags in tries if a is answer]
    return sorted({flag for flags in same for flag in flags})


def _span(pages: list[int]) -> str:
    return f"{pages[0]}-{pages[-1]}" if len(pages) > 1 else str(pages[0])


# ---------------------------------------------------------------------- budgets


def answer_budget(schema: LoadedSchema, requested: int, explicit: bool) -> tuple[int, list[str]]:
    """The token budget for an answer: at least room for the schema's shortest valid answer to be wrapped up.

    Constrained answers are steered to a close in the last quarter of the budget, so a budget of four times
    the shortest answer always leaves room to finish. A budget the user chose is kept (with a note when it is
    tight), and refused when even the shortest valid answer cannot fit.
    """
    shortest = schema.shortest or 0
    comfortable = 4 * shortest + 64
    if not explicit:
        return max(requested, comfortable), []
    if requested * CHARS_PER_TOKEN < shortest:
        raise UsageError(
            f"--max-new-tokens {requested} is too small for schema {schema.name}: its shortest valid answer is "
            f"about {shortest} characters (at least {math.ceil(shortest / CHARS_PER_TOKEN)} tokens)",
            hint=f"use --max-new-tokens {comfortable} or more")
    if requested < 4 * shortest:
        return requested, [f"--max-new-tokens {requested} is tight for schema {schema.name} (shortest valid "
                           f"answer about {shortest} characters; {comfortable} tokens leave room to finish)"]
    return requested, []


# ---------------------------------------------------------------------- the schema in the prompt


def describe_fields(schema: LoadedSchema, limit: int = MAX_FIELDS_CHARS) -> tuple[str, int, int]:
    """The schema's fields for the prompt, one line each (dotted path, type, description), bounded.

    References are followed. When the list would pass `limit` characters, descriptions are shortened
    (200, then 60 characters, then none) before fields are left out; a last line then says how many.
    Returns (text, listed, total).
    """
    fields = _field_list(schema)
    for width in (MAX_DESCRIPTION_CHARS, 60, 0):
        lines = [f"- {path} ({kind}){_shorten(text, width)}" for path, kind, text in fields]
        if sum(len(line) + 1 for line in lines) <= limit:
            return "\n".join(lines), len(lines), len(lines)
    kept, used = [], 0
    for line in lines:
        if used + len(line) + 1 > limit - 80:
            break
        kept.append(line)
        used += len(line) + 1
    kept.append(f"- ... and {len(lines) - len(kept)} more fields (not listed here; the schema still applies)")
    return "\n".join(kept), len(kept) - 1, len(lines)


def _field_list(schema: LoadedSchema) -> list[tuple[str, str, str]]:
    """(dotted path, type, description) of every field, references followed, cycles and depth bounded."""
    fields: list[tuple[str, str, str]] = []
    seen: set[int] = set()

    def walk(node: Any, resolver: Any, prefix: str, depth: int) -> None:
        node, resolver = schema.follow(node, resolver)
        if not isinstance(node, dict) or depth > MAX_FIELD_DEPTH or id(node) in seen or len(fields) > 100_000:
            return
        seen.add(id(node))
        for branch in node.get("allOf") or []:
            walk(branch, resolver, prefix, depth + 1)
        for name, sub in (node.get("properties") or {}).items():
            sub, sub_resolver = schema.follow(sub, resolver)
            path = f"{prefix}{name}"
            fields.append((path, _kind(sub), _text(sub)))
            if isinstance(sub, dict):
                walk(sub, sub_resolver, path + ".", depth + 1)
                items, item_resolver = schema.follow(sub.get("items"), sub_resolver)
                if isinstance(items, dict) and (items.get("properties") or items.get("allOf")):
                    walk(items, item_resolver, path + "[].", depth + 1)
        seen.discard(id(node))

    walk(schema.schema, None, "", 0)
    return fields


def _kind(node: Any) -> str:
    if not isinstance(node, dict):
        return "value" if node is not False else "never present"
    kind = node.get("type", "value")
    kind = "/".join(map(str, kind)) if isinstance(kind, list) else str(kind)
    if isinstance(node.get("format"), str):
        kind += f", {node['format']}"
    if isinstance(node.get("enum"), list) and len(node["enum"]) <= 12:
        kind += ", one of " + "|".join(map(str, node["enum"]))
    return kind


def _text(node: Any) -> str:
    if not isinstance(node, dict):
        return ""
    text = node.get("description") or node.get("title") or ""
    return " ".join(text.split()) if isinstance(text, str) else ""


def _shorten(text: str, width: int) -> str:
    if not text or width <= 0:
        return ""
    if len(text) > width:
        text = text[: width - 1].rstrip() + "…"
    return f": {text}"


# ---------------------------------------------------------------------- windows


def _merge(first, second):
    """Two page windows' answers in page order: the first non-empty scalar wins (headers are on early pages),
    arrays are concatenated (line items continue across pages), objects merge recursively."""
    if isinstance(first, dict) and isinstance(second, dict):
        out = dict(first)
        for key, value in second.items():
            out[key] = _merge(out[key], value) if key in out else value
        return out
    if isinstance(first, list) and isinstance(second, list):
        return first + second
    return first if first not in (None, "", []) else second
