"""Decoding control inside vLLM, loops and wrap-up: a V1 logits processor that runs our loop detector on every
answer as it is generated (an unconstrained answer that loops is ended there, as the transformers engine's stopper ends
it) and steers a JSON/CSV answer near its token budget (or caught in a loop) to its shortest valid ending.

vLLM applies the structured-output grammar as a mask; this processor only adds biases, so the grammar keeps
the last word and no token it forbids can win: EOS first (when the grammar is complete), then inside a
string a token that closes it, outside one a closing bracket before a separator. Greedy decoding then picks
exactly what the transformers engine's tiered narrowing picks. The processor runs in vLLM's engine process,
loaded by name (`internvl_cli.decoding.vllm_processor:WrapUpLogitsProcessor`, also usable with
`vllm serve --logits-processors`); requests switch it on through `extra_args` (servers: `vllm_xargs`).
Nothing here imports vLLM or torch until vLLM asks for the class. The old name
`internvl_cli.engine.vllm_wrapup:WrapUpLogitsProcessor` still works for servers started with it.
"""
from __future__ import annotations

import json

from .json_state import JsonState
from .repetition import LoopRule
from .steering import Steering
from .tokens import TokenPieces, eos_ids

PROCESSOR_NAME = "internvl_cli.decoding.vllm_processor:WrapUpLogitsProcessor"
# The keys of vLLM's per-request `extra_args` (server: `vllm_xargs`) this processor reads: when to start wrapping a
# constrained answer up, and the loop rule to stop by (engine/vllm_requests.py writes them).
WRAP_UP_ARG = "internvl_close_after"
LOOP_ARG = "internvl_loop"
_BIAS = 1.0e4  # far above any logit gap, far below float32 overflow


def loop_rule_from(args: dict) -> LoopRule | None:
    """The loop rule a request carries in its extra arguments (None: loops are not stopped)."""
    fields = args.get(LOOP_ARG)
    if isinstance(fields, str):
        fields = json.loads(fields)
    return LoopRule(**fields) if fields else None


class _Tiers:
    """Per-token facts of one tokenizer: its bytes, and bias rows for steering inside/outside a string."""

    def __init__(self, model_dir: str, tokenizer_dir: str, torch):
        import llguidance.hf
        from transformers import AutoTokenizer

        from ..models.info import declared_eos_ids

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.tokenizer = tokenizer
        # a token's text as the transformers engine's stopper sees it (for the detector's character counts)
        self.piece = TokenPieces(tokenizer)
        eos = eos_ids(declared_eos_ids(model_dir), tokenizer)
        lltok = llguidance.hf.from_tokenizer(tokenizer, eos_token=eos)
        size = lltok.vocab_size
        self.token_bytes = [lltok.decode_bytes([token]) for token in range(size)]
        quote = torch.tensor([b'"' in t for t in self.token_bytes])
        close = torch.tensor([(b"}" in t or b"]" in t) for t in self.token_bytes]) & ~quote
        comma = torch.tensor([b"," in t for t in self.token_bytes]) & ~quote
        end = torch.zeros(size, dtype=torch.bool)
        end[[e for e in eos if e < size]] = True
        self.eos = [e for e in eos if e < size]
        self.inside = (3 * end + 2 * quote).float() * _BIAS
        self.outside = (3 * end + 2 * close + comma).float() * _BIAS


class WrapUpState:
    """One request's steering inside vLLM: follows its tokens (its Steering's loop watch, JSON string boundaries),
    ends an unconstrained answer that loops, and biases a constrained one towards its shortest valid ending."""

    def __init__(self, close_after: int | None, tiers: _Tiers, rule: LoopRule | None = None):
        # close_after None: unconstrained (loops are ended, nothing is steered)
        self.steering = Steering(rule, constrained=close_after is not None, close_after=close_after)
        self.tiers = tiers
        self.seen = 0
        self.json = JsonState()

    @property
    def closing(self) -> bool:
        """A loop was seen: the answer is wrapped up now, whatever the budget."""
        return self.steering.closing

    def __call__(self, output_ids: list[int], logits):
        self._follow(output_ids)
        steering = self.steering
        if not steering.constrained:
            return self._only_eos(logits) if steering.must_stop else logits
        if not steering.wrapping_up:
            return logits
        bias = self.tiers.inside if self.json.in_string else self.tiers.outside
        width = min(len(bias), logits.shape[-1])
        logits[:width] += bias[:width].to(logits.device, logits.dtype)
        return logits

    def _only_eos(self, logits):
        eos = [e for e in self.tiers.eos if e < logits.shape[-1]]
        if not eos:
            return logits
        kept = logits[eos].clone()
        logits.fill_(float("-inf"))
        logits[eos] = kept
        return logits

    def _follow(self, output_ids: list[int]) -> None:
        watching = self.steering.detector is not None
        for position in range(self.seen, len(output_ids)):
            token = output_ids[position]
            self.json.feed(self.tiers.token_bytes[token] if token < len(self.tiers.token_bytes) else b"")
            self.steering.feed(token, self.tiers.piece(token) if watching else None)
        self.seen = len(output_ids)


def _build_processor_class():
    import torch
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class WrapUpLogitsProcessor(AdapterLogitsProcessor):
        """vLLM V1 logits processor: a WrapUpState for each request that carries `extra_args[WRAP_UP_ARG]`."""

        def __init__(self, vllm_config, device, is_pin_memory: bool):
            super().__init__(vllm_config, device, is_pin_memory)
            self._model_dir = str(vllm_config.model_config.model)
            self._tokenizer_dir = str(vllm_config.model_config.tokenizer or self._model_dir)
            self._tiers: _Tiers | None = None

        def is_argmax_invariant(self) -> bool:
            return False  # it changes which token greedy decoding picks

        def new_req_logits_processor(self, params):
            args = params.extra_args or {}
            close_after, rule = args.get(WRAP_UP_ARG), loop_rule_from(args)
            if close_after is None and rule is None:
                return None
            if self._tiers is None:  # once per engine, on the first request that needs it
                self._tiers = _Tiers(self._model_dir, self._tokenizer_dir, torch)
            return WrapUpState(None if close_after is None else int(close_after), self._tiers, rule)

    WrapUpLogitsProcessor.__module__ = __name__
    return WrapUpLogitsProcessor


def __getattr__(name: str):
    # vLLM resolves the processor by name in its engine process; building the class on that first lookup
    # keeps vLLM and torch out of every process that merely imports this module.
    if name == "WrapUpLogitsProcessor":
        cls = _build_processor_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
