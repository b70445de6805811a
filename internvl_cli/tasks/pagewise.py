"""Step 4b, tasks that ask one question per page (ocr, chart): page -> tiles -> request, results -> page records."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..flags import Flag
from ..decoding.constraints import Constraint
from ..engine.base import GenerationRequest, Sampling
from ..errors import InternVLError
from ..documents.pages import Page
from ..documents.encoded import Preparer, RasterPreparer
from ..documents.tiling import TilingConfig
from .base import DocumentResult, DocumentTask, Outcome, Unit, UnitContext, clean_text, failure_exceeds


@dataclass
class PageOptions:
    """Reading and tiling options shared by page-wise tasks."""

    tiling: TilingConfig
    sampling: Sampling
    password: str | None = None
    pages: str | None = None
    max_page_error_rate: float = 0.1
    frames: str | None = None  # multi-frame images: None (TIFF all, others first), "all" or "first"
    system: str | None = None  # None: the checkpoint's own system message; "": none; else this text


class PageTask(DocumentTask):
    """Base of page-wise tasks; subclasses supply the prompt, the constraint and how answers are cleaned."""

    name = "page"

    def __init__(self, options: PageOptions, model_id: str):
        super().__init__(options)
        self.model_id = model_id
        self.preparer: Preparer = RasterPreparer()

    def prepare_with(self, preparer: Preparer) -> bool:
        self.preparer = preparer
        return True

    # subclass hooks ----------------------------------------------------------
    def prompt_for(self, page: Page) -> tuple[str, str]:
        """(prompt text, source label) for a page."""
        raise NotImplementedError

    def constraint(self) -> Constraint | None:
        return None

    def page_record(self, base: dict, text: str) -> dict:
        base["text"] = text
        return base

    def retry_request(self, unit: Unit, result) -> GenerationRequest | None:
        """A page that looped is tried once more with light sampling (a different path out of the loop)."""
        if result.finish_reason != "repetition" or self.options.sampling.do_sample:
            return None
        sampling = replace(self.options.sampling, do_sample=True, temperature=0.3, top_p=0.9, seed=unit.key)
        return replace(unit.request, sampling=sampling)

    def settings(self) -> dict:
        return {}

    # shared ------------------------------------------------------------------
    def fingerprint(self) -> dict:
        o = self.options
        return {
            "task": self.name, "model": self.model_id, "tiling": o.tiling.__dict__, "sampling": asdict(o.sampling),
            "pages": o.pages, "constraint": self.constraint().__dict__ if self.constraint() else None,
            **({"frames": o.frames} if o.frames else {}),  # absent by default: earlier ledgers stay valid
            **({"system": o.system} if o.system is not None else {}),  # absent by default too
            **self.settings(),
        }

    def units(self, path: Path) -> Iterator[Unit]:
        for key, page in enumerate(self.pages(path)):
            yield self._unit(key, page)

    def _unit(self, key: int, page: Page) -> Unit:
        unreadable = UnitContext(page_count=page.count, page_flags=page.flags)
        if page.error is not None:
            return Unit(key=key, request=None, pages=[page.number], context=unreadable, error=page.error)
        try:
            image = self.preparer.prepare(page, self.options.tiling)
        except InternVLError as exc:
            return Unit(key=key, request=None, pages=[page.number], context=unreadable, error=exc)
        text, source = self.prompt_for(page)
        plan = image.plan
        request = GenerationRequest(images=[image], text=text, sampling=self.options.sampling,
                                    constraint=self.constraint(), system=self.options.system)
        context = UnitContext(page_count=page.count, source=source, repaired=page.repaired, page_flags=page.flags)
        return Unit(key=key, request=request, pages=[page.number], plans=[plan], context=context)

    def finish(self, path: Path, outcomes: list[Outcome], page_count: int) -> DocumentResult:
        records = [self._record(path, outcome) for outcome in outcomes]
        failed = sum(1 for r in records if r.get("error"))
        seconds = sum(r.get("seconds", 0.0) for r in records)
        doc = DocumentResult(path=path, records=records, page_count=len(records), seconds=seconds)
        if failure_exceeds(failed, len(records), self.options.max_page_error_rate):
            doc.failed = True
            doc.error = next((o.error for o in outcomes if o.error), None)
        return doc

    def _record(self, path: Path, outcome: Outcome) -> dict:
        unit, context = outcome.unit, outcome.unit.context
        plan = unit.plans[0] if unit.plans else None
        record: dict = {
            "file": str(path), "page": unit.pages[0], "pages": context.page_count,
            "source": context.source, "model": self.model_id,
            "tiles": plan.tiles if plan else 0, "grid": list(plan.grid_size) if plan else None,
            "image_tokens": plan.image_tokens if plan else 0, "seconds": 0.0, "flags": [],
        }
        record["flags"].extend(context.page_flags)  # the page's own: truncated-image, broken-page, ...
        if outcome.error is not None or outcome.result is None:
            record.update(text="", error=(outcome.error.message if outcome.error else "no result"))
            record["flags"].append(Flag.FAILED)
            return record
        result = outcome.result
        first = unit.earlier[0] if unit.earlier else None
        if first is not None:
            record["flags"].append(Flag.RETRIED)
            result = better_attempt(first, result)
        if context.repaired:
            record["flags"].append(Flag.REPAIRED_PDF)
        record["seconds"] = round(result.seconds + (first.seconds if first is not None else 0.0), 3)
        record["model"] = result.model or self.model_id
        record["flags"].extend(result.flags)
        if result.finish_reason == "repetition":
            record["flags"].append(Flag.REPETITION)
        elif result.finish_reason == "length":
            record["flags"].append(Flag.TRUNCATED)
        return self.page_record(record, clean_text(result.text).strip())


def better_attempt(first, retry):
    """The answer kept after a retry: the one that did not loop; when both looped, the longer (the first on a
    tie, being the greedy one)."""
    if retry.finish_reason != "repetition":
        return retry
    if first.finish_reason != "repetition":
        return first
    return retry if len(retry.text.strip()) > len(first.text.strip()) else first
