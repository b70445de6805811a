"""User defaults: the config file behind `internvl config` (where it lives, reading and writing its values).

The file is a JSON object of option defaults, `{"model": "internvl3-2b-awq", "max-tiles": 6, "ocr.format": "text"}`:
a key is an option's long name without the dashes (it applies to every command that has that option) or
`COMMAND.option` (that command only, and it wins over the plain key). Which keys exist is the CLI's business
(every option of every command); this module only stores values. Precedence, as in git and pip: a flag on the
command line, then an environment variable (`INTERNVL_MODEL`, ...), then this file, then the built-in default.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import UsageError

CONFIG_ENV = "INTERNVL_CLI_CONFIG"  # a different file (tests, several profiles)


def config_path() -> Path:
    """`$INTERNVL_CLI_CONFIG`, else `$XDG_CONFIG_HOME/internvl-cli/config.json` (default `~/.config/...`)."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "internvl-cli" / "config.json"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The stored values; {} when there is no file yet. A broken file is a usage error naming it."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read the config file ({exc.strerror or exc})", path=path) from None
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"the config file is not valid JSON ({exc})", path=path,
                         hint="fix it, or delete it to start over") from None
    if not isinstance(values, dict):
        raise UsageError("the config file must hold a JSON object of option defaults", path=path,
                         hint="fix it, or delete it to start over")
    return values


def save_config(values: dict[str, Any], path: Path | None = None) -> Path:
    """Writes all values at once (temp file, then rename), so a crash never leaves half a file."""
    path = path or config_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        raise UsageError(f"cannot write the config file ({exc.strerror or exc})", path=path) from None
    return path


def set_value(key: str, value: Any, path: Path | None = None) -> Path:
    values = load_config(path)
    values[key] = value
    return save_config(values, path)


def unset_value(key: str, path: Path | None = None) -> bool:
    """Removes `key`; False when it was not set."""
    values = load_config(path)
    if key not in values:
        return False
    del values[key]
    save_config(values, path)
    return True
