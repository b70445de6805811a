"""Option groups: each declared once as (the assembly's options dataclass, its parameters), composed into a
document command's signature.

Typer reads a command's parameters from its function signature, so `with_groups` writes that signature: the
command's own parameters, then every group's, each parameter named as its dataclass field and typed from it.
The command body receives one dataclass per group. Adding an option to every command that has its group is one
field on the dataclass (runs/assembly.py) and one line here.
"""
from __future__ import annotations

import copy
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass

from typer.core import TyperCommand

from ..runs.assembly import DocumentOptions, EngineOptions, LoopOptions, PromptOptions, TileOptions
from ..runs.batch import BatchSettings
from . import options as o

ENGINE_PANEL, PAGES_PANEL, RUN_PANEL = "Model and engine", "Pages and tiles", "Inputs, output and batches"


@dataclass(frozen=True)
class Group:
    """Parameters (name -> Typer declaration) that build one options dataclass; `panel` heads them in --help."""

    options: type
    params: dict
    panel: str | None = None

    def without(self, *names: str) -> Group:
        """The group less some parameters (their dataclass defaults apply): extract has no --min-tiles."""
        return Group(self.options, {k: v for k, v in self.params.items() if k not in names}, self.panel)

    def signature(self) -> list[inspect.Parameter]:
        hints = typing.get_type_hints(self.options)
        return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=self._declaration(declared),
                                  annotation=hints[name]) for name, declared in self.params.items()]

    def build(self, values: dict):
        return self.options(**{name: values.pop(name) for name in self.params})

    def _declaration(self, declared):
        if self.panel is None or getattr(declared, "rich_help_panel", None):
            return declared
        placed = copy.copy(declared)  # the shared declaration stays panel-free for other commands
        placed.rich_help_panel = self.panel
        return placed


ENGINE = Group(EngineOptions, {
    "model": o.ModelOpt, "device": o.DeviceOpt, "dtype": o.DtypeOpt, "awq_kernel": o.AwqKernelOpt,
    "engine_name": o.EngineOpt, "servers": o.ServerOpt, "concurrency": o.ConcurrencyOpt,
    "request_timeout": o.TimeoutOpt, "api_key": o.ApiKeyOpt, "tensor_parallel": o.TensorParallelOpt, "data_parallel": o.DataParallelOpt,
}, ENGINE_PANEL)

DOCUMENTS = Group(DocumentOptions, {"pages": o.PagesOpt, "password": o.PasswordOpt, "frames": o.FramesOpt},
                  PAGES_PANEL)

TILES = Group(TileOptions, {"min_tiles": o.MinTilesOpt, "max_tiles": o.MaxTilesOpt}, PAGES_PANEL)

BATCH = Group(BatchSettings, {
    "paths": o.PathsArg, "output": o.OutputOpt, "include": o.IncludeOpt, "exclude": o.ExcludeOpt,
    "force": o.ForceOpt, "retry_failed": o.RetryOpt, "wait": o.WaitOpt, "batch_size": o.BatchOpt,
    "batch_tiles": o.BatchTilesOpt, "render_workers": o.RenderWorkersOpt,
}, RUN_PANEL)

PROMPTS = Group(PromptOptions, {"prompt": o.PromptOpt, "anchored_prompt": o.AnchoredPromptOpt,
                                "system": o.SystemOpt, "no_system": o.NoSystemOpt}, o.PROMPTS_PANEL)

LOOPS = Group(LoopOptions, {
    "loop_stop": o.LoopStopOpt, "loop_repeats": o.LoopRepeatsOpt, "loop_tokens": o.LoopTokensOpt,
    "loop_chars": o.LoopCharsOpt, "loop_lines": o.LoopLinesOpt, "loop_line_chars": o.LoopLineCharsOpt,
}, o.LOOPS_PANEL)


class PanelledCommand(TyperCommand):
    """A command whose plain help (the app has no Rich markup) heads each option group with its panel name:
    the command's own options first, then one section per group, in the order the signature lists them."""

    def format_options(self, ctx, formatter) -> None:
        arguments: list = []
        sections: dict[str, list] = {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
            else:
                sections.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        for title, records in sections.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def with_groups(**groups: Group) -> Callable:
    """Decorates a command whose keyword-only parameters are named after `groups`: Typer sees the command's other
    parameters followed by every group's; the body gets each group built into its dataclass."""

    def decorate(body: Callable) -> Callable:
        own = [p for p in inspect.signature(body, eval_str=True).parameters.values() if p.name not in groups]
        composed = own + [param for group in groups.values() for param in group.signature()]

        @functools.wraps(body)
        def command(**values):
            built = {key: group.build(values) for key, group in groups.items()}
            return body(**values, **built)

        del command.__wrapped__  # Typer must read the composed signature, not the body's
        command.__signature__ = inspect.Signature(composed)
        command.__annotations__ = {p.name: p.annotation for p in composed}
        return command

    return decorate
