"""Step 2 made visible: per-page size, grid, tiles and image tokens, computed without loading any model."""
from __future__ import annotations

from pathlib import Path

from ..flags import Flag
from .pages import open_pages
from .tiling import TilingConfig, plan_tiles


def inspect_pages(path: Path, tiling: TilingConfig, password: str | None = None,
                  pages: str | None = None, frames: str | None = None) -> list[dict]:
    """One row per selected page; raises InputFileError for unreadable documents.

    A page that alone cannot be read (a broken page object, a corrupt frame) gets a row with its `error`
    and no tiles, as `ocr` would skip it.
    """
    rows = []
    for page in open_pages(path, password=password, pages=pages, frames=frames):
        row = {"file": str(path), "page": page.number, "pages": page.count, "kind": page.kind}
        if page.error is not None:
            rows.append({**row, "width": 0, "height": 0, "grid": [0, 0], "tiles": 0, "image_tokens": 0,
                         "text_layer": False, "flags": [*page.flags, Flag.FAILED], "error": page.error.message})
            continue
        plan = plan_tiles(page.width, page.height, tiling)
        rows.append({
            **row, "width": page.width, "height": page.height, "grid": [plan.cols, plan.rows],
            "tiles": plan.tiles, "image_tokens": plan.image_tokens, "text_layer": page.text_layer is not None,
            "flags": list(page.flags) + ([Flag.REPAIRED_PDF] if page.repaired else []),
        })
    return rows
