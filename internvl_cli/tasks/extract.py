"""Step 4e, the extract task: a whole document (pages as several images) -> one JSON record valid under a schema."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..engine.base import Constraint, GenerationRequest, Sampling
from ..errors import InvalidOutputError
from ..documents.pages import open_pages
from .prompts import PromptSet, prompt_set
from .schemas import LoadedSchema, grammar_schema, majority_vote, parse_json_output, validate
from ..documents.tiling import TilingConfig, prepare_page
from .base import DocumentResult, Outcome, Unit, check_readable, clean_value, json_line

MAX_ANCHOR_CHARS = 6000


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


class ExtractTask:
    name = "extract"

    def __init__(self, options: ExtractOptions, schema: LoadedSchema, model_id: str,
                 prompts: PromptSet | None = None):
        self.options = options
        self.schema = schema
        self.model_id = model_id
        self.prompts = prompts or prompt_set("extract")
        # schema order kept: fields come out as designed
        self.constraint = Constraint("json_schema", json.dumps(grammar_schema(schema.schema)))

    def fingerprint(self) -> dict:
        o = self.options
        return {
            "task": self.name, "model": self.model_id, "schema": self.schema.schema, **self.prompts.fingerprint(),
            "tiling": o.tiling.__dict__, "sampling": asdict(o.sampling),
            "window_pages": o.window_pages, "window_tiles": o.window_tiles, "votes": o.votes, "pages": o.pages,
            "text_layer": o.use_text_layer, **({"frames": o.frames} if o.frames else {}),
            **({"system": o.system} if o.system is not None else {}),
        }

    # ---------------------------------------------------------------- units

    def open(self, path: Path) -> Iterator:
        """The document's selected pages, opened the one way both `check` and `units` use."""
        return open_pages(path, password=self.options.password, pages=self.options.pages,
                          frames=self.options.frames)

    def check(self, path: Path) -> None:
        check_readable(self.open(path))

    def units(self, path: Path) -> Iterator[Unit]:
        window: list = []
        key = 0
        for page in self.open(path):
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
                       info={"window": numbers[0], "source": self._source(pages),
                             "page_flags": [flag for page in pages for flag in page.flags]})

    def _source(self, pages: list) -> str:
        anchored = self.options.use_text_layer and any(p.text_layer for p in pages)
        return "vision+text-layer" if anchored else "vision"

    def _prompt(self, pages: list, numbers: list[int]) -> str:
        note = (f"pages {numbers[0]}-{numbers[-1]} of {pages[0].count}, one image per page"
                if len(numbers) > 1 else f"page {numbers[0]} of {pages[0].count}")
        template = self.prompts.plain
        anchor = ""
        if self.options.use_text_layer and any(p.text_layer for p in pages) and self.prompts.anchored is not None:
            template = self.prompts.anchored
            anchor = "\n\n".join(f"[page {p.number}]\n{p.text_layer}" for p in pages if p.text_layer)
        return template.fill(fields=describe_fields(self.schema.schema), page_note=note,
                             text_layer=anchor[:MAX_ANCHOR_CHARS])

    # ---------------------------------------------------------------- results

    def finish(self, path: Path, outcomes: list[Outcome], page_count: int) -> DocumentResult:
        windows: dict[int, list] = {}
        errors: list[str] = []
        flags: list[str] = []
        seconds = 0.0
        for outcome in outcomes:
            if outcome.error is not None or outcome.result is None:
                errors.append(f"pages {outcome.unit.pages}: {outcome.error.message if outcome.error else 'no result'}")
                continue
            seconds += outcome.result.seconds
            for flag in [*outcome.unit.info.get("page_flags", ()), *outcome.result.flags]:
                if flag not in flags:
                    flags.append(flag)
            data, problems = parse_json_output(outcome.result.text, self.schema.schema)
            data = clean_value(data)  # JSON escapes let control characters through: none reach the output
            if problems:
                errors.extend(f"pages {_span(outcome.unit.pages)}: {p}" for p in problems)
            else:
                windows.setdefault(outcome.unit.info["window"], []).append(data)
        voted = [majority_vote(records) if len(records) > 1 else records[0]
                 for _, records in sorted(windows.items())]
        data = merge_windows(voted) if voted else None
        if data is not None and len(voted) > 1:
            errors.extend(validate(data, self.schema.schema))
        pages = sorted({p for o in outcomes for p in o.unit.pages})
        record = {
            "file": str(path), "pages": len(pages), "data": data, "valid": data is not None and not errors,
            "errors": errors, "flags": flags, "model": self.model_id, "seconds": round(seconds, 3),
            "source": outcomes[0].unit.info.get("source") if outcomes else None,
        }
        result = DocumentResult(path=path, records=[record], page_count=len(pages), seconds=seconds)
        if not record["valid"]:
            result.failed = True
            result.keep_output = data is not None or bool(errors)
            result.error = InvalidOutputError(
                f"no schema-valid record: {errors[0] if errors else 'empty answer'}", path=path)
        return result

    def render(self, result: DocumentResult, fmt: str) -> str:
        record = result.records[0]
        if fmt == "data":  # --data-only: pipelines get valid data or nothing
            return json_line(record["data"]) if record["valid"] else ""
        return json_line(record)


def _span(pages: list[int]) -> str:
    return f"{pages[0]}-{pages[-1]}" if len(pages) > 1 else str(pages[0])


def describe_fields(schema: dict, prefix: str = "") -> str:
    """One line per field (dotted path, type, description) so the prompt carries the schema's documentation."""
    lines = []
    for name, node in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        kind = node.get("type", "value")
        kind = "/".join(kind) if isinstance(kind, list) else kind
        text = node.get("description") or node.get("title") or ""
        lines.append(f"- {path} ({kind}){': ' + text if text else ''}")
        if node.get("type") == "object":
            lines.append(describe_fields(node, path + "."))
        items = node.get("items")
        if isinstance(items, dict) and items.get("type") == "object":
            lines.append(describe_fields(items, path + "[]."))
    return "\n".join(line for line in lines if line)


def merge_windows(records: list) -> object:
    """Merges page windows in page order: the first non-empty scalar wins (headers are on early pages),
    arrays are concatenated (line items continue across pages), objects merge recursively."""
    merged = records[0]
    for record in records[1:]:
        merged = _merge(merged, record)
    return merged


def _merge(first, second):
    if isinstance(first, dict) and isinstance(second, dict):
        out = dict(first)
        for key, value in second.items():
            out[key] = _merge(out[key], value) if key in out else value
        return out
    if isinstance(first, list) and isinstance(second, list):
        return first + second
    return first if first not in (None, "", []) else second
