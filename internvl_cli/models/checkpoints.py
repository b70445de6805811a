"""Step 0b, model resolution: a preset name, hub id or local path -> a local native-layout checkpoint directory."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ModelLoadError, ModelNotFoundError
from .presets import find_preset

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(spec: str, revision: str | None = None) -> tuple[Path, str]:
    """(local native checkpoint directory, the id to record) for a preset, hub id or local path."""
    preset = find_preset(spec)
    repo_id = preset.repo_id if preset else spec
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError("--model must be a checkpoint directory, not a file", path=local, hint="")
        return _native(local), str(local.resolve())
    if not _HUB_ID.match(repo_id):
        raise ModelNotFoundError(f"model '{spec}' is neither a local directory, a preset nor a hub id "
                                 "(run `internvl models` for the presets)")
    return _native(_download(repo_id, revision)), repo_id


def _download(repo_id: str, revision: str | None) -> Path:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id, revision=revision, local_files_only=offline)
    except Exception as exc:  # the hub client raises a family of network/cache errors; --verbose shows which
        raise ModelNotFoundError(f"model '{repo_id}' {_why_not_found(exc, offline)}") from exc
    return Path(path)


def _why_not_found(exc: Exception, offline: bool) -> str:
    name = type(exc).__name__
    if name in ("RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError"):
        return "does not exist on the hub, or needs a login (huggingface-cli login)"
    if offline:
        return "is not in the local cache and HF_HUB_OFFLINE forbids downloading it"
    return "is not in the local cache and the hub cannot be reached"


def _native(path: Path) -> Path:
    """The directory itself for native checkpoints; remote-code ones are converted once and cached."""
    if not (path / "config.json").exists():
        raise ModelLoadError("no config.json: not a model checkpoint directory", path=path)
    from .convert import ensure_native

    return ensure_native(path)
