"""Step 4c, the ocr task: one transcription per page (text-layer anchored where the PDF has one), as markdown/text/jsonl."""
from __future__ import annotations

import re

from ..documents.pages import Page
from .base import DocumentResult, json_line
from .pagewise import PageOptions, PageTask
from .prompts import PromptSet, prompt_set

# A text layer longer than this is cut: it only anchors characters and must not crowd out the image tokens.
MAX_ANCHOR_CHARS = 4000
# format -> output file suffix (-o DIR); the CLI and the library read formats from here
SUFFIXES = {"markdown": ".md", "text": ".txt", "jsonl": ".jsonl"}
FORMATS = tuple(SUFFIXES)
# an -o FILE's ending picks the format as surely as --format does
FORMAT_OF_SUFFIX = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".jsonl": "jsonl"}


class OcrTask(PageTask):
    name = "ocr"

    def __init__(self, options: PageOptions, model_id: str, use_text_layer: bool = True,
                 prompts: PromptSet | None = None):
        super().__init__(options, model_id)
        self.use_text_layer = use_text_layer
        self.prompts = prompts or prompt_set("ocr")

    def settings(self) -> dict:
        return {**self.prompts.fingerprint(), "text_layer": self.use_text_layer}

    def prompt_for(self, page: Page) -> tuple[str, str]:
        if self.use_text_layer and page.text_layer and self.prompts.anchored is not None:
            anchor = page.text_layer[:MAX_ANCHOR_CHARS]
            return self.prompts.anchored.fill(text_layer=anchor), "vision+text-layer"
        return self.prompts.plain.fill(), "vision"

    def page_record(self, base: dict, text: str) -> dict:
        base["text"] = strip_fences(text)
        return base

    def render(self, result: DocumentResult, fmt: str) -> str:
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
