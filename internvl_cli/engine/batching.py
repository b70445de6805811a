"""Step 3, feeding engines: request sources, static batches by tile count, and `generate` on top of streams."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

from ..errors import InternVLError
from .base import BatchLimits, GenerationRequest, GenerationResult, Outcome, RequestSource, Tag


class ListSource:
    """A RequestSource over requests known up front (library calls of `generate`, benchmarks, tests)."""

    def __init__(self, requests: Iterable[tuple[Tag, GenerationRequest]]):
        self._queue = deque(requests)

    @property
    def done(self) -> bool:
        return not self._queue

    def take(self, wait: bool) -> tuple[Tag, GenerationRequest] | None:
        return self._queue.popleft() if self._queue else None


def generate_in_order(stream: Callable[[RequestSource], Iterator[tuple[Tag, Outcome]]],
                      requests: list[GenerationRequest]) -> list[GenerationResult]:
    """`Engine.generate` for any streaming engine: all requests in, results back in request order."""
    results: list[GenerationResult | None] = [None] * len(requests)
    for index, outcome in stream(ListSource(enumerate(requests))):
        if isinstance(outcome, InternVLError):
            raise outcome
        results[index] = outcome
    return results  # type: ignore[return-value]


def take_window(source: RequestSource, size: int) -> list[tuple[Tag, GenerationRequest]]:
    """Up to `size` requests: waits for the first one, then takes only what is ready (the engine works on
    what is prepared instead of waiting for more)."""
    window: list[tuple[Tag, GenerationRequest]] = []
    while len(window) < size:
        item = source.take(wait=not window)
        if item is None:
            break
        window.append(item)
    return window


def plan_batches(pending: list[tuple[Tag, GenerationRequest]],
                 limits: BatchLimits) -> list[list[tuple[Tag, GenerationRequest]]]:
    """Groups requests of similar tile counts (less padding) into batches within the size and tile budgets."""
    ordered = sorted(pending, key=lambda item: item[1].tiles)
    batches: list[list[tuple[Tag, GenerationRequest]]] = []
    current: list[tuple[Tag, GenerationRequest]] = []
    tiles = 0
    for item in ordered:
        cost = item[1].tiles
        if current and (len(current) >= limits.batch_size or tiles + cost > limits.max_tiles):
            batches.append(current)
            current, tiles = [], 0
        current.append(item)
        tiles += cost
    if current:
        batches.append(current)
    return batches
