"""Step 5, assembly: a document command's typed options -> (engine, task, batch settings), checked in the order
that keeps mistakes cheap.

The one place an engine and a task are built for a run: the CLI's document commands, `inspect --prompt`, `eval
--run` (through those commands) and the library facade all come here. Usage errors (formats, page ranges,
prompts, schemas, loop rules) surface first; then the inputs are discovered, so a mistyped path is reported
before the model is resolved (a preset may need a download); then the checkpoint's info gives the tiling and
the context a task is sized to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..decoding.repetition import LoopRule
from ..documents.inputs import Discovery
from ..documents.tiling import TilingConfig
from ..engine.base import DEFAULT_MAX_NEW_TOKENS, Engine, Sampling
from ..errors import UsageError
from ..models.presets import DEFAULT_MODEL
from ..tasks.base import Task
from .batch import BatchSettings, Hooks, find_documents, run_documents
from .outputs import names_a_file
from .runner import DocumentFailure, RunReport

if TYPE_CHECKING:  # jsonschema takes seconds to import: only extract pays for it, when it loads a schema
    from ..schema.loading import LoadedSchema

COMMANDS = ("ocr", "chart", "extract")


@dataclass
class EngineOptions:
    """Which model, on which backend and device (the CLI's --model, --engine, --server, ... by parameter name)."""

    model: str | None = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    awq_kernel: str | None = "auto"  # None: the engine will only read configs and tokenize (inspect --prompt)
    engine_name: str = "auto"  # settled per run by engine/auto.py: vllm when a long CUDA run repays its start
    servers: list[str] = field(default_factory=list)
    concurrency: int = 32
    request_timeout: float = 600.0
    api_key: str | None = None  # servers' Bearer key; never printed or recorded
    tensor_parallel: int = 1
    data_parallel: int = 1

    def settings(self, max_images: int = 1):
        from ..engine import EngineSettings

        return EngineSettings(kind=self.engine_name, servers=list(self.servers), concurrency=self.concurrency,
                              request_timeout=self.request_timeout, tensor_parallel_size=self.tensor_parallel,
                              data_parallel_size=self.data_parallel, max_images=max_images,
                              api_key=self.api_key or None)


@dataclass
class DocumentOptions:
    """How each document is read: which pages and frames, with which password."""

    pages: str | None = None
    password: str | None = None
    frames: str | None = None


@dataclass
class TileOptions:
    """Tiles per page; None takes the checkpoint's own limit."""

    min_tiles: int | None = None
    max_tiles: int | None = None


@dataclass
class PromptOptions:
    """The instruction and the system turn (names of shipped prompts, files, or text)."""

    prompt: str | None = None
    anchored_prompt: str | None = None
    system: str | None = None
    no_system: bool = False


@dataclass
class LoopOptions:
    """When an answer that repeats itself is a loop to stop (decoding/repetition.py's LoopRule)."""

    loop_stop: bool = True
    loop_repeats: int = LoopRule().min_repeats
    loop_tokens: int = LoopRule().max_tokens
    loop_chars: int = LoopRule().max_chars
    loop_lines: int = LoopRule().max_lines
    loop_line_chars: int = LoopRule().max_line_chars

    def rule(self) -> LoopRule:
        try:
            return LoopRule(min_repeats=self.loop_repeats, max_tokens=self.loop_tokens, max_chars=self.loop_chars,
                            max_lines=self.loop_lines, max_line_chars=self.loop_line_chars, enabled=self.loop_stop)
        except ValueError as exc:  # named as the user typed them
            message = str(exc)
            for field_name, flag in _LOOP_FLAGS.items():
                message = message.replace(f"LoopRule.{field_name}", flag)
            raise UsageError(message) from None


_LOOP_FLAGS = {"min_repeats": "--loop-repeats", "max_tokens": "--loop-tokens", "max_chars": "--loop-chars",
               "max_lines": "--loop-lines", "max_line_chars": "--loop-line-chars"}


@dataclass
class ExtractOptions:
    """What only extract asks: the schema, voting, and the window of pages shown at once. A window left None
    is sized to the model's context (at most 6 pages and 24 tiles); one given is kept or refused."""

    schema: str | LoadedSchema | None = None
    data_only: bool = False
    votes: int = 1
    window_pages: int | None = None
    window_tiles: int | None = None


DEFAULT_WINDOW_PAGES, DEFAULT_WINDOW_TILES = 6, 24


@dataclass
class DocumentCommand:
    """One document command, typed: `internvl ocr|chart|extract` with everything it was given."""

    command: str
    batch: BatchSettings
    engine: EngineOptions = field(default_factory=EngineOptions)
    documents: DocumentOptions = field(default_factory=DocumentOptions)
    tiles: TileOptions = field(default_factory=TileOptions)
    prompts: PromptOptions = field(default_factory=PromptOptions)
    loop: LoopOptions = field(default_factory=LoopOptions)
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    fmt: str | None = None  # None: the command's default (ocr: from -o FILE's ending, or how many documents)
    text_layer: bool = True
    max_new_tokens: int | None = None  # None: the default (extract: grown to fit the schema)
    lines: bool = False  # ocr: each page's lines with their boxes (implied by the pdf and hocr formats)
    redo_ocr: bool = False  # ocr: pages whose text is all invisible are located anew, their old layer replaced


@dataclass
class Assembly:
    """A run ready to go: its engine (weights not loaded yet), task, batch settings, output format, and the
    documents discovered before the model was resolved."""

    engine: Engine | None  # None when discovery found nothing to run: no model was resolved
    task: Task | None
    batch: BatchSettings
    fmt: str
    suffix: str
    found: Discovery

    def run(self, hooks: Hooks = Hooks(), stdout: bool = True) -> RunReport:
        if self.engine is None:  # every path failed discovery: each was reported, nothing else to do
            return RunReport(failures=[DocumentFailure(Path(e.path or "-"), e) for e in self.found.errors])
        return run_documents(self.task, self.engine, self.batch, self.fmt, self.suffix, hooks, found=self.found,
                             stdout=stdout)


def assemble(command: DocumentCommand, engine: Engine | None = None, hooks: Hooks = Hooks(),
             preview: bool = False) -> Assembly:
    """Checks `command`, discovers its documents, then resolves the model (unless `engine`, one already made, is
    given) and builds its task. `preview` (inspect --prompt): the task as the command would build it, for an
    engine that only tokenizes; no budget notes, no preflight."""
    if command.command not in COMMANDS:
        raise UsageError(f"the command must be one of {', '.join(COMMANDS)}, not '{command.command}'")
    from ..tasks.prompts import prompt_set, resolve_system

    fmt = _format(command)
    check_pages(command.documents, command.max_new_tokens)
    options = command.extract
    schema = None
    if command.command == "extract":
        if options.votes < 1 or (options.window_pages or 1) < 1 or (options.window_tiles or 1) < 1:
            raise UsageError("--votes, --window-pages and --window-tiles must be at least 1")
        if options.schema is None:
            raise UsageError("extract prompts need --schema (its fields go into the prompt)")
        schema = _schema(options.schema)  # a bad schema fails before any model is resolved
    prompts = prompt_set(command.command, command.prompts.prompt, command.prompts.anchored_prompt)
    loop = command.loop.rule()
    system = resolve_system(command.prompts.system, command.prompts.no_system)
    budget = command.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    notes: list[str] = []
    if schema is not None and not preview:
        from ..tasks.extract import answer_budget

        budget, notes = answer_budget(schema, budget, command.max_new_tokens is not None)
    found = command_documents(command.batch, hooks)
    if engine is None and not found.docs:
        return Assembly(None, None, command.batch, fmt, _suffix(command.command, fmt), found)
    window_pages = options.window_pages or DEFAULT_WINDOW_PAGES
    if engine is None:
        engine = open_engine(command.engine, max_images=window_pages if schema is not None else 1,
                             tokenizer_only=preview)
        if preview:  # `--engine auto` shows the prompts of the engine a run of unknown length would take
            engine = engine.settle(lambda: None)
    sampling = Sampling(max_new_tokens=budget, loop=loop)
    task = _task(command, fmt, engine, sampling, prompts, system, schema)
    if schema is not None:
        if options.window_pages is None and options.window_tiles is None:
            fitted = task.fit_window(engine.context_length)
            if fitted:
                notes.append(fitted)
        if not preview:
            notes += task.preflight(engine.context_length)
    for message in notes:
        hooks.note(message)
    return Assembly(engine, task, command.batch, fmt, _suffix(command.command, fmt), found)


def open_engine(options: EngineOptions, max_images: int = 1, tokenizer_only: bool = False) -> Engine:
    """Resolves the checkpoint and reads its info once; the weights load only when there is work to do."""
    from ..engine import load_engine

    return load_engine(options.model, device="cpu" if tokenizer_only else options.device, dtype=options.dtype,
                       settings=options.settings(max_images), awq_kernel=None if tokenizer_only else options.awq_kernel)


def tiling_for(model: str | None, tiles: TileOptions = TileOptions()) -> TilingConfig:
    """A checkpoint's tiling (its small config files only), or InternVL's standard one, within `tiles`' limits."""
    if model is None:
        base = TilingConfig()
    else:
        from ..models.info import checkpoint_info

        base = checkpoint_info(model).tiling
    return base.with_limits(tiles.min_tiles, tiles.max_tiles)


def command_documents(batch: BatchSettings, hooks: Hooks = Hooks()) -> Discovery:
    return find_documents(batch.paths, batch.include, batch.exclude,
                          out_dir=batch.output if batch.output_is_directory else None, hooks=hooks)


def count_docs(paths: list[str]) -> int:
    """How many documents a command will see, guessed from its paths alone (stdin lists count as many)."""
    return 2 if paths == ["-"] or len(paths) != 1 or Path(paths[0]).is_dir() else 1


def check_choice(option: str, value: str, choices) -> None:
    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)}")


def check_pages(documents: DocumentOptions, max_new_tokens: int | None = None) -> None:
    """Page ranges, frames and the answer budget are usage errors: they surface before anything is read."""
    from ..documents.pages import check_frames, parse_page_ranges

    parse_page_ranges(documents.pages)
    check_frames(documents.frames)
    if max_new_tokens is not None and max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")


def _format(command: DocumentCommand) -> str:
    if command.command == "extract":
        return "data" if command.extract.data_only else "record"
    if command.command == "chart":
        from ..tasks.chart import FORMATS

        fmt = command.fmt or "csv"
    else:
        from ..tasks.ocr import FORMAT_OF_SUFFIX, FORMATS

        output = command.batch.output
        named = FORMAT_OF_SUFFIX.get(output.suffix.lower()) if output and names_a_file(output) else None
        fmt = command.fmt or named or ("markdown" if output or count_docs(command.batch.paths) == 1 else "jsonl")
    check_choice("--format", fmt, FORMATS)
    if fmt == "pdf" and command.batch.output is None:
        raise UsageError("--format pdf writes files: give -o FILE.pdf (one document) or -o DIR")
    return fmt


def _suffix(command: str, fmt: str) -> str:
    if command == "ocr":
        from ..tasks.ocr import SUFFIXES
    elif command == "chart":
        from ..tasks.chart import SUFFIXES
    else:
        from ..tasks.extract import SUFFIXES
    return SUFFIXES[fmt]


def _schema(schema: str | LoadedSchema) -> LoadedSchema:
    from ..schema.loading import LoadedSchema, load_schema

    if isinstance(schema, LoadedSchema):
        return schema

    return load_schema(schema)


def _task(command: DocumentCommand, fmt: str, engine: Engine, sampling: Sampling, prompts, system: str | None,
          schema: LoadedSchema | None) -> Task:
    """The command's task, its tiling from the checkpoint's info within the given limits."""
    documents, tiles = command.documents, command.tiles
    if command.command == "extract":
        from ..tasks import extract

        options = command.extract
        settings = extract.ExtractOptions(
            tiling=engine.tiling.with_limits(None, tiles.max_tiles), sampling=sampling,
            window_pages=options.window_pages or DEFAULT_WINDOW_PAGES,
            window_tiles=options.window_tiles or DEFAULT_WINDOW_TILES, votes=options.votes,
            password=documents.password, pages=documents.pages, use_text_layer=command.text_layer,
            frames=documents.frames, system=system)
        return extract.ExtractTask(settings, schema, engine.model_id, prompts=prompts)
    from ..tasks.pagewise import PageOptions

    settings = PageOptions(tiling=engine.tiling.with_limits(tiles.min_tiles, tiles.max_tiles), sampling=sampling,
                           password=documents.password, pages=documents.pages, frames=documents.frames,
                           system=system)
    if command.command == "ocr":
        from ..tasks.ocr import PLACED_FORMATS, OcrTask

        return OcrTask(settings, engine.model_id, use_text_layer=command.text_layer, prompts=prompts,
                       lines=command.lines or command.redo_ocr or fmt in PLACED_FORMATS,
                       redo_ocr=command.redo_ocr)
    from ..tasks.chart import ChartTask

    return ChartTask(settings, engine.model_id, prompts=prompts)
