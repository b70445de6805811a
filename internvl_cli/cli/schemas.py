"""`internvl schemas`: the shipped JSON Schemas, and what a schema means to decoding."""
from __future__ import annotations

import json

import typer

from .app import err, exit_on_error

schemas_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)  # help: the callback's docstring


@schemas_app.callback()
def schemas(ctx: typer.Context) -> None:
    """The JSON Schemas shipped with internvl-cli: use their names with `extract --schema`; `internvl schemas
    show NAME` prints one.

    \b
    Examples:
      internvl schemas
      internvl schemas show invoice
      internvl extract scan.pdf --schema invoice
    """
    from ..schema.loading import list_schemas

    if ctx.invoked_subcommand is not None:
        return
    with exit_on_error():
        for name, description in list_schemas():
            typer.echo(f"{name}\t{description}")


@schemas_app.command("show")
def schemas_show(
    spec: str = typer.Argument(..., help="A shipped schema's name, a schema file, inline JSON or a concise "
                               "field list (shown as the JSON Schema it stands for)."),
    grammar: bool = typer.Option(False, "--grammar", help="Print the grammar's copy instead (what decoding "
                                 "enforces), and on stderr what is validated but not enforced."),
) -> None:
    """Print a schema as JSON: copy a shipped one to start your own, or see what a concise list means."""
    from ..schema.loading import load_schema, show_schema

    with exit_on_error():
        if not grammar:
            typer.echo(show_schema(spec), nl=False)
            return
        loaded = load_schema(spec)
        typer.echo(json.dumps(loaded.grammar, indent=2, ensure_ascii=False))
        for keyword, where in loaded.unenforced_at:
            err(f"internvl: not enforced (validated): {keyword} at {where}")
