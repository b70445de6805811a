"""Step 0b, model resolution: a preset name, hub id or local path -> a local native-layout checkpoint directory."""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelLoadError, ModelNotFoundError
from .presets import PRESETS, find_preset

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
Note = Callable[[str], None]


def resolve_checkpoint(spec: str, revision: str | None = None, note: Note | None = None) -> tuple[Path, str]:
    """(local native checkpoint directory, the id to record) for a preset, hub id or local path.

    `note` hears about slow steps (a conversion) before they start."""
    preset = find_preset(spec)
    repo_id = preset.repo_id if preset else spec
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError("--model must be a checkpoint directory, not a file", path=local, hint="")
        return _native(local, note), str(local.resolve())
    if not _HUB_ID.match(repo_id):
        close = difflib.get_close_matches(spec.lower(), list(PRESETS), n=1)
        raise ModelNotFoundError(f"model '{spec}' is neither a local directory, a preset nor a hub id",
                                 hint=f"did you mean {close[0]}?" if close else "run `internvl models` for the presets")
    return _native(_download(repo_id, revision, spec), note), repo_id


def download_checkpoint(spec: str, revision: str | None = None, *, progress: bool = True,
                        note: Note | None = None) -> tuple[Path, str]:
    """`internvl download`: fetches a preset or hub id into the Hugging Face cache (or finds it there) and
    converts it to the native layout once, so later runs (cron at 3 a.m.) neither download nor convert.
    A local directory is only converted. Returns what `resolve_checkpoint` returns."""
    if not progress:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    return resolve_checkpoint(spec, revision, note=note)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download(repo_id: str, revision: str | None, spec: str) -> Path:
    offline = hub_offline()
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id, revision=revision, local_files_only=offline)
    except Exception as exc:  # the hub client raises a family of network/cache errors; --verbose shows which
        raise ModelNotFoundError(f"model '{repo_id}' {_why_not_found(exc, offline)}",
                                 hint=_not_found_hint(repo_id, spec, offline)) from exc
    return Path(path)


def _why_not_found(exc: Exception, offline: bool) -> str:
    name = type(exc).__name__
    if name in ("RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError"):
        return "does not exist on the hub, or needs a login (huggingface-cli login)"
    if offline:
        return "is not in the local cache and HF_HUB_OFFLINE forbids downloading it"
    return "is not in the local cache and the hub cannot be reached"


def _not_found_hint(repo_id: str, spec: str, offline: bool) -> str:
    """What to do next, given what is already set (no advice to set HF_HUB_OFFLINE when it is set)."""
    close = difflib.get_close_matches(repo_id.lower(), [p.repo_id.lower() for p in PRESETS.values()], n=1)
    if close and close[0] != repo_id.lower():
        name = next(p.name for p in PRESETS.values() if p.repo_id.lower() == close[0])
        return f"did you mean {name}?"
    fetch = f"fetch it once where the hub is reachable with `internvl download {spec}`"
    if offline:
        return f"{fetch} (HF_HUB_OFFLINE unset), or pass a local checkpoint directory with --model PATH"
    return (f"{fetch}, or pass a local checkpoint directory with --model PATH; set HF_HUB_OFFLINE=1 to use only "
            "the local cache without waiting for the network")


def _native(path: Path, note: Note | None = None) -> Path:
    """The directory itself for native checkpoints; remote-code ones are converted once and cached."""
    if not (path / "config.json").exists():
        raise ModelLoadError("no config.json: not a model checkpoint directory", path=path)
    from .convert import ensure_native

    def before_convert(src: Path, dst: Path) -> None:
        if note is not None:
            note(f"converting {src} to the native layout, once (cached in {dst}) ...")

    return ensure_native(path, before_convert=before_convert)
