"""Step 3, requests in vLLM's terms (plain data, no vLLM import), shared by the in-process engine and the
client of OpenAI-compatible servers: tile budget, sampling, structured outputs, loop and wrap-up settings,
and how a finished answer becomes a GenerationResult with the same flags as the transformers engine."""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

from ..documents.tiling import TiledImage
from .base import Constraint, FinishReason, GenerationRequest, Sampling
from .repetition import RepetitionRule, repeated_period, trim_repetition

# The key of vLLM's per-request `extra_args` (server: `vllm_xargs`) that switches our wrap-up on.
WRAP_UP_ARG = "internvl_close_after"
# How often the loop rule is checked while decoding (as the transformers engine's stopper does).
CHECK_EVERY = 4


def wrap_up_start(max_new_tokens: int) -> int:
    """Generated tokens after which a constrained answer is steered to its shortest valid ending: the last
    quarter of the budget, at least 32 tokens (the transformers engine uses the same budget)."""
    return max(0, max_new_tokens - max(32, max_new_tokens // 4))


def pictures(request: GenerationRequest) -> list:
    """The request's images as PIL pictures at their grid's pixel size (vLLM cuts them into the same grid)."""
    if not all(isinstance(image, TiledImage) for image in request.images):
        raise TypeError("vLLM engines take pages prepared by documents.tiling.prepare_page (TiledImage), "
                        "not tile arrays")
    return [image.grid_picture() for image in request.images]


def tile_budget(request: GenerationRequest) -> dict:
    """`mm_processor_kwargs` holding vLLM's tiler to our budget: given a raster at our grid's exact size, the
    closest-aspect-ratio rule picks our grid (any larger grid of that ratio has 4x its area)."""
    limits = {(image.config.min_tiles, image.config.max_tiles) for image in request.images
              if isinstance(image, TiledImage)}
    if len(limits) > 1:
        raise ValueError("the images of one request must share one tile budget")
    low, high = limits.pop() if limits else (1, 12)
    return {"crop_to_patches": True, "min_patches": low, "max_patches": high}


def sampling_fields(sampling: Sampling) -> dict:
    """vLLM SamplingParams fields (also the OpenAI request fields of the same names)."""
    fields = {"max_tokens": sampling.max_new_tokens, "temperature": 0.0, "top_p": 1.0}
    if sampling.do_sample:
        fields.update(temperature=sampling.temperature, top_p=sampling.top_p)
        if sampling.seed is not None:
            fields["seed"] = sampling.seed
    return fields


def structured_outputs(constraint: Constraint | None) -> dict | None:
    """vLLM's structured outputs for a constraint: the grammar's copy of a JSON Schema, compact (as the
    transformers engine decodes it), or llguidance Lark text (vLLM's guidance backend takes it as is)."""
    if constraint is None:
        return None
    if constraint.kind == "json_schema":
        return {"json": json.loads(constraint.spec), "disable_any_whitespace": True}
    return {"grammar": constraint.spec}


def repetition_detection(rule: RepetitionRule) -> dict:
    """vLLM's built-in loop stop, set so it never fires before our rule does.

    vLLM stops when the tail is one n-gram (min..max size) repeated min_count times. A loop of a short
    period p is also a loop of a multiple of p, so with n-grams of at least ceil(min_span / min_repeats)
    tokens every stop covers at least `min_span` tokens and `min_repeats` repeats, as our rule asks; the
    final answer is then checked (and trimmed) by our own rule.
    """
    low = max(1, math.ceil(rule.min_span / rule.min_repeats))
    return {"min_pattern_size": min(low, rule.max_period), "max_pattern_size": rule.max_period,
            "min_count": max(2, rule.min_repeats)}


def extra_args(request: GenerationRequest) -> dict:
    """Per-request arguments for our wrap-up logits processor (constrained answers only)."""
    if request.constraint is None:
        return {}
    return {WRAP_UP_ARG: wrap_up_start(request.sampling.max_new_tokens)}


def first_loop(tokens: Sequence[int], rule: RepetitionRule) -> int | None:
    """The generated length at which the loop rule first fires when checked every CHECK_EVERY tokens, as
    the engines check it while decoding; None if it never does."""
    for end in range(CHECK_EVERY, len(tokens) + 1, CHECK_EVERY):
        if end >= rule.min_span and repeated_period(tokens[:end], rule) is not None:
            return end
    return None


def finish_answer(tokens: list[int], text: str, finish: str | None, stop_reason, request: GenerationRequest,
                  rule: RepetitionRule, decode: Callable[[list[int]], str | None]
                  ) -> tuple[str, FinishReason, int, list[str]]:
    """(text, finish reason, new tokens, flags) of a finished vLLM answer, with the transformers engine's
    semantics: an unconstrained loop is cut back to its first occurrence and finishes as "repetition"; a
    constrained one was steered to a close by the wrap-up processor and is flagged, never cut."""
    flags: list[str] = []
    reason: FinishReason = "stop" if finish == "stop" else "length"
    if request.constraint is not None:
        looped = first_loop(tokens, rule)
        if looped is not None:
            flags.append("repetition")
        if looped is not None or len(tokens) > wrap_up_start(request.sampling.max_new_tokens):
            flags.append("closed-early")
        return text, reason, len(tokens), flags
    period = repeated_period(tokens, rule)
    if period is None and stop_reason == "repetition_detected":
        period = next((p for p in range(1, rule.max_period + 1) if _tail_repeats(tokens, p)), None)
    if period is not None:
        reason = "repetition"
        kept = trim_repetition(tokens, period)
        trimmed = decode(kept)
        if trimmed is not None:
            return trimmed, reason, len(kept), flags
        return text, reason, len(tokens), flags
    return text, reason, len(tokens), flags


def _tail_repeats(tokens: Sequence[int], period: int) -> bool:
    return len(tokens) >= 2 * period and list(tokens[-period:]) == list(tokens[-2 * period:-period])
