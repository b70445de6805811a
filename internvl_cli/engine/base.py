"""Step 3, the engine interface: what every backend takes (tiles + prompt) and returns (text + accounting)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from ..documents.tiling import TilingConfig
from .repetition import LoopRule

FinishReason = Literal["stop", "length", "repetition"]


@dataclass(frozen=True)
class Constraint:
    """A decoding constraint, engine-neutral: a JSON Schema (as canonical JSON text) or a grammar's text."""

    kind: Literal["json_schema", "grammar"]
    spec: str


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
    """One prompt: its images (each an (N, 3, S, S) float32 tile array) shown before the text.

    `system`: None keeps the checkpoint's own system message (what its chat template adds, if anything);
    "" sends no system turn; any other text is sent as the system turn.
    """

    images: list[np.ndarray]
    text: str
    sampling: Sampling = field(default_factory=Sampling)
    constraint: Constraint | None = None
    system: str | None = None

    @property
    def tiles(self) -> int:
        return sum(image.shape[0] for image in self.images)


@dataclass
class GenerationResult:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    new_tokens: int
    image_tokens: int
    seconds: float  # this request's share of its batch's wall time
    # e.g. "closed-early": a constrained answer was wrapped up; "context-full": the prompt left no room to answer
    flags: list[str] = field(default_factory=list)


class Engine(Protocol):
    """A loaded model that turns batches of requests into text. Tasks only ever see this interface."""

    model_id: str
    tiling: TilingConfig

    def load(self) -> None:
        """Brings the weights in (idempotent); until then only the checkpoint's small configs are read."""
        ...

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Runs the requests (batched as the backend sees fit) and returns one result per request, in order."""
        ...

    def describe(self) -> dict:
        """Name, device, dtype, quantization: for logs, the ledger and `doctor`."""
        ...
