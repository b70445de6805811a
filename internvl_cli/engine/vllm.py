"""Step 3d, the in-process vLLM backend: continuous batching over a window of pages, same checkpoints, same tiles.

vLLM loads the native checkpoint our resolver yields (remote-code checkpoints are converted first, so no
remote code runs and trust_remote_code stays off); AWQ checkpoints run on vLLM's own kernels. Each page goes
in as the raster we rendered at the grid's pixel size with our tile budget, so vLLM's tiler cuts the same
grid. Results stream back as requests finish; the runner puts them back in document order.
"""
from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

from ..errors import InternVLError, ModelLoadError, UsageError, short_reason
from .base import BatchLimits, Engine, GenerationRequest, GenerationResult, Outcome, RequestSource, Tag
from .batching import generate_in_order
from ..decoding.tokens import TokenPieces
from ..models.info import CheckpointInfo
from ..models.prompting import chat_prompt
from .vllm_requests import extra_args, finish_answer, pictures, sampling_fields, structured_outputs, tile_budget

# Requests handed to vLLM beyond what it runs at once, so its scheduler always has a waiting page to admit.
WINDOW_PER_SEQUENCE = 2


class VllmEngine(Engine):
    """vllm.LLM on a native InternVL checkpoint directory; weights load on `load()`."""

    name = "vllm"

    def __init__(self, info: CheckpointInfo, dtype: str = "auto",
                 tensor_parallel_size: int = 1, data_parallel_size: int = 1, max_num_seqs: int | None = None,
                 max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                 max_images: int = 1):
        if data_parallel_size > 1:
            raise UsageError(
                "--data-parallel-size needs one vLLM server per replica; vLLM runs data parallel only as a "
                "server", hint="start `vllm serve MODEL --data-parallel-size N` and use --engine server "
                                "(README: several GPUs on one machine)")
        if tensor_parallel_size < 1:
            raise UsageError("--tensor-parallel-size must be at least 1")
        if info.model_dir is None:
            raise ModelLoadError(f"{info.model_id}: the vllm engine needs a local checkpoint")
        self.info = info
        self.model_dir = info.model_dir
        self.model_id = info.model_id
        self.dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)
        self.tensor_parallel_size = tensor_parallel_size
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_images = max_images  # per prompt: vLLM reserves encoder memory for this many (extract windows)
        self._llm = None
        self._tokenizer = None
        self._pieces: TokenPieces | None = None
        self._ids = itertools.count()

    @property
    def tokenizer(self):
        """vLLM's tokenizer of the model, once loaded."""
        return self._tokenizer

    @property
    def context_length(self) -> int | None:
        """The context vLLM runs with: --max-model-len when given, else the checkpoint's (vLLM's own default)."""
        return self.max_model_len or self.info.context_length

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        if self._llm is not None:
            return
        _quiet_vllm()
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ModelLoadError(f"the vllm engine needs vLLM installed ({short_reason(exc)})",
                                 hint='pip install "internvl-cli[vllm]"') from None
        from ..decoding.vllm_processor import PROCESSOR_NAME

        kwargs: dict = {
            "model": str(self.model_dir), "dtype": self.dtype, "tensor_parallel_size": self.tensor_parallel_size,
            "trust_remote_code": False,
            "limit_mm_per_prompt": {"image": self.max_images, "video": 0},
            "structured_outputs_config": {"backend": "guidance"},  # llguidance, as the transformers engine
            "logits_processors": [PROCESSOR_NAME],
            "enable_prefix_caching": True,
            "seed": 0,
        }
        for key, value in (("max_num_seqs", self.max_num_seqs), ("max_model_len", self.max_model_len),
                           ("gpu_memory_utilization", self.gpu_memory_utilization)):
            if value is not None:
                kwargs[key] = value
        if _cpu_only():
            kwargs["enforce_eager"] = True  # torch.compile costs minutes on CPU for no gain on tiny models
            if self.dtype == "auto" and not self.info.quantization:
                kwargs["dtype"] = "float32"  # as the transformers engine on CPU: exact and fastest there
        try:
            self._llm = LLM(**kwargs)
        except Exception as exc:  # vLLM raises a wide family (config, CUDA, kernels); --verbose shows which
            raise ModelLoadError(f"vLLM cannot load the model ({short_reason(exc, 300)})",
                                 path=self.model_dir) from exc
        self._tokenizer = self._llm.get_tokenizer()
        self.max_num_seqs = self._llm.llm_engine.vllm_config.scheduler_config.max_num_seqs

    def describe(self) -> dict:
        info = {"backend": "vllm", "model": self.model_id, "dtype": self.dtype,
                "tensor_parallel": self.tensor_parallel_size}
        if self._llm is not None:
            config = self._llm.llm_engine.vllm_config
            info["dtype"] = str(config.model_config.dtype).replace("torch.", "")
            info["quantization"] = config.model_config.quantization or "none"
            info["max_num_seqs"] = config.scheduler_config.max_num_seqs
        return info

    # ------------------------------------------------------------------ generation

    def window(self, limits: BatchLimits) -> int:
        return WINDOW_PER_SEQUENCE * (self.max_num_seqs or 64)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return generate_in_order(self.stream, requests)

    def stream(self, source: RequestSource, limits: BatchLimits = BatchLimits()) -> Iterator[tuple[Tag, Outcome]]:
        self.load()
        engine = self._llm.llm_engine
        in_flight: dict[str, tuple[Tag, GenerationRequest]] = {}
        window = self.window(limits)
        last = time.perf_counter()
        try:
            while True:
                while len(in_flight) < window:
                    item = source.take(wait=not in_flight)
                    if item is None:
                        break
                    tag, request = item
                    request_id = f"internvl-{next(self._ids)}"  # outputs carry the id we gave
                    try:
                        engine.add_request(request_id, self._prompt(request), self._params(request))
                    except (ValueError, TypeError) as exc:  # vLLM refused this one request (too long, ...)
                        yield tag, InternVLError(f"vLLM refused the request ({short_reason(exc)})")
                        continue
                    in_flight[request_id] = (tag, request)
                if not in_flight:
                    if source.done:
                        return
                    continue
                finished = [output for output in engine.step() if output.finished]
                if not finished:
                    continue
                now = time.perf_counter()
                share = (now - last) / len(finished)  # each page's share of the wall time, as batches report
                last = now
                for output in finished:
                    tag, request = in_flight.pop(output.request_id)
                    yield tag, self._result(output, request, share)
        finally:
            if in_flight:  # stopped early (SIGTERM, Ctrl-C, an error): free vLLM of the abandoned requests
                engine.abort_request(list(in_flight))

    def _prompt(self, request: GenerationRequest) -> dict:
        images = pictures(request)
        return {
            "prompt": chat_prompt(self._tokenizer, request.text, len(images), request.system),
            "multi_modal_data": {"image": images if len(images) != 1 else images[0]} if images else {},
            "mm_processor_kwargs": tile_budget(request),
        }

    def _params(self, request: GenerationRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = structured_outputs(request.constraint)
        return SamplingParams(
            **sampling_fields(request.sampling), skip_special_tokens=True,
            output_kind=RequestOutputKind.FINAL_ONLY,
            structured_outputs=StructuredOutputsParams(**structured) if structured else None,
            # our logits processor stops loops by our rule, and wraps a constrained answer up instead of cutting it
            extra_args=extra_args(request) or None,
        )

    def _result(self, output, request: GenerationRequest, seconds: float) -> GenerationResult:
        answer = output.outputs[0]
        tokens = list(answer.token_ids)
        text, finish, new_tokens, flags = finish_answer(
            tokens, answer.text, answer.finish_reason, request, self._token_pieces().of,
            lambda kept: self._tokenizer.decode(kept, skip_special_tokens=True))
        return GenerationResult(
            text=text, finish_reason=finish, prompt_tokens=len(output.prompt_token_ids or []),
            new_tokens=new_tokens, image_tokens=request.tiles * self.info.image_seq_length, seconds=seconds,
            flags=flags)


    def _token_pieces(self) -> TokenPieces:
        """Each token's text, as the transformers engine gives it to the loop detector (made once the tokenizer is
        there)."""
        if self._pieces is None:
            self._pieces = TokenPieces(self._tokenizer)
        return self._pieces


def _cpu_only() -> bool:
    try:
        from vllm.platforms import current_platform

        return current_platform.is_cpu()
    except Exception:
        return False


def _quiet_vllm() -> None:
    """vLLM logs INFO lines to stdout by default; stdout carries only our data, so its logs go to stderr
    (warnings and errors only, unless the user set VLLM_LOGGING_LEVEL)."""
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
