"""`internvl config`: option defaults kept in a config file."""
from __future__ import annotations

import json

import typer

from .app import exit_on_error, note

config_app = typer.Typer(no_args_is_help=True, help="""Keep option defaults in a config file: set, get, unset, list.

    A key is an option name without dashes (model, max-tiles, format, ...) and applies to every command with
    that option; COMMAND.key (ocr.format) applies to one command. Flags win over environment variables,
    which win over the config file. `internvl help config` lists every key.

    \b
    Examples:
      internvl config set model internvl3-2b-awq
      internvl config set ocr.format text
      internvl config list
      internvl config unset model
    """)


def root_group():
    from .shell import root_context

    return root_context().command


def _shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@config_app.command("set")
def config_set(key: str = typer.Argument(..., help="An option name (max-tiles) or COMMAND.option (ocr.format)."),
               value: str = typer.Argument(..., help="The default, as you would type it after the option.")) -> None:
    """Set a default: `internvl config set KEY VALUE` (checked as the option would check it).

    \b
    Examples:
      internvl config set model internvl3-2b-awq
      internvl config set max-tiles 6
    """
    from .shell import check_config_value
    from .userconfig import set_value

    with exit_on_error():
        checked = check_config_value(root_group(), key, value)
        path = set_value(key, checked)
        note(f"{key} = {_shown(checked)} (in {path})")


@config_app.command("get")
def config_get(key: str = typer.Argument(..., help="A key set with `internvl config set`.")) -> None:
    """Print a key's value (nothing, with a note on stderr, when it is not set).

    \b
    Examples:
      internvl config get model
    """
    from .userconfig import load_config

    with exit_on_error():
        values = load_config()
        if key in values:
            typer.echo(_shown(values[key]))
        else:
            note(f"{key} is not set")


@config_app.command("unset")
def config_unset(key: str = typer.Argument(..., help="A key set with `internvl config set`.")) -> None:
    """Remove a key: the option's built-in default applies again.

    \b
    Examples:
      internvl config unset max-tiles
    """
    from .userconfig import unset_value

    with exit_on_error():
        if not unset_value(key):
            note(f"{key} was not set")


@config_app.command("keys")
def config_keys() -> None:
    """Print every key a config file may hold and the commands it applies to.

    \b
    Examples:
      internvl config keys
      internvl config keys | grep tiles
    """
    from .shell import known_keys

    with exit_on_error():
        for key, commands in sorted(known_keys(root_group()).items()):
            if "." not in key:
                typer.echo(f"{key}\t{', '.join(commands)}")


@config_app.command("list")
def config_list(as_json: bool = typer.Option(False, "--json", help="Print the whole file as JSON.")) -> None:
    """Print every key that is set, `key = value`, one per line (the file's path goes to stderr).

    \b
    Examples:
      internvl config list
      internvl config list --json
    """
    from .userconfig import config_path, load_config

    with exit_on_error():
        values = load_config()
        note(f"config file: {config_path()}" + ("" if values else " (nothing set)"))
        if as_json:
            typer.echo(json.dumps(values, indent=2, sort_keys=True))
            return
        for key in sorted(values):
            typer.echo(f"{key} = {_shown(values[key])}")
