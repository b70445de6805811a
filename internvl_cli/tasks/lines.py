"""Step 4d, lines with boxes: a page's transcription split into lines, each grounded by a follow-up question
(InternVL's grounding prompt), and the answers' 0-1000 boxes turned into page coordinates, repaired or dropped.

Why transcribe first and ground each line after: InternVL is trained on one box per referring question
(`eval/refcoco`), not on whole pages of boxes in one answer, and the transcription stays exactly what `ocr`
writes without boxes. A follow-up shares the page's image (and so, on vLLM, its prefix cache).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..engine.base import GenerationRequest
from ..flags import Flag
from .prompts import PromptTemplate

# Lines grounded per page, at most: each is one more request (on transformers one more prefill of the page's
# tiles; see README "Searchable PDFs" for the cost). A denser page keeps its later lines without boxes.
MAX_GROUNDED_LINES = 80
# Answer tokens for one grounding answer: the line echoed in <ref>, then about 20 tokens of box.
GROUNDING_ANSWER_TOKENS = 32
# InternVL's boxes are on a 0-1000 grid of the image.
GRID = 1000.0
# Two lines whose boxes overlap this much are one region: the later box is dropped.
MAX_OVERLAP_IOU = 0.5
# A box under this share of the page in width or height has no area worth a text layer.
MIN_SIDE = 0.002

Box = tuple[float, float, float, float]

_BOX = re.compile(r"\[\[?\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,"
                  r"\s*(-?\d+(?:\.\d+)?)\s*\]")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?$")
_MARKUP = re.compile(r"^\s{0,3}(?:#{1,6}\s+|>\s*|[-*+]\s+(?:\[[ xX]\]\s+)?)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TAG = re.compile(r"</?[A-Za-z][^>]*>")


@dataclass
class PlacedLines:
    """A page's lines as records carry them (`{"text", "box"}`, box None when it could not be trusted) and the
    flags saying what was repaired or dropped."""

    lines: list[dict]
    flags: list[Flag]


def transcript_lines(text: str) -> list[str]:
    """The printed lines of a Markdown transcription: markup removed (headings, bullets, emphasis, table pipes,
    HTML), blank lines and table rules left out, whitespace runs made one space."""
    lines = []
    for raw in _COMMENT.sub("", text).splitlines():
        line = raw.strip()
        if not line or _TABLE_RULE.match(line) or line in ("$$", "```"):
            continue
        if line.startswith("|"):
            line = " ".join(cell.strip() for cell in line.strip("|").split("|") if cell.strip())
        line = _TAG.sub(" ", _EMPHASIS.sub("", _MARKUP.sub("", line)))
        line = " ".join(line.split())
        if line:
            lines.append(line)
    return lines


def grounding_requests(page_request: GenerationRequest, lines: list[str],
                       template: PromptTemplate) -> list[GenerationRequest]:
    """One follow-up per line (the first MAX_GROUNDED_LINES): the page's own images and settings, the grounding
    prompt, greedy, a short answer."""
    return [replace(page_request, text=template.fill(line=line), sampling=_sampling(page_request, line),
                    constraint=None) for line in lines[:MAX_GROUNDED_LINES]]


def _sampling(page_request: GenerationRequest, line: str):
    # The answer echoes the line (never more tokens than its UTF-8 bytes) before its box.
    budget = GROUNDING_ANSWER_TOKENS + len(line.encode("utf-8"))
    return replace(page_request.sampling, do_sample=False,
                   max_new_tokens=min(page_request.sampling.max_new_tokens, budget))


def parse_box(answer: str) -> Box | None:
    """The first `[[x1, y1, x2, y2]]` of a grounding answer (InternVL's `<box>` form; the tags themselves are
    special tokens that decoding leaves out), or None when there is none."""
    match = _BOX.search(answer or "")
    return tuple(float(value) for value in match.groups()) if match else None  # type: ignore[return-value]


def place_lines(texts: list[str], answers: list[str | None], page_size: tuple[float, float]) -> PlacedLines:
    """Each line with its box in page coordinates. A box with its corners swapped is put in order and one reaching
    outside the grid is clipped (flag box-repaired); a missing, malformed, zero-area or off-page box, one that
    overlaps an earlier line's, and one that breaks reading order are dropped (box None, flag box-dropped);
    lines past MAX_GROUNDED_LINES have no box (flag boxes-capped)."""
    width, height = page_size
    flags: set[Flag] = set()
    placed: list[dict] = []
    kept: list[Box] = []
    for number, text in enumerate(texts):
        if number >= len(answers):
            placed.append({"text": text, "box": None})
            flags.add(Flag.BOXES_CAPPED)
            continue
        grid_box, repaired = _repair(parse_box(answers[number] or ""))
        box = None if grid_box is None else _to_page(grid_box, width, height)
        if box is not None and (_overlaps(box, kept) or _out_of_order(box, kept)):
            box = None
        if box is None:
            flags.add(Flag.BOX_DROPPED)
        else:
            kept.append(box)
            if repaired:
                flags.add(Flag.BOX_REPAIRED)
        placed.append({"text": text, "box": list(box) if box else None})
    return PlacedLines(placed, [flag for flag in (Flag.BOX_REPAIRED, Flag.BOX_DROPPED, Flag.BOXES_CAPPED)
                                if flag in flags])


def _repair(box: Box | None) -> tuple[Box | None, bool]:
    """On the grid: corners ordered, clipped to 0-1000; None when nothing of the box is left on the page."""
    if box is None:
        return None, False
    x1, y1, x2, y2 = min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])
    clipped = (max(0.0, x1), max(0.0, y1), min(GRID, x2), min(GRID, y2))
    repaired = clipped != tuple(box)
    if clipped[2] - clipped[0] < MIN_SIDE * GRID or clipped[3] - clipped[1] < MIN_SIDE * GRID:
        return None, repaired
    return clipped, repaired


def _to_page(box: Box, width: float, height: float) -> Box:
    return (round(box[0] / GRID * width, 2), round(box[1] / GRID * height, 2),
            round(box[2] / GRID * width, 2), round(box[3] / GRID * height, 2))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 where they do not overlap. eval scores with it too."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _overlaps(box: Box, kept: list[Box]) -> bool:
    return any(iou(box, other) >= MAX_OVERLAP_IOU for other in kept)


def _out_of_order(box: Box, kept: list[Box]) -> bool:
    """A line read after the previous one sits wholly above it and not in a column to its right: the model
    pointed at some other occurrence of the words."""
    if not kept:
        return False
    previous = kept[-1]
    above = box[3] <= previous[1]
    next_column = box[0] >= previous[0] + 0.5 * (previous[2] - previous[0])
    return above and not next_column
