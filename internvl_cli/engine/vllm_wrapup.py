"""The logits processor's former name, kept so that `vllm serve --logits-processors
internvl_cli.engine.vllm_wrapup:WrapUpLogitsProcessor` (README recipes before 0.2) keeps working; the processor
lives in decoding/vllm_processor.py."""
from __future__ import annotations


def __getattr__(name: str):
    from ..decoding import vllm_processor

    return getattr(vllm_processor, name)
