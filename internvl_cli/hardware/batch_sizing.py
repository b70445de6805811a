"""Hardware, batch sizing: default --batch-size and --batch-tiles from the GPU memory free after loading and the
model's dimensions (a pure function, computed rather than measured)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelDims:
    """The sizes that decide a batch's memory, read from config.json."""

    text_layers: int
    text_hidden: int
    text_intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    vision_tokens: int  # patches per tile + the class token (1,025 for 448 px / 14 px)
    image_tokens: int  # language-model tokens per tile after pixel shuffle (256)

    @classmethod
    def from_config(cls, config: dict, image_tokens: int = 256) -> ModelDims:
        text = config.get("text_config") or config.get("llm_config") or {}
        vision = config.get("vision_config") or {}
        hidden = int(text.get("hidden_size", 1536))
        heads = int(text.get("num_attention_heads", 12))
        image = vision.get("image_size", 448)
        patch = vision.get("patch_size", 14)
        image = image[0] if isinstance(image, list) else image
        patch = patch[0] if isinstance(patch, list) else patch
        return cls(
            text_layers=int(text.get("num_hidden_layers", 28)), text_hidden=hidden,
            text_intermediate=int(text.get("intermediate_size", 4 * hidden)),
            kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads), vocab=int(text.get("vocab_size", 151674)),
            vision_hidden=int(vision.get("hidden_size", 1024)),
            vision_intermediate=int(vision.get("intermediate_size", 4096)),
            vision_heads=int(vision.get("num_attention_heads", 16)),
            vision_tokens=(int(image) // int(patch)) ** 2 + 1, image_tokens=image_tokens,
        )


@dataclass(frozen=True)
class BatchDefaults:
    """Default --batch-size and --batch-tiles for a model on a device, and why (the run's BatchLimits come from
    these unless the user gave them)."""

    pages: int  # --batch-size
    tiles: int  # --batch-tiles
    reason: str


CPU_BATCH = BatchDefaults(8, 64, "CPU: fixed defaults")
MAX_BATCH_PAGES = 32  # past this, batched generate gains little and a batch's latency grows
RESERVE_BYTES = 2**30  # CUDA context, cuBLAS workspaces, allocator fragmentation


def default_batch_limits(free_bytes: int, dims: ModelDims, *, max_tiles: int = 12, typical_tiles: int = 7,
                         text_tokens: int = 512, max_new_tokens: int = 1024, dtype_bytes: int = 2,
                         attention: str = "sdpa") -> BatchDefaults:
    """--batch-size and --batch-tiles from the GPU memory left after loading the weights.

    A batch costs, per tile, its vision-tower activations (one layer at a time) and its 256 image tokens in the
    language model (KV cache plus one layer's prefill activations); per page, the KV cache of its text and
    answer. 85% of the free memory, less a reserve, is shared out as pages of `typical_tiles` tiles (an A4 page
    at the default budget); a page of `max_tiles` tiles (+ thumbnail) always fits in the tile limit. The engine
    still halves a batch that runs out of memory.
    """
    kv_per_token = 2 * dims.text_layers * dims.kv_heads * dims.head_dim * dtype_bytes
    prefill_per_token = (4 * dims.text_hidden + 3 * dims.text_intermediate) * dtype_bytes
    vision = dims.vision_tokens * (4 * dims.vision_hidden + 2 * dims.vision_intermediate) * dtype_bytes
    if attention == "eager":  # materialised attention scores, one layer at a time
        vision += dims.vision_heads * dims.vision_tokens ** 2 * dtype_bytes
    per_tile = vision + dims.image_tokens * (kv_per_token + prefill_per_token) + 3 * 448 * 448 * dtype_bytes
    per_page = (text_tokens + max_new_tokens) * kv_per_token + 2 * dims.vocab * 4
    budget = int(free_bytes * 0.85) - RESERVE_BYTES
    page_cost = typical_tiles * per_tile + per_page
    pages = max(1, min(MAX_BATCH_PAGES, budget // page_cost if budget > 0 else 1))
    tiles = max(max_tiles + 1, pages * typical_tiles)
    reason = (f"{free_bytes / 2**30:.1f} GiB free after loading; about {page_cost / 2**20:.0f} MiB per "
              f"{typical_tiles}-tile page")
    return BatchDefaults(int(pages), int(tiles), reason)
