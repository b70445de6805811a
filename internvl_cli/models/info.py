"""Step 0c, what a checkpoint says about itself, read once from its small files (no weights): tiling, image tokens,
context, quantization, chat template and layout. Every engine is built from one CheckpointInfo."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..documents.tiling import TilingConfig
from ..errors import ModelLoadError
from .config import read_checkpoint_config

# Qwen2.5's context, the family's usual; used only for configs that do not say
DEFAULT_CONTEXT_LENGTH = 32768


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint's facts that engines and tasks depend on.

    `model_dir` is None for a model known only by name (one a server serves): its tiles are InternVL's standard
    ones and its context is unknown (None). `chat_template` is the template kept beside the processor (older -hf
    checkpoints), for a tokenizer that carries none.
    """

    model_id: str
    model_dir: Path | None = None
    tiling: TilingConfig = TilingConfig()
    context_length: int | None = None
    quantization: str | None = None  # "awq" or None; other schemes are refused when the info is read
    chat_template: str | None = None
    config: dict = field(default_factory=dict, compare=False)

    @classmethod
    def read(cls, model_dir: Path, model_id: str) -> CheckpointInfo:
        """Reads config.json, processor_config.json, preprocessor_config.json and the chat template files;
        ModelLoadError for a file that is unreadable or a quantization we do not run."""
        model_dir = Path(model_dir)
        config = read_checkpoint_config(model_dir)
        processor = _read_json(model_dir / "processor_config.json", default={})
        preprocessor = _read_json(model_dir / "preprocessor_config.json", default={})
        tiling = TilingConfig.from_preprocessor_config(preprocessor, _image_seq_length(processor, config))
        return cls(model_id=model_id, model_dir=model_dir, tiling=tiling, context_length=context_length(config),
                   quantization=_quantization(config, model_dir),
                   chat_template=_processor_chat_template(model_dir, processor), config=config)

    @classmethod
    def standard(cls, model_id: str) -> CheckpointInfo:
        """A model known only by name: InternVL's standard tiles (448 px, 1-12 tiles, 256 tokens each)."""
        return cls(model_id=model_id)

    @property
    def image_seq_length(self) -> int:
        """Image tokens per tile."""
        return self.tiling.image_seq_length

    def check_native(self) -> None:
        """ModelLoadError unless the checkpoint is in the native transformers layout (what engines load)."""
        if self.config.get("model_type") != "internvl":
            raise ModelLoadError(
                f"model_type '{self.config.get('model_type')}' is not the native InternVL layout", path=self.model_dir,
                hint="convert it with `internvl convert SRC DST`",
            )

    def require_chat_template(self) -> str:
        """The template beside the processor; ModelLoadError when the checkpoint has none anywhere."""
        if self.chat_template is None:
            raise ModelLoadError("the checkpoint has no chat template", path=self.model_dir)
        return self.chat_template


def checkpoint_info(spec: str, revision: str | None = None) -> CheckpointInfo:
    """The CheckpointInfo of a preset, hub id or local path (resolved, and converted once, to a native checkpoint)."""
    from .checkpoints import resolve_checkpoint

    model_dir, model_id = resolve_checkpoint(spec, revision)
    return CheckpointInfo.read(model_dir, model_id)


def declared_eos_ids(model_dir: str | Path) -> list[int]:
    """The end-of-answer ids the checkpoint's generation_config.json declares (none when it has no such file)."""
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return []
    value = _read_json(path).get("eos_token_id")
    return [value] if isinstance(value, int) else list(value or [])


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


def _processor_chat_template(model_dir: Path, processor: dict) -> str | None:
    """Older -hf checkpoints keep the chat template beside the processor rather than in the tokenizer."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    for data in (_read_json(model_dir / "chat_template.json", default={}), processor):
        if data.get("chat_template"):
            return data["chat_template"]
    return None


def context_length(config: dict) -> int:
    """The language model's context in tokens, from the checkpoint's config (no weights read)."""
    text = config.get("text_config") or config.get("llm_config") or config
    for key in ("max_position_embeddings", "max_sequence_length", "seq_length"):
        if isinstance(text.get(key), int) and text[key] > 0:
            return int(text[key])
    return DEFAULT_CONTEXT_LENGTH


def _image_seq_length(processor: dict, config: dict) -> int:
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
