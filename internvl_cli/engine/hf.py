"""Step 3c, the transformers backend: native InternVLForConditionalGeneration, batched generate, left padding."""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..flags import Flag
from ..errors import ModelLoadError, OutOfMemoryError, short_reason
from ..hardware.batch_sizing import BatchDefaults
from ..hardware.machine import release_gpu_memory
from .base import (
    BatchLimits, Engine, GenerationRequest, GenerationResult, RequestSource, Sampling, image_tile_count, image_tiles,
)
from ..decoding.constraints import Constraint
from .batching import plan_batches, take_window
from ..models.info import CheckpointInfo
from ..models.prompting import build_prompt
from ..decoding.json_state import wrap_up_start
from ..decoding.repetition import Loop
from ..decoding.steering import Steering
from ..decoding.tokens import TokenPieces, eos_ids

_log = logging.getLogger("internvl_cli.engine")


class TransformersEngine(Engine):
    """A native-layout InternVL checkpoint directory, generating with transformers (static batches).

    Built from the checkpoint's CheckpointInfo (its small config files, already read), so a run can plan its
    work, and skip loading entirely when everything is already done; `load()` brings in the weights.
    """

    def __init__(self, info: CheckpointInfo, device: str = "auto", dtype: str = "auto", awq_kernel: str = "auto"):
        # torch is not imported here: a rerun with nothing to do should not pay for it
        if dtype not in _DTYPE_NAMES:
            raise ModelLoadError(f"unknown --dtype '{dtype}' (use auto, bfloat16, float16 or float32)")
        if info.model_dir is None:
            raise ModelLoadError(f"{info.model_id}: the transformers engine needs a local checkpoint")
        self.info = info
        self.model_id = info.model_id
        self.model_dir = info.model_dir
        self.device = device
        self.dtype = dtype
        self.awq_kernel = awq_kernel
        self.kernel = None  # the AWQ KernelChoice a load made (hardware/kernels.py)
        self.attention = None
        self._machine = None
        self.quantization = info.quantization
        self.image_seq_length = info.image_seq_length
        self.tokenizer = None
        self.model = None
        self._stop = None  # a threading.Event: when set, generation ends at the next token (see stop_on)
        self._pieces: TokenPieces | None = None  # each token's text, for the loop detector
        self._eos: list[int] = []  # the ids that end an answer, known once the model has loaded
        self._oom_ceiling = _OomCeiling()  # lowered by each out-of-memory error, for the rest of the run

    def stop_on(self, event) -> None:
        """Generation stops within a token once `event` is set; the caller discards that batch's results."""
        self._stop = event

    def load_tokenizer(self):
        """The tokenizer alone (once): enough to render and count prompts, no weights."""
        if self.tokenizer is None:
            self.tokenizer = _load_tokenizer(self.info)
            self._pieces = TokenPieces(self.tokenizer)
        return self.tokenizer

    name = "hf"

    def window(self, limits: BatchLimits) -> int:
        """Two batches to choose from, so pages of similar tile counts can share one (less padding)."""
        return 2 * limits.batch_size

    def stream(self, source: RequestSource, limits: BatchLimits = BatchLimits()):
        """Static batching: takes a window, runs it as batches sorted by tile count, yields batch by batch."""
        while True:
            window = take_window(source, self.window(limits))
            if not window:
                return
            for batch in plan_batches(window, self._oom_ceiling.limit(limits)):
                try:
                    results = self.generate([request for _, request in batch])
                except OutOfMemoryError as exc:
                    results = [exc] * len(batch)
                yield from zip([tag for tag, _ in batch], results)

    def load(self) -> None:
        """Loads the tokenizer and the weights (once)."""
        if self.model is not None:
            return
        from ..hardware.device import capability_of, choose_attention, choose_device, choose_dtype
        from ..hardware.kernels import choose_awq_kernel
        from ..hardware.machine import probe_machine
        from ..quiet import quiet_third_party

        quiet_third_party()
        import torch  # torch is imported only by engines, and only when weights are needed

        self._torch = torch
        awq = self.quantization == "awq"
        machine = self._machine = probe_machine(toolchain=awq, cached_kernels=awq, free_memory=False)
        device = choose_device(machine, self.device, _weight_bytes(self.model_dir))
        if device.warning:
            _log.warning("%s", device.warning)
        self.device = device.device
        capability = capability_of(machine, self.device)
        dtype_name = choose_dtype(self.dtype, self.device, capability, awq)
        self.dtype = getattr(torch, dtype_name)
        self.attention = choose_attention(self.device, capability, dtype_name, machine.installed)
        if awq:  # chosen before anything loads, so an impossible --awq-kernel fails fast
            self.kernel = choose_awq_kernel(machine, self.device, dtype_name, self.awq_kernel)
        self.load_tokenizer()
        self.model, self.kernel = _load_model(self.info, self.device, self.dtype, self.attention, self.kernel)
        if self.quantization:  # the AWQ kernels choose their own activation dtype (fp16 on CUDA)
            self.dtype = self.model.dtype
        self._eos = eos_ids(self.model.generation_config.eos_token_id, self.tokenizer)

    def batch_limits(self, unit_tiles: int = 13, max_new_tokens: int = 4096) -> BatchDefaults:
        """Default --batch-size / --batch-tiles for this model on its device (hardware/batch_sizing.py), after `load()`,
        sized for the run's own tile and answer budgets."""
        from ..hardware.batch_sizing import CPU_BATCH, ModelDims, default_batch_limits
        from ..hardware.machine import free_gpu_bytes

        free = free_gpu_bytes(self.device) if str(self.device).startswith("cuda") else None
        if free is None:
            return CPU_BATCH
        dims = ModelDims.from_config(self.info.config, self.image_seq_length)
        return default_batch_limits(free, dims, max_tiles=max(1, unit_tiles - 1), typical_tiles=min(7, unit_tiles),
                                    max_new_tokens=max_new_tokens,
                                    attention=self.attention or "sdpa")

    def describe(self) -> dict:
        described = {
            "backend": "transformers",
            "model": self.model_id,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "quantization": self.quantization or "none",
            "context": self.context_length,
        }
        if self.kernel is not None:
            described["awq_kernel"] = self.kernel.kernel.name
        if self.attention is not None:
            described["attention"] = self.attention
        return described

    def render_prompt(self, request: GenerationRequest) -> tuple[str, int]:
        """Exactly what `generate` would feed the model for `request` (the full prompt text, image tokens
        expanded) and its length in tokens; needs the tokenizer only."""
        tokenizer = self.load_tokenizer()
        prompt = self._prompt(request)
        return prompt, len(tokenizer(prompt)["input_ids"])

    def _prompt(self, request: GenerationRequest) -> str:
        return build_prompt(self.tokenizer, request.text, [image_tile_count(img) for img in request.images],
                            self.image_seq_length, system=request.system)

    # ------------------------------------------------------------------ generation

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.load()
        results: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[tuple[Sampling, Constraint | None], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[(request.sampling, request.constraint)].append(index)
        for (sampling, constraint), indices in groups.items():
            batch = [requests[i] for i in indices]
            for i, result in zip(indices, self._generate_splitting(batch, sampling, constraint)):
                results[i] = result
        return results  # type: ignore[return-value]

    def _generate_splitting(self, batch, sampling, constraint) -> list[GenerationResult]:
        """Runs a batch; on GPU out-of-memory halves it and retries, down to a single request. A batch above the
        ceiling an earlier out-of-memory set is halved before it is tried."""
        half = len(batch) // 2
        if half and not self._oom_ceiling.admits(batch):
            return self._run_halves(batch, half, sampling, constraint)
        try:
            return self._generate_batch(batch, sampling, constraint)
        except self._torch.OutOfMemoryError:
            pass  # retried only once out of the handler: its traceback holds the failed attempt's frames (KV cache)
        release_gpu_memory(self.device)
        if not half:
            raise OutOfMemoryError(f"out of GPU memory on one page of {batch[0].tiles} tiles", path=None)
        self._oom_ceiling = self._oom_ceiling.lowered(batch[:half], batch[half:])
        _log.debug("out of GPU memory on %d pages: later batches at most %s", len(batch), self._oom_ceiling)
        return self._run_halves(batch, half, sampling, constraint)

    def _run_halves(self, batch, half: int, sampling, constraint) -> list[GenerationResult]:
        return (self._generate_splitting(batch[:half], sampling, constraint)
                + self._generate_splitting(batch[half:], sampling, constraint))

    def _generate_batch(self, batch: list[GenerationRequest], sampling: Sampling,
                        constraint: Constraint | None) -> list[GenerationResult]:
        torch = self._torch
        started = time.perf_counter()
        encoded = self.tokenizer([self._prompt(r) for r in batch], padding=True, padding_side="left",
                                 return_tensors="pt")
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        # Each row's budget: --max-new-tokens, within what the model's context leaves after its prompt.
        budgets = [min(sampling.max_new_tokens, self.context_length - int(n)) for n in prompt_lengths]
        if min(budgets) < 1:
            return self._without_room(batch, budgets, prompt_lengths, sampling, constraint)
        input_ids = encoded["input_ids"].to(self.device)
        attention_mask = encoded["attention_mask"].to(self.device)
        kwargs = {}
        images = [img for r in batch for img in r.images]
        if images:
            pixels = torch.from_numpy(np.concatenate([image_tiles(image) for image in images]))
            kwargs["pixel_values"] = pixels.to(self.device, dtype=self.dtype)
        rows = [Steering(sampling.loop, constrained=constraint is not None,
                         close_after=wrap_up_start(min(budgets)), grace=_LoopStopper.WRAP_GRACE) for _ in batch]
        processors = _constraint_processors(constraint, self.tokenizer, rows, self._eos)
        stopper = _LoopStopper(input_ids.shape[1], rows, budgets, self._eos, self._pieces, torch)
        if sampling.do_sample and sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, **kwargs,
                max_new_tokens=max(budgets),
                do_sample=sampling.do_sample,
                temperature=sampling.temperature if sampling.do_sample else None,
                top_p=sampling.top_p if sampling.do_sample else None,
                top_k=None,
                stopping_criteria=[stopper] + ([_StopOnEvent(self._stop, torch)] if self._stop else []),
                logits_processor=processors,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self._eos,
            )
        elapsed = time.perf_counter() - started
        new_tokens = output[:, input_ids.shape[1]:].tolist()
        results = [
            self._result(row, tokens, int(prompt_lengths[row]), batch[row], elapsed / len(batch), stopper)
            for row, tokens in enumerate(new_tokens)
        ]
        for processor in processors:
            for state, result, closed in zip(rows, results, processor.closed):
                if state.looped_at is not None:  # a constrained answer that looped was wrapped up, not cut
                    result.flags.append(Flag.REPETITION)
                if closed:
                    result.flags.append(Flag.CLOSED_EARLY)
        return results

    def _without_room(self, batch, budgets, prompt_lengths, sampling, constraint) -> list[GenerationResult]:
        """Requests whose prompt alone fills the model's context get no answer (flagged); the rest run."""
        fits = [i for i, budget in enumerate(budgets) if budget >= 1]
        ran = iter(self._generate_batch([batch[i] for i in fits], sampling, constraint) if fits else [])
        results = []
        for i, request in enumerate(batch):
            if i in fits:
                results.append(next(ran))
                continue
            results.append(GenerationResult(
                text="", finish_reason="length", prompt_tokens=int(prompt_lengths[i]), new_tokens=0,
                image_tokens=request.tiles * self.image_seq_length, seconds=0.0, flags=[Flag.CONTEXT_FULL]))
        return results

    def _result(self, row: int, tokens: list[int], prompt_tokens: int, request: GenerationRequest,
                seconds: float, stopper: _LoopStopper) -> GenerationResult:
        eos = set(self._eos)
        cut = next((i for i, token in enumerate(tokens) if token in eos), None)
        finish = "stop" if cut is not None else "length"
        tokens = tokens[:cut] if cut is not None else tokens[:stopper.budgets[row]]
        loop = stopper.cut_at(row)
        if loop is not None:
            finish = "repetition"
            tokens = tokens[:loop.keep]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return GenerationResult(
            text=text, finish_reason=finish, prompt_tokens=prompt_tokens, new_tokens=len(tokens),
            image_tokens=request.tiles * self.image_seq_length, seconds=seconds,
        )


class _LoopStopper:
    """A per-row stopping criterion: feeds each row's new tokens to its Steering and ends the rows that produced
    EOS, must stop (an unconstrained loop; a constrained one still running `WRAP_GRACE` tokens after its grammar
    processor was told to wrap it up) or reach their own token budget."""

    WRAP_GRACE = 128

    def __init__(self, prompt_length: int, rows: list[Steering], budgets: list[int], eos_ids: list[int], piece, torch):
        self.prompt_length = prompt_length
        self.rows = rows
        self.budgets = budgets
        self.eos = set(eos_ids)
        self.piece = piece
        self.torch = torch
        self.fed = 0

    def __call__(self, input_ids, scores, **kwargs):
        generated = input_ids.shape[1] - self.prompt_length
        fresh = input_ids[:, self.prompt_length + self.fed:].tolist() if generated > self.fed else []
        self.fed = generated
        for state, tokens in zip(self.rows, fresh):
            self._feed(state, tokens)
        done = [state.ended or state.must_stop or generated >= budget for state, budget in zip(self.rows, self.budgets)]
        return self.torch.tensor(done, dtype=self.torch.bool, device=input_ids.device)

    def _feed(self, state: Steering, tokens: list[int]) -> None:
        for token in tokens:
            if state.ended or state.must_stop:
                return
            if token in self.eos:
                state.end()
                return
            state.feed(token, self.piece(token))

    def cut_at(self, row: int) -> Loop | None:
        """The loop a row was stopped at (its answer is cut back to one occurrence of the unit)."""
        state = self.rows[row]
        return state.loop if state.must_stop else None


def _constraint_processors(constraint: Constraint | None, tokenizer, rows: list[Steering], eos_ids: list[int]) -> list:
    """llguidance masks for a constrained request: one grammar matcher per batch row (compiled once per run).

    Each row's Steering says when to wrap it up: from the last quarter of its token budget (at least 32 tokens)
    or its loop on, so a long answer ends as valid, flagged output instead of being cut into invalid JSON.
    """
    if constraint is None:
        return []
    from ..decoding.hf_processor import constraint_logits_processor

    return [constraint_logits_processor(tokenizer, constraint, len(rows), eos_token_id=eos_ids, steering=rows)]


class _StopOnEvent:
    """Ends every row of a generate() call as soon as the run is asked to stop (SIGTERM, Ctrl-C)."""

    def __init__(self, event, torch):
        self.event = event
        self.torch = torch

    def __call__(self, input_ids, scores, **kwargs):
        return self.torch.full((input_ids.shape[0],), self.event.is_set(), dtype=self.torch.bool,
                               device=input_ids.device)


# ---------------------------------------------------------------------- loading


def _weight_bytes(model_dir: Path) -> int:
    """The checkpoint's weight files' size: what the model needs in memory, near enough."""
    return sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in model_dir.glob(pattern))


_DTYPE_NAMES = ("auto", "bfloat16", "bf16", "float16", "fp16", "float32", "fp32")


def _quiet_transformers() -> None:
    """transformers' own progress bars and warnings would mix into our stderr; we report loading ourselves."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _load_tokenizer(info: CheckpointInfo):
    from transformers import AutoTokenizer

    _quiet_transformers()

    try:
        tokenizer = AutoTokenizer.from_pretrained(info.model_dir)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer ({short_reason(exc)})", path=info.model_dir) from None
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = info.require_chat_template()
    if getattr(tokenizer, "context_image_token", None) is None:
        raise ModelLoadError("the tokenizer has no <IMG_CONTEXT> image token: not an InternVL checkpoint",
                             path=info.model_dir)
    tokenizer.padding_side = "left"
    return tokenizer


def _load_model(info: CheckpointInfo, device: str, dtype, attention: str | None = None, kernel=None):
    """The model on `device`, and the AWQ kernel it runs with (a compiled one may have fallen back)."""
    info.check_native()
    model_dir, config, quantization = info.model_dir, info.config, info.quantization
    base: dict = {"dtype": dtype}
    if attention:
        base["attn_implementation"] = attention
    if quantization != "awq":
        return _from_pretrained(model_dir, base, device), None
    from ..hardware.awq import awq_load_kwargs, load_with_kernel, settle_dtype

    def load(choice):
        kwargs = {**base, **awq_load_kwargs(config, device, dtype,
                                              backend=choice.kernel.backend if choice else None)}
        model = _from_pretrained(model_dir, kwargs, device)
        settle_dtype(model, kwargs["dtype"])
        return model

    if kernel is None:
        return load(None), None
    return load_with_kernel(kernel, load)


def _from_pretrained(model_dir: Path, kwargs: dict, device: str):
    from transformers import AutoModelForImageTextToText

    from ..quiet import quiet_imported_libraries, stdout_to_stderr

    quiet_imported_libraries()
    try:
        with stdout_to_stderr():  # stdout carries only data
            model = AutoModelForImageTextToText.from_pretrained(model_dir, **kwargs)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load the model ({short_reason(exc)})", path=model_dir) from exc
    if "device_map" not in kwargs:
        model = model.to(device)
    return model.eval()


@dataclass(frozen=True)
class _OomCeiling:
    """The largest batch (pages, tiles) to try after out-of-memory errors: the larger half of the last batch that
    failed, so the batches that follow are never larger than what the halving reached (none before the first)."""

    pages: int | None = None
    tiles: int | None = None

    def admits(self, batch: list[GenerationRequest]) -> bool:
        return ((self.pages is None or len(batch) <= self.pages)
                and (self.tiles is None or sum(r.tiles for r in batch) <= self.tiles))

    def lowered(self, *halves: list[GenerationRequest]) -> _OomCeiling:
        pages = max(len(h) for h in halves)
        tiles = max(sum(r.tiles for r in h) for h in halves)
        return _OomCeiling(min(pages, self.pages or pages), min(tiles, self.tiles or tiles))

    def limit(self, limits: BatchLimits) -> BatchLimits:
        return BatchLimits(batch_size=min(limits.batch_size, self.pages or limits.batch_size),
                           max_tiles=min(limits.max_tiles, self.tiles or limits.max_tiles))
