"""The command-line client, one client of the core: each module parses one command's arguments and prints; the core
(importable without Typer) does the work. `app` lists the commands in the order `internvl --help` shows them."""
from __future__ import annotations

import errno

import typer

from . import config, doc_commands, doctor, evaluation, help, inspect, model_commands, prompts, schemas, status
from .app import app, reader_left
from .groups import PanelledCommand

app.command(cls=PanelledCommand)(doc_commands.ocr)
app.command(cls=PanelledCommand)(doc_commands.chart)
app.command(cls=PanelledCommand)(doc_commands.extract)
app.command()(prompts.prompts)
app.add_typer(schemas.schemas_app, name="schemas")
app.command()(status.status)
app.command("eval")(evaluation.eval_outputs)
app.command()(model_commands.convert)
app.command()(model_commands.quantize)
app.command()(model_commands.models)
app.command()(doctor.doctor)
app.command()(inspect.inspect)
app.command()(model_commands.download)
app.command("help")(help.help_topic)
app.add_typer(config.config_app, name="config")

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as stop:
        # Outside our commands (`internvl --help | head`) Click turns EPIPE into exit 1; same rule as inside.
        cause = stop.__context__
        if stop.code == 1 and isinstance(cause, OSError) and cause.errno == errno.EPIPE:
            try:
                reader_left()
            except typer.Exit as closed:
                raise SystemExit(closed.exit_code) from None
        raise
