"""Line box scoring: truth lines in ICDAR form against the `lines` of OCR records, matched one-to-one by IoU.

An ICDAR-2019 (SROIE) line file has one text line per line, `x1,y1,x2,y2,x3,y3,x4,y4,text` (pixels, the four
corners clockwise from the top left; the text may hold commas). A `.txt` truth file is read this way when every
non-blank line starts with eight integers and a comma; otherwise it is reference text. Each quadrilateral is
scored as its bounding rectangle. Output boxes `[x1, y1, x2, y2]` are taken in the page size the record states
(`page_size`), scaled to the image's pixels when the document beside the truth says otherwise. Truth and output
boxes are paired one-to-one for the largest total IoU (scipy); a pair with IoU >= 0.5 is a hit.
`box_recall` = hits / truth lines, `box_precision` = hits / output boxes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..tasks.lines import iou

Box = tuple[float, float, float, float]
IOU_HIT = 0.5
_ICDAR_LINE = re.compile(r"\s*-?\d+(?:\s*,\s*-?\d+){7}\s*,")


@dataclass(frozen=True)
class TruthLine:
    box: Box
    text: str


def is_icdar(text: str) -> bool:
    """Whether a truth text is an ICDAR line file (see the module docstring)."""
    lines = [line for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    return bool(lines) and all(_ICDAR_LINE.match(line) for line in lines)


def parse_icdar(text: str) -> list[TruthLine]:
    parsed = []
    for line in text.lstrip("\ufeff").splitlines():
        if not line.strip():
            continue
        parts = line.split(",", 8)
        xs, ys = [float(v) for v in parts[0:8:2]], [float(v) for v in parts[1:8:2]]
        parsed.append(TruthLine((min(xs), min(ys), max(xs), max(ys)), parts[8].strip() if len(parts) > 8 else ""))
    return parsed


def box_hits(truth: list[Box], predicted: list[Box]) -> int:
    """Truth boxes paired with an output box at IoU >= 0.5 under the one-to-one pairing of largest total IoU."""
    if not truth or not predicted:
        return 0
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    overlap = np.array([[iou(t, p) for p in predicted] for t in truth])
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return int((overlap[rows, cols] >= IOU_HIT).sum())


def scaled(box: list[float], scale: tuple[float, float]) -> Box:
    return (box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1])
