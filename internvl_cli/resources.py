"""Locates the product's data files (prompt templates, shipped JSON Schemas) in a wheel or a source checkout."""
from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(kind: str) -> Path:
    """The folder holding `kind` ("prompts" or "schemas"): packaged copy first, then the source tree's."""
    packaged = _PACKAGE_DIR / "_data" / kind
    if packaged.is_dir():
        return packaged
    source = _PACKAGE_DIR.parent / kind
    if source.is_dir():
        return source
    raise FileNotFoundError(f"internvl-cli data folder '{kind}' is missing from the installation")


def read_prompt(name: str) -> str:
    """The text of prompts/<name>.md, trailing whitespace removed."""
    return (data_dir("prompts") / f"{name}.md").read_text(encoding="utf-8").rstrip()
