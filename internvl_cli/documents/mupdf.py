"""Steps 1-2 support: importing PyMuPDF without the extras that the full `pymupdf` 2.x wheel bundles.

`import pymupdf` from the full distribution also imports `pymupdf.layout` and `pymupdf4llm`, which load
onnxruntime (~1 s, and a device id written under ~/.cache/Microsoft) for features we never use. `pymupdf-lite`
(our dependency; README "Install") has neither, but the full one may be installed beside it: this import keeps
them out either way.
"""
from __future__ import annotations

import sys
from types import ModuleType

# What the full distribution's __init__ imports inside `try: ... except ImportError`.
_EXTRAS = ("pymupdf.layout", "pymupdf4llm")


def import_pymupdf() -> ModuleType:
    """The `pymupdf` module, imported without its optional extras when nothing in this process imported it yet."""
    module = sys.modules.get("pymupdf")
    if module is not None:
        return module
    # A None entry makes `import name` raise ImportError, which pymupdf's __init__ catches.
    blocked = [name for name in _EXTRAS if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import pymupdf
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]  # whoever asks for them later gets them
    return pymupdf
