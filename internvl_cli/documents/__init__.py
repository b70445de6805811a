"""Steps 1-2, documents: paths -> documents (inputs), documents -> pages (pages), pages -> 448px tiles (tiling)."""
