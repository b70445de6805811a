"""`internvl status`: what an output directory's ledger says."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import UsageError
from .app import exit_on_error


def status(
    output: Path = typer.Argument(..., help="An output directory written with -o."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise an output directory: documents done, failed (with reasons), interrupted and pending.

    Interrupted documents (the run was stopped or killed before they finished) are listed apart from
    failures: rerunning the same command finishes them.

    \b
    Examples:
      internvl status out/
      internvl status out/ --json | jq .failed
    """
    from ..runs.ledger import Ledger

    with exit_on_error():
        if not output.is_dir():
            raise UsageError(f"{output}: not a directory")
        with Ledger.open(output, create=False) as ledger:
            summary = ledger.summary()
        if as_json:
            typer.echo(json.dumps(summary, indent=2, default=str))
            return
        typer.echo(f"done: {summary['done']}  failed: {summary['failed']}  pending: {summary['pending']}  "
                   f"running: {summary['running']}  interrupted: {summary.get('interrupted', 0)}  "
                   f"pages: {summary['pages']}")
        for failure in summary["failures"]:
            if failure["interrupted"]:
                typer.echo(f"interrupted: {failure['source']} (rerun the same command to finish it)")
            else:
                typer.echo(f"failed: {failure['source']}: {failure['error']}")
        for partial in summary["pages_failed_in"]:
            typer.echo(f"done with failed pages: {partial['source']}: {partial['pages_failed']} of "
                       f"{partial['pages']} pages failed")
