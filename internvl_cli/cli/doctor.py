"""`internvl doctor`: this machine, and what a run would do on it."""
from __future__ import annotations

import json
import re
from typing import Optional

import typer

from .app import exit_on_error
from .options import AwqKernelOpt, DeviceOpt


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    warm: bool = typer.Option(False, "--warm", help="Build the AWQ kernel a run would use now (minutes, once), so "
                              "that the first real run, a cron job say, does not wait for it."),
    pages: Optional[int] = typer.Option(None, "--pages", min=0, help="Say which engine `--engine auto` would take "
                                        "for a run of this many pending pages, and why."),
    device: str = DeviceOpt, awq_kernel: str = AwqKernelOpt,
) -> None:
    """Check this machine and say what a run would do: torch and its CUDA build, the NVIDIA driver, GPUs, the
    device, dtype, attention and AWQ kernel a run would pick (and why), compilers, cached kernels, presets that fit,
    the engines installed and which one `--engine auto` takes (`--pages N`: for a run of N pages), and where the
    config file (`internvl config`) lives. JSON keys are snake_case.

    \b
    Examples:
      internvl doctor
      internvl doctor --warm          # compile the AWQ kernel ahead of the first run
      internvl doctor --awq-kernel triton
      internvl doctor --pages 5000    # which engine a 5,000-page run takes
      internvl doctor --json | jq .gpus
    """
    from ..diagnostics import diagnose
    from ..diagnostics import warm as warm_kernel
    from .userconfig import config_path

    with exit_on_error():
        report = diagnose(device=device, awq_kernel=awq_kernel, pages=pages)
        path = config_path()
        report["config file"] = f"{path}" + ("" if path.exists() else " (not created yet)")
        if warm:
            report["warm"] = warm_kernel(device=device, awq_kernel=awq_kernel)
        if as_json:
            typer.echo(json.dumps({json_key(key): value for key, value in report.items()}, indent=2))
            return
        for key, value in report.items():
            if isinstance(value, list):
                value = ", ".join(value) or "none"
            typer.echo(f"{key:>16}: {value}")


def json_key(label: str) -> str:
    """'awq kernels' -> 'awq_kernels': report labels read well on a terminal, keys must be identifiers."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
