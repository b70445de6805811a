"""`internvl help`: exit codes, the config file, a command's help."""
from __future__ import annotations

from typing import Optional

import typer

from ..errors import EXIT_CODE_MEANINGS, UsageError
from .app import exit_on_error


def help_topic(topic: Optional[str] = typer.Argument(None, metavar="[TOPIC]",
                                                     help="exit-codes, config, or the name of a command.")) -> None:
    """Explain a topic: `exit-codes` (what scripts can rely on), `config` (keys and precedence), or a command.

    \b
    Examples:
      internvl help exit-codes
      internvl help config
      internvl help ocr
    """
    from .shell import Context, root_context

    root = root_context()
    with exit_on_error():
        if topic in (None, ""):
            typer.echo(root.command.get_help(root))
        elif topic in ("exit-codes", "exit-code", "codes"):
            typer.echo(exit_code_table())
        elif topic == "config":
            typer.echo(config_help(root.command))
        elif topic in root.command.commands:
            command = root.command.commands[topic]
            typer.echo(command.get_help(Context(command, info_name=topic, parent=root)))
        else:
            raise UsageError(f"no help topic '{topic}'", hint="try exit-codes, config, or a command name")


def exit_code_table() -> str:
    lines = ["Exit codes (the same table as README's):", ""]
    lines += [f"  {int(code):>3}  {code.name:<16} {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items()]
    lines += ["", "With several documents, a failure never stops the others; when every document failed for the",
              "same reason the exit code is that reason's, when some succeeded it is 10."]
    return "\n".join(lines)


def config_help(group) -> str:
    from .shell import known_keys
    from .userconfig import config_path

    keys = known_keys(group)
    plain = sorted(key for key in keys if "." not in key)
    return "\n".join([
        f"Config file: {config_path()} (INTERNVL_CLI_CONFIG to use another one).",
        "",
        "It holds defaults for command options: a flag on the command line wins, then an environment",
        "variable (INTERNVL_MODEL, ...), then the config file, then the built-in default. A key is an",
        "option's name without the dashes and applies to every command that has the option; COMMAND.key",
        "applies to one command and wins over the plain key.",
        "",
        "  internvl config set model internvl3-2b-awq",
        "  internvl config set max-tiles 6",
        "  internvl config set ocr.format text",
        "  internvl config list",
        "",
        "Keys: " + ", ".join(plain),
    ])
