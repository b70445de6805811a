"""The model commands: models, download, convert, quantize."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ..models.presets import DEFAULT_MODEL
from .app import exit_on_error, note, state
from .options import preset_names


def convert(
    src: Path = typer.Argument(..., help="A checkpoint directory in the original remote-code layout "
                               "(InternVLChatModel), bf16 or AWQ."),
    dst: Path = typer.Argument(..., help="Where to write the native (-hf) layout checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it already holds files."),
) -> None:
    """Convert an official remote-code InternVL checkpoint to the native transformers layout, offline.

    No remote code is executed. The fused vision qkv is split, weights renamed, AWQ quantization lifted
    to the top-level config, and tokenizer, chat template and preprocessor config written. Commands do
    this by themselves (once, cached) when --model names such a checkpoint.

    \b
    Examples:
      internvl convert ~/models/InternVL3-2B-AWQ ~/models/InternVL3-2B-AWQ-native
      internvl ocr scan.pdf --model ~/models/InternVL3-2B-AWQ-native
    """
    from ..models.convert import convert_checkpoint

    with exit_on_error():
        out = convert_checkpoint(src, dst, overwrite=overwrite)
        note(f"converted {src} -> {out}")


def quantize(
    src: Path = typer.Argument(..., help="A native (-hf) bf16 InternVL checkpoint directory."),
    dst: Path = typer.Argument(..., help="Where to write the AWQ 4-bit checkpoint."),
    calibration: list[str] = typer.Option(..., "--calibration", "-c", help="Document images or folders used "
                                          "to calibrate (a few dozen pages of your own documents)."),
) -> None:
    """AWQ-quantize the language model of a native checkpoint (needs a CUDA GPU; vision stays 16-bit).

    \b
    Examples:
      internvl quantize ~/models/InternVL3-2B-hf ~/models/InternVL3-2B-awq -c my-scans/
      internvl ocr scan.pdf --model ~/models/InternVL3-2B-awq
    """
    from ..documents.inputs import discover
    from ..models.quantize import quantize_to_awq

    with exit_on_error():
        images = [doc.path for doc in discover(calibration).docs]
        if not images:
            raise UsageError("--calibration found no images")
        quantize_to_awq(src, dst, images)
        note(f"quantized {src} -> {dst}")


def models(as_json: bool = typer.Option(False, "--json", help="Print JSON lines.")) -> None:
    """List the model presets: size, layout, quantization, expected GPU memory, engines, whether cached, licence.

    The licence column gives the weights' terms as their model cards state them (InternVL's part, then the
    language model's); read the model card before commercial use. A table on a terminal, JSON lines in a
    pipe or with --json.

    \b
    Examples:
      internvl models
      internvl models --json | jq -r 'select(.cached) | .name'
      internvl download internvl3-2b-awq
    """
    from ..models.presets import PRESETS, is_cached

    with exit_on_error():
        rows = [{**preset.__dict__, "cached": is_cached(preset), "default": name == DEFAULT_MODEL}
                for name, preset in PRESETS.items()]
        if as_json or not sys.stdout.isatty():
            for row in rows:
                typer.echo(json.dumps(row))
            return
        _print_models(rows)


def _print_models(rows: list[dict]) -> None:
    """The table keeps every repository id whole (the column users copy); the licence column wraps instead."""
    from rich.console import Console
    from rich.table import Table

    table = Table("preset", "repository", "quant", "GPU GB", "tiles", "engines", "cached", "licence", box=None,
                  pad_edge=False)
    for column in table.columns[:7]:
        column.no_wrap = True
    for column, key in ((table.columns[0], "name"), (table.columns[1], "repo_id")):
        column.min_width = max(len(row[key]) + (10 if key == "name" and row["default"] else 0) for row in rows)
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "")
        table.add_row(name, row["repo_id"], row["quantization"], f"{row['gpu_memory_gb']:.1f}",
                      str(row["max_tiles"]), ",".join(row["engines"]), "yes" if row["cached"] else "no",
                      row["licence"])
    Console().print(table)


def download(
    model: str = typer.Argument(..., metavar="MODEL", autocompletion=preset_names,
                                help="A preset (see `internvl models`), a hub id, or a local checkpoint directory."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit of the hub repository."),
) -> None:
    """Fetch a model into the local cache and convert it ahead of time, with progress.

    Later runs then neither download nor convert (a cron job at 3 a.m. must not wait for, or fail on, the
    network). The local native checkpoint directory is printed on stdout; a model already fetched and
    converted is only looked up. With HF_HUB_OFFLINE=1 only the cache is used.

    \b
    Examples:
      internvl download internvl3-2b-awq
      internvl download OpenGVLab/InternVL3-8B-hf --revision main
      HF_HUB_OFFLINE=1 internvl ocr scan.pdf -m internvl3-2b-awq    # later, offline
    """
    from ..models.checkpoints import download_checkpoint

    with exit_on_error():
        note(f"fetching {model} (files already in the cache are not fetched again) ...")
        path, model_id = download_checkpoint(model, revision, progress=not state["quiet"], note=note)
        note(f"ready: {model_id} -> {path}")
        typer.echo(str(path))
