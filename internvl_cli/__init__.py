"""internvl-cli: document understanding (OCR, charts, schema-valid JSON) with locally loaded InternVL models.

The library facade (library.py) is reachable from here, loaded on first use so that `import internvl_cli` stays
light: `internvl_cli.load(model)`, `internvl_cli.ocr(paths)`, `chart(paths)`, `extract(paths, schema=...)`.
"""

__version__ = "0.1.0"

_FACADE = ("Document", "Extraction", "Model", "Page", "chart", "extract", "load", "ocr")
__all__ = ["__version__", *_FACADE]


def __getattr__(name: str):
    if name in _FACADE:
        from . import library

        return getattr(library, name)
    raise AttributeError(f"module 'internvl_cli' has no attribute '{name}'")
