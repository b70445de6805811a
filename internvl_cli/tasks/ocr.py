"""Step 4c, the ocr task: one transcription per page (text-layer anchored where the PDF has one), as markdown/text/jsonl."""
from __future__ import annotations

import re
from pathlib import Path

from ..documents.pages import Page
from ..engine.base import GenerationRequest, GenerationResult
from .base import DocumentResult, Outcome, Unit, clean_text, json_line
from .lines import grounding_requests, place_lines, transcript_lines
from .pagewise import PageOptions, PageTask, better_attempt
from .prompts import PromptSet, prompt_set, shipped_prompt

# A text layer longer than this is cut: it only anchors characters and must not crowd out the image tokens.
MAX_ANCHOR_CHARS = 4000
# format -> output file suffix (-o DIR); the CLI and the library read formats from here
SUFFIXES = {"markdown": ".md", "text": ".txt", "jsonl": ".jsonl", "pdf": ".pdf", "hocr": ".hocr"}
FORMATS = tuple(SUFFIXES)
# an -o FILE's ending picks the format as surely as --format does
FORMAT_OF_SUFFIX = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".jsonl": "jsonl", ".pdf": "pdf",
                    ".hocr": "hocr"}
# Formats that place text on the page, and so need every line's box.
PLACED_FORMATS = ("pdf", "hocr")


class OcrTask(PageTask):
    name = "ocr"

    def __init__(self, options: PageOptions, model_id: str, use_text_layer: bool = True,
                 prompts: PromptSet | None = None, lines: bool = False, redo_ocr: bool = False):
        super().__init__(options, model_id)
        self.use_text_layer = use_text_layer
        self.prompts = prompts or prompt_set("ocr")
        self.lines = lines  # records carry `lines` with boxes (and `page_size`)
        self.redo_ocr = redo_ocr  # pages whose text is all invisible (an earlier OCR layer) are grounded anew
        self.grounding = shipped_prompt("ground")

    def settings(self) -> dict:
        lines = {"lines": True, "grounding": self.grounding.text, "redo_ocr": self.redo_ocr} if self.lines else {}
        return {**self.prompts.fingerprint(), "text_layer": self.use_text_layer, **lines}

    def _unit(self, key: int, page: Page) -> Unit:
        unit = super()._unit(key, page)
        if self.lines and unit.error is None:
            unit.context.page_size = page.page_size
            if page.text_layer and not (self.redo_ocr and page.text_is_hidden()):
                unit.context.layer_lines = page.text_lines()  # the PDF's own positions: no question needed
        return unit

    def follow_ups(self, unit: Unit, result: GenerationResult) -> list[GenerationRequest]:
        """With lines: one grounding question per transcribed line, unless the PDF's text layer gives them."""
        if not self.lines or unit.context.layer_lines is not None or unit.request is None:
            return []
        kept = better_attempt(unit.earlier[0], result) if unit.earlier else result  # what the record will keep
        texts = transcript_lines(strip_fences(clean_text(kept.text).strip()))
        return grounding_requests(unit.request, texts, self.grounding)

    def _record(self, path: Path, outcome: Outcome) -> dict:
        record = super()._record(path, outcome)
        if not self.lines:
            return record
        context = outcome.unit.context
        record["page_size"] = list(context.page_size) if context.page_size else None
        if record.get("error"):
            record["lines"] = []
        elif context.layer_lines is not None:
            record["lines"] = [{"text": line.text, "box": list(line.box)} for line in context.layer_lines]
            record["lines_source"] = "text-layer"
        else:
            texts = transcript_lines(record["text"])
            answers = [answer.text if answer is not None else None for answer in outcome.unit.follow_ups]
            placed = place_lines(texts, answers, context.page_size or (1.0, 1.0))
            record["lines"] = placed.lines
            record["lines_source"] = "grounding"
            record["flags"].extend(placed.flags)
        return record

    def prompt_for(self, page: Page) -> tuple[str, str]:
        if self.use_text_layer and page.text_layer and self.prompts.anchored is not None:
            anchor = page.text_layer[:MAX_ANCHOR_CHARS]
            return self.prompts.anchored.fill(text_layer=anchor), "vision+text-layer"
        return self.prompts.plain.fill(), "vision"

    def page_record(self, base: dict, text: str) -> dict:
        base["text"] = strip_fences(text)
        return base

    def render(self, result: DocumentResult, fmt: str) -> str | bytes:
        if fmt in PLACED_FORMATS:
            from .searchable import hocr_document, searchable_pdf

            if fmt == "hocr":
                return hocr_document(result.records)
            return searchable_pdf(result.path, result.records, password=self.options.password,
                                  redo_ocr=self.redo_ocr)
        if fmt == "jsonl":
            return "".join(json_line(record) for record in result.records)
        if fmt == "text":
            return "\f".join(record["text"].rstrip() + "\n" for record in result.records)
        return "".join(_markdown_section(record) for record in result.records)


def _markdown_section(record: dict) -> str:
    flags = f" | flags: {','.join(record['flags'])}" if record["flags"] else ""
    header = (f"<!-- file: {record['file']} | page: {record['page']}/{record['pages']} | "
              f"source: {record['source'] or 'none'}{flags} -->")
    body = record["text"].rstrip()
    if record.get("error"):
        body = f"<!-- page failed: {record['error']} -->"
    return f"{header}\n\n{body}\n\n"


_FENCE = re.compile(r"^```(?:markdown|md)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


def strip_fences(text: str) -> str:
    """Models sometimes wrap the whole answer in a ```markdown fence; the content is what the user wants."""
    match = _FENCE.match(text.strip())
    return match.group(1) if match else text
