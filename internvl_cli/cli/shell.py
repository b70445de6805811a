"""Shell conventions of the `internvl` command line: global options anywhere, flags that take no value, and
option defaults from the user's config file (userconfig.py), for every command and every option, generically.

Part of the CLI (it knows Click); the core never imports it.
"""
from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterator
from typing import Any

from typer.core import TyperGroup

from ..errors import UsageError
from .userconfig import load_config

try:  # Typer 0.2x vendors its own copy of Click: its exceptions and context stack are the ones in play
    from typer._click import core as _core
    from typer._click import exceptions as _exceptions
    from typer._click import globals as _globals
except ImportError:  # older Typer runs on Click itself
    import click as _core  # type: ignore[no-redef]

    _exceptions = _globals = _core

ClickUsageError = _exceptions.UsageError
Context = _core.Context

GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose")
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0", "y", "n"}
# Options a config file must not hold: secrets in plain text, or per-run targets that would surprise a later run.
NOT_CONFIGURABLE = {"password", "help", "output", "include", "exclude", "force", "retry-failed", "overwrite", "pages",
                    "calibration", "truth", "run", "report"}
# Commands that work on the config itself, or print help: they run even when the config file is broken.
_CONFIG_FREE = {"config", "help"}


class InternvlGroup(TyperGroup):
    """The root group: hoists global flags given after the command, refuses `--flag true`, and fills every
    command's option defaults from the config file (Click's default_map keeps flags and env vars first)."""

    # Options whose default must not come from the config although another command's option of that name
    # does: `inspect --model` reads a checkpoint's tiling only when asked to (it needs no model otherwise).
    config_exempt: set[tuple[str, str]] = set()

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = hoist_global_flags(self, list(args))
        rest = super().parse_args(ctx, args)
        name = next((token for token in args if not token.startswith("-")), None)
        if name not in _CONFIG_FREE and not ctx.resilient_parsing:
            try:
                ctx.default_map = config_defaults(self, load_config())
            except UsageError as error:
                raise ConfigFileError(error.one_line()) from None
        return rest


class ConfigFileError(ClickUsageError):
    """A broken config file, reported as a usage error (exit 2) before any command runs."""

    def show(self, file=None) -> None:  # one line, without the usage text: the command line was not the problem
        sys.stderr.write(f"internvl: error: {self.format_message()}\n")


def root_context() -> Any:
    """The running command line's root context (for commands that read the whole command tree)."""
    return _globals.get_current_context().find_root()


# ------------------------------------------------------------------------------------------------ parsing


def _value_options(command: Any) -> tuple[set[str], set[str]]:
    """(option strings that take a value, boolean flag strings) of `command`."""
    takes, flags = set(), set()
    for param in command.params:
        if getattr(param, "param_type_name", None) != "option":
            continue
        names = set(param.opts) | set(param.secondary_opts)
        (flags if param.is_flag or param.count else takes).update(names)
    return takes, flags


def hoist_global_flags(group: Any, args: list[str]) -> list[str]:
    """`internvl ocr x.pdf -q` -> `internvl -q ocr x.pdf`; also refuses a flag followed by true/false."""
    index = next((i for i, token in enumerate(args) if not token.startswith("-")), None)
    if index is None:
        return args
    command = group.commands.get(args[index])
    if command is None:
        return args
    hoisted: list[str] = []
    kept = args[: index + 1]
    for token, skip_value in _scan(command, args[index + 1:]):
        if token in GLOBAL_FLAGS and not skip_value:
            hoisted.append(token)
        else:
            kept.append(token)
    return hoisted + kept


def _scan(command: Any, tokens: list[str]) -> Iterator[tuple[str, bool]]:
    """Yields (token, is_protected): protected tokens are option values or come after `--`."""
    takes, flags = _value_options(command)
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if token == "--":
            yield from ((t, True) for t in tokens[position:])
            return
        if token in getattr(command, "commands", {}):
            yield token, False
            command = command.commands[token]
            takes, flags = _value_options(command)
        elif token in takes and position + 1 < len(tokens):
            yield token, False
            yield tokens[position + 1], True
            position += 1
        elif token in flags and position + 1 < len(tokens):
            _refuse_flag_value(token, tokens[position + 1])
            yield token, False
        else:
            yield token, False
        position += 1


def _refuse_flag_value(flag: str, following: str) -> None:
    if following.lower() in _BOOL_WORDS and not os.path.exists(following):
        raise ClickUsageError(f"{flag} is a flag and takes no value (got '{following}'): write {flag} alone "
                               "to turn it on, leave it out to keep it off")


# ------------------------------------------------------------------------------------------------ config keys


def option_key(param: Any) -> str | None:
    """The config key of an option: its first long name without the dashes (`--max-tiles` -> `max-tiles`)."""
    if getattr(param, "param_type_name", None) != "option":
        return None
    long_names = [name for name in param.opts if name.startswith("--")]
    return long_names[0][2:] if long_names else None


def configurable_options(group: Any) -> Iterator[tuple[str, Any, Any, str]]:
    """(command path, command, option, key) for every option a config value may set."""
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            continue  # groups of their own (config) have nothing worth a default
        for param in command.params:
            key = option_key(param)
            if key and key not in NOT_CONFIGURABLE and (name, key) not in getattr(group, "config_exempt", ()):
                yield name, command, param, key


def known_keys(group: Any) -> dict[str, list[str]]:
    """Every key a config may hold -> the commands it applies to (plain keys and COMMAND.key ones)."""
    keys: dict[str, list[str]] = {}
    for name, _, _, key in configurable_options(group):
        keys.setdefault(key, []).append(name)
        keys.setdefault(f"{name}.{key}", []).append(name)
    return keys


def config_defaults(group: Any, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Click's default_map: for each command, {parameter name: value} from the plain and COMMAND.key entries."""
    defaults: dict[str, dict[str, Any]] = {}
    for name, _, param, key in configurable_options(group):
        for candidate in (f"{name}.{key}", key):
            if candidate in values:
                defaults.setdefault(name, {})[param.name] = values[candidate]
                break
    return defaults


def check_config_value(group: Any, key: str, raw: str) -> Any:
    """The value to store for `key`, converted and checked by the option(s) it sets; UsageError otherwise."""
    targets = [(name, command, param) for name, command, param, k in configurable_options(group)
               if key in (k, f"{name}.{k}")]
    if not targets:
        bare = key.split(".")[-1]
        if bare in NOT_CONFIGURABLE:
            raise UsageError(f"'{key}' cannot be set in the config file (pass --{bare} on the command line)")
        close = difflib.get_close_matches(key, list(known_keys(group)), n=1)
        raise UsageError(f"unknown config key '{key}'", hint=f"did you mean {close[0]}?" if close else
                         "`internvl config keys` lists them")
    value: Any = None
    for name, command, param in targets:
        context = Context(command, info_name=name)
        try:  # the option's own conversion, range check and callback, as on the command line
            converted = param.process_value(context, [raw] if param.multiple else raw)
        except ClickUsageError as exc:
            raise UsageError(f"{key}: {exc.format_message()} (for `internvl {name}`)") from None
        value = list(converted) if param.multiple else converted
    return value
