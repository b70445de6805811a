"""Named model presets: which public InternVL checkpoints the product knows, their layout and GPU memory needs."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    repo_id: str
    layout: str  # "native" (-hf, loads directly) or "remote-code" (converted once on first use)
    quantization: str  # "awq" (4-bit language model) or "bf16"
    params: str
    gpu_memory_gb: float  # estimate at the default 12-tile budget, batch 1: weights + vision activations + KV cache
    max_tiles: int  # recommended --max-tiles
    note: str = ""
    # The weights' terms as their model cards state them (2026-12): InternVL's own part, then the language model's.
    licence: str = "see the model card"
    # Engines that run it: hf and vllm load the native layout (remote-code checkpoints are converted first);
    # any preset runs behind a server that loads it (e.g. `vllm serve` of the converted directory).
    engines: tuple[str, ...] = ("hf", "vllm", "server")


# Memory figures are estimates from parameter counts (4-bit LM ~0.55 GB per billion parameters with
# scales, 16-bit vision tower and projector), plus ~1.5 GB for activations and a 4k-token KV cache.
PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("internvl3-1b-awq", "OpenGVLab/InternVL3-1B-AWQ", "remote-code", "awq", "0.9B", 2.5, 12,
           licence="MIT; LLM Qwen2.5-0.5B: Apache-2.0"),
    Preset("internvl3-2b-awq", "OpenGVLab/InternVL3-2B-AWQ", "remote-code", "awq", "2.1B", 3.5, 12,
           licence="MIT; LLM Qwen2.5-1.5B: Apache-2.0"),
    Preset("internvl3-8b-awq", "OpenGVLab/InternVL3-8B-AWQ", "remote-code", "awq", "8.1B", 8.0, 12,
           "default: fits a 16 GB GPU",
           licence="MIT; LLM Qwen2.5-7B: Apache-2.0"),
    Preset("internvl3-14b-awq", "OpenGVLab/InternVL3-14B-AWQ", "remote-code", "awq", "15.1B", 12.5, 8,
           licence="MIT; LLM Qwen2.5-14B: Apache-2.0"),
    Preset("internvl3-38b-awq", "OpenGVLab/InternVL3-38B-AWQ", "remote-code", "awq", "38.4B", 28.0, 6,
           licence="MIT; LLM Qwen2.5-32B: Apache-2.0"),
    Preset("internvl2.5-8b-mpo-awq", "OpenGVLab/InternVL2_5-8B-MPO-AWQ", "remote-code", "awq", "8.1B", 8.0, 12,
           licence="MIT; LLM InternLM2.5-7B: InternLM licence",
           # its InternLM2 tokenizer exists only as remote code, which we never run: a server must load it
           engines=("server",)),
    Preset("internvl3-1b", "OpenGVLab/InternVL3-1B-hf", "native", "bf16", "0.9B", 4.0, 12,
           licence="MIT; LLM Qwen2.5-0.5B: Apache-2.0"),
    Preset("internvl3-2b", "OpenGVLab/InternVL3-2B-hf", "native", "bf16", "2.1B", 6.5, 12,
           licence="MIT; LLM Qwen2.5-1.5B: Apache-2.0"),
    Preset("internvl3-8b", "OpenGVLab/InternVL3-8B-hf", "native", "bf16", "8.1B", 19.0, 12,
           licence="MIT; LLM Qwen2.5-7B: Apache-2.0"),
    Preset("internvl3.5-2b", "OpenGVLab/InternVL3_5-2B-HF", "native", "bf16", "2.3B", 6.5, 12,
           licence="Apache-2.0; LLM Qwen3: Apache-2.0"),
    Preset("internvl3.5-4b", "OpenGVLab/InternVL3_5-4B-HF", "native", "bf16", "4.7B", 11.0, 12,
           licence="Apache-2.0; LLM Qwen3: Apache-2.0"),
    Preset("internvl3.5-8b", "OpenGVLab/InternVL3_5-8B-HF", "native", "bf16", "8.5B", 19.5, 12,
           licence="Apache-2.0; LLM Qwen3: Apache-2.0"),
]}

DEFAULT_MODEL = "internvl3-8b-awq"


def find_preset(spec: str) -> Preset | None:
    """A preset by its name or by its repository id (case-insensitive)."""
    lowered = spec.lower()
    for preset in PRESETS.values():
        if lowered in (preset.name, preset.repo_id.lower()):
            return preset
    return None


def is_cached(preset: Preset) -> bool:
    """Whether the preset's checkpoint is already in the local Hugging Face cache (no network used)."""
    try:
        from huggingface_hub import scan_cache_dir

        return any(repo.repo_id == preset.repo_id for repo in scan_cache_dir().repos)
    except Exception:  # no cache directory yet, or an unreadable one: not cached
        return False
