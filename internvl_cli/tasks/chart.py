"""Step 4d, the chart task: one table per chart image or PDF page, decoding constrained to a rectangular CSV."""
from __future__ import annotations

import csv
import io

from ..flags import Flag
from ..decoding.constraints import Constraint
from ..documents.pages import Page
from .prompts import PromptSet, prompt_set
from .tables import normalise_numbers, parse_table, table_grammar
from .base import DocumentResult, json_line
from .pagewise import PageTask

# format -> output file suffix (-o DIR): json is one object per chart, a line each
SUFFIXES = {"csv": ".csv", "markdown": ".md", "json": ".jsonl"}
FORMATS = tuple(SUFFIXES)


class ChartTask(PageTask):
    name = "chart"

    def __init__(self, options, model_id: str, prompts: PromptSet | None = None):
        super().__init__(options, model_id)
        self.prompts = prompts or prompt_set("chart")
        self._constraint = Constraint("grammar", table_grammar())

    def settings(self) -> dict:
        return {"prompt": self.prompts.plain.text}

    def constraint(self) -> Constraint:
        return self._constraint

    def prompt_for(self, page: Page) -> tuple[str, str]:
        return self.prompts.plain.fill(), "vision"

    def page_record(self, base: dict, text: str) -> dict:
        rows = parse_table(text)
        if rows and any(len(row) != len(rows[0]) for row in rows):
            # The grammar makes this impossible unless the answer was cut by --max-new-tokens mid-row.
            rows = [row for row in rows if len(row) == len(rows[0])]
            base["flags"].append(Flag.RAGGED_ROWS_DROPPED)
        rows = normalise_numbers(rows) if rows else rows
        base["columns"] = rows[0] if rows else []
        base["rows"] = rows[1:] if rows else []
        return base

    def render(self, result: DocumentResult, fmt: str) -> str:
        tables = [r for r in result.records if not r.get("error")]
        if fmt == "json":
            keys = ("file", "page", "columns", "rows", "flags", "tiles", "seconds", "model")
            return "".join(json_line({k: r.get(k) for k in keys}) for r in tables)
        render = _csv if fmt == "csv" else _markdown
        return "\n".join(render([r["columns"], *r["rows"]]) for r in tables)


def _csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _markdown(rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |\n"

    header, *body = rows
    return line(header) + line(["---"] * len(header)) + "".join(line(row) for row in body)
