"""Step 0a, a checkpoint's config.json read as a dict: the one reader for resolving, converting, quantizing, engines."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelLoadError


def read_checkpoint_config(path: Path) -> dict:
    """A checkpoint directory's config.json as a dict; ModelLoadError naming the directory otherwise."""
    path = Path(path)
    file = path / "config.json"
    if not path.is_dir():
        raise ModelLoadError("not a checkpoint directory", path=path)
    if not file.is_file():
        raise ModelLoadError("config.json is missing: not a model checkpoint directory", path=path)
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"config.json is unreadable ({exc})", path=path) from None
    if not isinstance(config, dict):
        raise ModelLoadError("config.json does not hold a JSON object", path=path)
    return config
