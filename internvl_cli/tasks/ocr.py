"""Step 4c, the ocr task: one transcription per page (text-layer anchored where the PDF has one), as markdown/text/jsonl."""
from __future__ import annotations

import re

from ..documents.pages import Page
from ..resources import read_prompt
from .base import DocumentResult, json_line
from .pagewise import PageOptions, PageTask

# A text layer longer than this is cut: it only anchors characters and must not crowd out the image tokens.
MAX_ANCHOR_CHARS = 4000
FORMATS = ("markdown", "text", "jsonl")


class OcrTask(PageTask):
    name = "ocr"

    def __init__(self, options: PageOptions, model_id: str, use_text_layer: bool = True):
        super().__init__(options, model_id)
        self.use_text_layer = use_text_layer
        self.prompt = read_prompt("ocr")
        self.anchored_prompt = read_prompt("ocr-anchored")

    def settings(self) -> dict:
        return {"prompt": self.prompt, "anchored_prompt": self.anchored_prompt, "text_layer": self.use_text_layer}

    def prompt_for(self, page: Page) -> tuple[str, str]:
        if self.use_text_layer and page.text_layer:
            anchor = page.text_layer[:MAX_ANCHOR_CHARS]
            return self.anchored_prompt.replace("{text_layer}", anchor), "vision+text-layer"
        return self.prompt, "vision"

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
