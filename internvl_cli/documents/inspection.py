"""Step 2 made visible: per-page size, grid, tiles and image tokens, computed without loading any model."""
from __future__ import annotations

from pathlib import Path

from .pages import open_pages
from .tiling import TilingConfig, plan_tiles


def inspect_pages(path: Path, tiling: TilingConfig, password: str | None = None,
                  pages: str | None = None) -> list[dict]:
    """One row per selected page; raises InputFileError for unreadable documents."""
    rows = []
    for page in open_pages(path, password=password, pages=pages):
        if page.error is not None:
            raise page.error
        plan = plan_tiles(page.width, page.height, tiling)
        rows.append({
            "file": str(path), "page": page.number, "pages": page.count, "kind": page.kind,
            "width": page.width, "height": page.height, "grid": [plan.cols, plan.rows],
            "tiles": plan.tiles, "image_tokens": plan.image_tokens, "text_layer": page.text_layer is not None,
        })
    return rows
