"""`internvl prompts`: the shipped prompts and their placeholders."""
from __future__ import annotations

import json
from typing import Optional

import typer

from .app import exit_on_error


def prompts(
    name: Optional[str] = typer.Argument(None, help="Print this shipped prompt's text (a start for your own)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """List the shipped prompts (use them, or files of your own, with --prompt / --anchored-prompt).

    Placeholders: {text_layer} the PDF page's text layer (anchored prompts only), {fields} the schema's
    fields with their descriptions and {page_note} which pages the images show (extract). Write {{name}}
    for a literal {name}.

    \b
    Examples:
      internvl prompts
      internvl prompts ocr > my-ocr.md     # edit it, then: internvl ocr scan.pdf --prompt my-ocr.md
    """
    from ..tasks.prompts import list_prompts, shipped_prompt

    with exit_on_error():
        if name is not None:
            typer.echo(shipped_prompt(name).text)
            return
        for row in list_prompts():
            if as_json:
                typer.echo(json.dumps(row))
                continue
            names = " ".join("{" + p + "}" for p in row["placeholders"]) or "-"
            typer.echo(f"{row['name']}\t{row['command']} {row['option']}\t{row['pages']}\t{names}\t{row['purpose']}")
