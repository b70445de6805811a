"""Step 3, requests in vLLM's terms (plain data, no vLLM import), shared by the in-process engine and the
client of OpenAI-compatible servers: tile budget, sampling, structured outputs, loop and wrap-up settings,
and how a finished answer becomes a GenerationResult with the same flags as the transformers engine."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict

from ..flags import Flag
from ..documents.encoded import encode_png
from ..documents.tiling import TiledImage
from ..decoding.constraints import Constraint
from .base import FinishReason, GenerationRequest, Sampling
from ..decoding.json_state import wrap_up_start
from ..decoding.repetition import LoopRule, find_loop, find_text_loop
from ..decoding.vllm_processor import LOOP_ARG, WRAP_UP_ARG

def pictures(request: GenerationRequest) -> list:
    """The request's images as PIL pictures at their grid's pixel size (vLLM cuts them into the same grid)."""
    if not all(isinstance(image, TiledImage) for image in request.images):
        raise TypeError("vLLM engines take pages prepared by documents.tiling.prepare_page (TiledImage), "
                        "not tile arrays")
    return [image.grid_picture() for image in request.images]


def encoded_pictures(request: GenerationRequest) -> list[bytes]:
    """The request's images as lossless PNGs of their grids (encoded ahead by the run's render workers, or now):
    decoded, they are the very pixels `pictures` gives."""
    if not all(isinstance(image, TiledImage) for image in request.images):
        raise TypeError("servers take pages prepared by documents.tiling.prepare_page (TiledImage), not tile arrays")
    return [image.encoded.result() if image.encoded is not None else encode_png(image.grid)
            for image in request.images]


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


def extra_args(request: GenerationRequest) -> dict:
    """Per-request arguments for our logits processor: the loop rule (an unconstrained answer that loops is
    ended there, as the transformers engine's stopper ends it) and, for constrained answers, the wrap-up start."""
    args: dict = {}
    rule = request.sampling.loop
    if rule.enabled:  # as JSON text: servers accept only flat scalar values in `vllm_xargs`
        args[LOOP_ARG] = json.dumps(asdict(rule), sort_keys=True)
    if request.constraint is not None:
        args[WRAP_UP_ARG] = wrap_up_start(request.sampling.max_new_tokens)
    return args


def finish_answer(tokens: list[int], text: str, finish: str | None, request: GenerationRequest,
                  pieces: Callable[[list[int]], list[str]] | None, decode: Callable[[list[int]], str | None]
                  ) -> tuple[str, FinishReason, int, list[Flag]]:
    """(text, finish reason, new tokens, flags) of a finished vLLM answer, with the transformers engine's
    semantics: an unconstrained loop is cut back to one occurrence of its unit and finishes as "repetition"; a
    constrained one was steered to a close by the wrap-up processor and is flagged, never cut.

    The loop is found by the same detector the processor ran while decoding: on the token ids with their texts
    when `pieces` gives them, else on the answer's characters, line breaks counted (a server that returns no
    token ids), by the whole-answer detector, which finds the same loop in time linear in the answer."""
    flags: list[Flag] = []
    reason: FinishReason = "stop" if finish == "stop" else "length"
    rule = request.sampling.loop
    by_tokens = bool(tokens) and pieces is not None
    loop = find_loop(tokens, pieces(tokens), rule) if by_tokens else find_text_loop(text, rule)
    if request.constraint is not None:
        if loop is not None:
            flags.append(Flag.REPETITION)
        if loop is not None or len(tokens) > wrap_up_start(request.sampling.max_new_tokens):
            flags.append(Flag.CLOSED_EARLY)
        return text, reason, len(tokens), flags
    if loop is None:
        return text, reason, len(tokens), flags
    if not by_tokens:
        return text[:loop.keep], "repetition", len(tokens), flags
    kept = tokens[:loop.keep]
    trimmed = decode(kept)
    return (trimmed if trimmed is not None else text), "repetition", len(kept), flags
