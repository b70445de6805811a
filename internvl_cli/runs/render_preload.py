"""Step 5 support, imported only by the render workers' fork server (runs/render_pool.py), never by a run: the
rendering code and PyMuPDF (loaded as documents/mupdf.py loads it) imported once there, so every worker forked
from it starts with them instead of importing them again (~0.5 s of CPU per worker)."""
from ..documents.mupdf import import_pymupdf
from . import render_pool  # noqa: F401  (the workers' own functions)

import_pymupdf()
