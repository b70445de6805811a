"""Step 3, the engine interface: what every backend takes (tiles + prompt) and returns (text + accounting)."""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Union

import numpy as np

from ..flags import Flag
from ..decoding.constraints import Constraint
from ..decoding.repetition import LoopRule
from ..documents.tiling import TiledImage, TilingConfig
from ..errors import InternVLError, UsageError
from ..hardware.batch_sizing import CPU_BATCH, BatchDefaults
from ..models.info import CheckpointInfo

EngineName = Literal["hf", "vllm", "server"]
ENGINE_NAMES: tuple[str, ...] = ("hf", "vllm", "server")
# What --engine takes: the engines, and `auto` (engine/auto.py), which settles into hf or vllm per run.
ENGINE_CHOICES: tuple[str, ...] = ("auto",) + ENGINE_NAMES

FinishReason = Literal["stop", "length", "repetition"]


# Evaluation harnesses give InternVL 4,096 new tokens; the densest pages we accept (an IRS 1040 page's text layer
# alone is ~1,600 tokens, before any Markdown) need more than the model cards' 1,024.
DEFAULT_MAX_NEW_TOKENS = 4096


@dataclass(frozen=True)
class Sampling:
    """Generation settings; greedy unless `do_sample`. `max_new_tokens` is a ceiling: an engine also keeps each
    answer within what the model's context leaves after its prompt. `loop` says when a repeating answer is cut."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    loop: LoopRule = LoopRule()


@dataclass
class GenerationRequest:
    """One prompt: its images shown before the text. Each image is a TiledImage (what tasks send: the raster
    at the grid's size, which every engine can take) or an (N, 3, S, S) float32 tile array (transformers only).

    `system`: None keeps the checkpoint's own system message (what its chat template adds, if anything);
    "" sends no system turn; any other text is sent as the system turn.
    """

    images: list[TiledImage | np.ndarray]
    text: str
    sampling: Sampling = field(default_factory=Sampling)
    constraint: Constraint | None = None
    system: str | None = None

    @property
    def tiles(self) -> int:
        return sum(image_tile_count(image) for image in self.images)


def image_tile_count(image: TiledImage | np.ndarray) -> int:
    return image.tile_count if isinstance(image, TiledImage) else int(image.shape[0])


def image_tiles(image: TiledImage | np.ndarray) -> np.ndarray:
    """The normalised float32 tiles of an image, however the request carries it."""
    return image.tiles() if isinstance(image, TiledImage) else image


@dataclass
class GenerationResult:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    new_tokens: int
    image_tokens: int
    seconds: float  # this request's share of its batch's wall time
    # e.g. "closed-early": a constrained answer was wrapped up; "context-full": the prompt left no room to answer
    flags: list[Flag] = field(default_factory=list)
    model: str | None = None  # the model that answered, when the engine learns it only then (a server's)


@dataclass(frozen=True)
class BatchLimits:
    """The user's batching limits (--batch-size, --batch-tiles); engines that batch statically obey them."""

    batch_size: int = 8
    max_tiles: int = 64


Tag = Hashable
# What a stream yields per request: its result, or the typed failure that request met (e.g. out of memory).
Outcome = Union[GenerationResult, InternVLError]


class RequestSource(Protocol):
    """Where an engine pulls requests from while it works (the runner's prepared pages).

    `take(wait=False)` returns a request only if one is ready; `take(wait=True)` blocks until one is, or until
    no more will come. None means "nothing now" (or never again, when `done`). Engines pull as they have room,
    so memory stays bounded by their window and results flow back as they finish.
    """

    @property
    def done(self) -> bool: ...

    def take(self, wait: bool) -> tuple[Tag, GenerationRequest] | None: ...


class Engine(Protocol):
    """A loaded model that turns requests into text. Tasks only ever see this interface.

    Each backend owns its batching: transformers runs static batches of similar tile counts, vLLM keeps its
    continuous batch full, the server client keeps `--concurrency` requests in flight. Backends inherit this
    class, so the optional abilities below have their defaults and callers just call them.
    """

    name: EngineName
    model_id: str
    info: CheckpointInfo  # what the checkpoint says about itself, read once
    tokenizer: Any = None  # the model's tokenizer once an engine has loaded it here (never for a server)

    @property
    def tiling(self) -> TilingConfig:
        """How pages become tiles for this model."""
        return self.info.tiling

    @property
    def context_length(self) -> int | None:
        """The model's context in tokens (prompt and answer); None when the engine cannot know it."""
        return self.info.context_length

    def window(self, limits: BatchLimits) -> int:
        """How many requests the engine wants in hand at once (the runner renders that far ahead)."""
        ...

    def stream(self, source: RequestSource, limits: BatchLimits = BatchLimits()) -> Iterator[tuple[Tag, Outcome]]:
        """Pulls requests from `source` until it is done and yields each one's outcome as it finishes (in
        any order); closing the iterator early abandons what is still in flight."""
        ...

    def load(self) -> None:
        """Brings the weights in (idempotent); until then only the checkpoint's small configs are read."""
        ...

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Runs the requests (batched as the backend sees fit) and returns one result per request, in order;
        raises the first typed failure."""
        ...

    def describe(self) -> dict:
        """Name, device, dtype, quantization: for logs, the ledger and `doctor`."""
        ...

    # ---------------------------------------------------------------- optional abilities, with defaults

    def stop_on(self, event: threading.Event) -> None:
        """Generation stops within a token once `event` is set (the caller discards what was cut). By default
        nothing: the runner stops taking results as they come."""

    def settle(self, pending_pages: Callable[[], int | None]) -> Engine:
        """The engine that runs a run, once its plan can count the pages (`pending_pages()`, None when unknown),
        before anything loads. By default itself; `--engine auto` (engine/auto.py) picks hf or vllm here."""
        return self

    def batch_limits(self, unit_tiles: int = 13, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> BatchDefaults:
        """Default --batch-size / --batch-tiles for this model where it runs, after `load()`, for a run whose
        requests carry at most `unit_tiles` tiles (thumbnails included) and answer in at most `max_new_tokens`.
        By default the fixed 8 pages and 64 tiles (engines that batch continuously ignore them)."""
        return CPU_BATCH

    def takes_encoded_pictures(self) -> bool:
        """Whether the engine sends pages as PNGs (a server client): then a run renders and encodes them ahead,
        in worker processes, and keeps only the PNG. By default no: it takes rasters (or tiles)."""
        return False

    def render_prompt(self, request: GenerationRequest) -> tuple[str, int]:
        """Exactly what the model would be fed for `request` (image tokens expanded) and its length in tokens.
        By default refused: only an engine that tokenizes here can say."""
        raise UsageError(f"the {self.name} engine cannot show its prompts")
