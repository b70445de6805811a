"""Step 0c, what a checkpoint says about itself: its context, image tokens, quantization and chat template, read
from its small files (no weights)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelLoadError


def _quantization(config: dict, model_dir: Path) -> str | None:
    """"awq" or None; other schemes are refused here rather than half-loaded by transformers."""
    from ..hardware.awq import quantization_config_of

    method = str((quantization_config_of(config) or {}).get("quant_method") or "").lower() or None
    if method in (None, "awq"):
        return method
    if method == "bitsandbytes":
        raise ModelLoadError("bitsandbytes-quantized checkpoints are not supported: 4-bit BNB breaks InternViT",
                             path=model_dir, hint="use an AWQ checkpoint (see `internvl models`)")
    raise ModelLoadError(f"quantization '{method}' is not supported (only AWQ 4-bit is)", path=model_dir,
                         hint="use an AWQ or an unquantized checkpoint (see `internvl models`)")


def _read_json(path: Path, default: dict | None = None) -> dict:
    if not path.exists():
        if default is not None:
            return default
        raise ModelLoadError(f"{path.name} is missing: not a model checkpoint directory", path=path.parent)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path.name} is unreadable ({exc})", path=path.parent) from None


def _processor_chat_template(model_dir: Path) -> str:
    """Older -hf checkpoints keep the chat template beside the processor rather than in the tokenizer."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "processor_config.json"):
        data = _read_json(model_dir / name, default={})
        if data.get("chat_template"):
            return data["chat_template"]
    raise ModelLoadError("the checkpoint has no chat template", path=model_dir)


def context_length(config: dict) -> int:
    """The language model's context in tokens, from the checkpoint's config (no weights read)."""
    text = config.get("text_config") or config.get("llm_config") or config
    for key in ("max_position_embeddings", "max_sequence_length", "seq_length"):
        if isinstance(text.get(key), int) and text[key] > 0:
            return int(text[key])
    return 32768  # Qwen2.5's, the family's usual; only reached for configs that do not say


def _image_seq_length(model_dir: Path, config: dict) -> int:
    processor = _read_json(model_dir / "processor_config.json", default={})
    if processor.get("image_seq_length"):
        return int(processor["image_seq_length"])
    if config.get("image_seq_length"):
        return int(config["image_seq_length"])
    vision = config.get("vision_config") or {}
    image = vision.get("image_size", 448)
    patch = vision.get("patch_size", 14)
    image = image[0] if isinstance(image, list) else image
    patch = patch[0] if isinstance(patch, list) else patch
    return int((image // patch) ** 2 * config.get("downsample_ratio", 0.5) ** 2)
