"""Step 0, checkpoint conversion: OpenGVLab's remote-code InternVL layout (bf16 or AWQ) to the native one, offline.

Nothing here imports or executes a checkpoint's remote code, and nothing passes trust_remote_code: the config is
read as JSON, the weights are read with `torch.load(weights_only=True)` or safetensors, and the tokenizer is loaded
from a staged copy of its files through a built-in tokenizer class.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from .config import read_checkpoint_config
from ..errors import ModelLoadError, ModelNotFoundError, OutputError, short_reason

# Bump when the converter's output changes, so cached conversions made by older code are redone.
# 2: the chat template keeps the source template's default system message.
CONVERTER_VERSION = 2
MARKER_FILE = "internvl_cli_conversion.json"

NATIVE = "native"
REMOTE_CODE = "remote-code"

# Language models whose weights already carry transformers' own names (only the prefix moves).
SUPPORTED_LLMS = {
    "Qwen2ForCausalLM": "qwen2",   # InternVL2-1B, InternVL2.5-1B/4B/38B/78B, InternVL3-1B/2B/8B/14B/38B/78B
    "Qwen3ForCausalLM": "qwen3",   # InternVL3.5 dense models
    "LlamaForCausalLM": "llama",   # InternVL2-Llama3-76B, InternVL-Chat-V1-2
}
UNSUPPORTED_LLMS = {
    "InternLM2ForCausalLM": "InternLM2 (InternVL2/2.5 2B, 8B, 26B; its tokenizer exists only as remote code)",
    "Phi3ForCausalLM": "Phi-3 (InternVL2-4B)",
    "Gemma2ForCausalLM": "Gemma 2",
}
SUPPORTED_HINT = (
    "use a Qwen-based InternVL (InternVL3-1B/2B/8B/14B/38B/78B, InternVL2.5-1B/4B/38B/78B and their -AWQ "
    "versions) or a native checkpoint such as OpenGVLab/InternVL3-8B-hf"
)

# The runtime names AWQ must leave in 16-bit: only the language model's linears are packed.
AWQ_MODULES_TO_NOT_CONVERT = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]

# The -hf checkpoints' chat template: ChatML, no system prompt, one `<IMG_CONTEXT>\n` per image.
NATIVE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)
# Default system messages of the original conversation templates (conversation.py, by config.json "template"),
# for sources whose tokenizer_config.json carries no chat template to read it from.
CONVERSATION_SYSTEM_MESSAGES = {
    "internvl2_5": "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。",
    "Hermes-2": "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。",
    "internlm2-chat": "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。",
    "phi3-chat": "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。",
}
IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Files a tokenizer may need; anything else (config.json with auto_map, *.py) stays out of the staging folder.
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model",
)
_BUILTIN_TOKENIZERS = {
    "Qwen2Tokenizer", "Qwen2TokenizerFast", "LlamaTokenizer", "LlamaTokenizerFast",
    "PreTrainedTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast", "TokenizersBackend",
}

# Official vision names -> native runtime names, applied in order to the part after `vision_model.`.
_VISION_RENAMES = [
    (r"^embeddings\.class_embedding$", "embeddings.cls_token"),
    (r"^embeddings\.position_embedding$", "embeddings.position_embeddings"),
    (r"^embeddings\.patch_embedding\.", "embeddings.patch_embeddings.projection."),
    (r"^encoder\.layers\.(\d+)\.", r"encoder.layer.\1."),
    (r"\.ls(\d)$", r".lambda_\1"),
    (r"\.attn\.proj\.", ".attention.projection_layer."),
    (r"\.attn\.", ".attention."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
]
_PROJECTOR_RENAMES = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}
_AWQ_SUFFIXES = ("qweight", "qzeros", "scales")


def native_chat_template(system_message: str | None = None) -> str:
    """The -hf chat template; with `system_message`, it opens every chat with that system turn unless the chat
    brings its own, as the original remote-code template does."""
    if not system_message:
        return NATIVE_CHAT_TEMPLATE
    literal = json.dumps(system_message, ensure_ascii=False)  # a Jinja string literal (Python escapes)
    default = ("{% if loop.first and messages[0]['role'] != 'system' %}"
               "{{ '<|im_start|>system\n' + " + literal + " + '<|im_end|>\n' }}{% endif %}")
    opening = "{% for message in messages %}"
    return opening + default + NATIVE_CHAT_TEMPLATE[len(opening):]


# ---------------------------------------------------------------------------------------------- public API


def detect_layout(path: Path) -> str:
    """NATIVE for transformers' InternVL layout, REMOTE_CODE for OpenGVLab's original one; else ModelLoadError."""
    config = read_checkpoint_config(Path(path))
    architectures = config.get("architectures") or []
    if config.get("model_type") == "internvl" or "InternVLForConditionalGeneration" in architectures:
        return NATIVE
    if config.get("model_type") == "internvl_chat" or "InternVLChatModel" in architectures or "llm_config" in config:
        return REMOTE_CODE
    raise ModelLoadError(
        f"model_type '{config.get('model_type')}' is not an InternVL checkpoint", path=path,
        hint=f"pass an InternVL model: {SUPPORTED_HINT}",
    )


def convert_checkpoint(src: Path, dst: Path, overwrite: bool = False) -> Path:
    """Writes the native-layout twin of the remote-code checkpoint `src` to `dst`, all or nothing; returns `dst`."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ModelNotFoundError("checkpoint directory not found", path=src, hint="")
    if detect_layout(src) != REMOTE_CODE:
        raise ModelLoadError("already in the native layout: nothing to convert", path=src)
    if _is_populated(dst) and not overwrite:
        raise OutputError("the destination already exists", path=dst,
                          hint="pass --overwrite to replace it, or choose a new folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = dst.parent / f".{dst.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _convert_into(src, staging)
        _publish(staging, dst, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dst


def converted_cache_dir(src_id_or_path: str) -> Path:
    """The cache folder for this source's conversion, under `$INTERNVL_CLI_CACHE/converted/`
    (default `~/.cache/internvl-cli/converted/`), named by a hash of the source's identity."""
    root = os.environ.get("INTERNVL_CLI_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "internvl-cli"
    identity = _source_identity(src_id_or_path)
    digest = hashlib.sha256(f"v{CONVERTER_VERSION}\n{identity}".encode()).hexdigest()[:16]
    return base / "converted" / f"{_readable_name(src_id_or_path)}-{digest}"


def ensure_native(path: Path, before_convert: Callable[[Path, Path], None] | None = None) -> Path:
    """`path` itself for a native checkpoint; for a remote-code one, its cached conversion (made once).

    `before_convert(src, dst)` is told when a conversion (minutes for a large model) is about to start."""
    path = Path(path)
    if detect_layout(path) == NATIVE:
        return path
    dst = converted_cache_dir(str(path))
    if (dst / MARKER_FILE).exists():
        return dst
    if dst.parent.is_dir():
        _remove_stale_partials(dst)
    if before_convert is not None:
        before_convert(path, dst)
    try:
        return convert_checkpoint(path, dst)
    except (ModelLoadError, OutputError):
        # Another process may have published the same conversion while this one was working.
        if (dst / MARKER_FILE).exists():
            return dst
        raise


# ---------------------------------------------------------------------------------------------- orchestration


def _convert_into(src: Path, out: Path) -> None:
    source = read_checkpoint_config(src)
    _check_supported(source, src)
    tokenizer = _load_source_tokenizer(src)
    system_message = source_system_message(src, source, tokenizer)
    config = build_native_config(source, _image_token_id(tokenizer, src), _eos_token_id(tokenizer),
                                 tokenizer.pad_token_id)
    if config.image_token_id >= config.text_config.vocab_size:
        raise ModelLoadError(f"<IMG_CONTEXT> has id {config.image_token_id}, past the language model's "
                             f"{config.text_config.vocab_size} embeddings: tokenizer and weights disagree", path=src)
    written = _convert_weights(src, out, config)
    _check_weights(written, config, src)
    config.save_pretrained(out)
    _save_tokenizer(tokenizer, out, system_message)
    (out / "preprocessor_config.json").write_text(json.dumps(build_preprocessor_config(source), indent=2))
    _save_generation_config(tokenizer, out)
    marker = {"converter_version": CONVERTER_VERSION, "source": str(src.resolve()), "source_layout": REMOTE_CODE,
              "quantization": (config.to_dict().get("quantization_config") or {}).get("quant_method"),
              "system_message": system_message}
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=2))


def _publish(staging: Path, dst: Path, overwrite: bool) -> None:
    """Renames the finished folder into place; a reader sees either no `dst` or a complete one."""
    if overwrite and _is_populated(dst):
        trash = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dst, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(staging, dst)  # POSIX renames over an empty folder, never over a populated one
    except OSError:
        raise OutputError("the destination appeared while converting", path=dst,
                          hint="pass --overwrite to replace it") from None


def _remove_stale_partials(dst: Path) -> None:
    """Deletes half-written folders of `dst` left by conversions whose process died (they can be huge)."""
    for partial in dst.parent.glob(f".{dst.name}.partial-*"):
        pid = partial.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


def _is_populated(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


# ---------------------------------------------------------------------------------------------- reading the source


def _check_supported(source: dict, src: Path) -> None:
    llm = source.get("llm_config")
    vision = source.get("vision_config")
    if not isinstance(llm, dict) or not isinstance(vision, dict):
        raise ModelLoadError("config.json lacks llm_config/vision_config", path=src, hint=SUPPORTED_HINT)
    arch = (llm.get("architectures") or ["?"])[0]
    if arch in UNSUPPORTED_LLMS:
        raise ModelLoadError(f"{UNSUPPORTED_LLMS[arch]} language models are not supported by the converter",
                             path=src, hint=SUPPORTED_HINT)
    if arch not in SUPPORTED_LLMS:
        raise ModelLoadError(f"unknown language model architecture '{arch}'", path=src, hint=SUPPORTED_HINT)
    if source.get("ps_version", "v1") != "v2":
        # transformers implements only the v2 pixel shuffle; v1 transposes the tile's features differently.
        raise ModelLoadError(f"pixel-shuffle version '{source.get('ps_version', 'v1')}' is not supported "
                             "(transformers implements v2 only)", path=src, hint=SUPPORTED_HINT)
    _check_quantization(llm.get("quantization_config") or source.get("quantization_config"), src)


def _check_quantization(quant: dict | None, src: Path) -> None:
    if not quant:
        return
    method = str(quant.get("quant_method", "")).lower()
    version = str(quant.get("version", quant.get("format", "gemm"))).lower()
    if method != "awq" or version != "gemm" or str(quant.get("bits", 4)) != "4":
        raise ModelLoadError(f"quantization {method} {version} {quant.get('bits')}-bit is not supported "
                             "(only AWQ GEMM 4-bit, as LMDeploy writes it)", path=src, hint=SUPPORTED_HINT)


def _load_source_tokenizer(src: Path):
    """Loads the tokenizer from a copy of its files, so AutoTokenizer never sees the remote-code config.json."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="internvl-tokenizer-") as tmp:
        staged = Path(tmp)
        for name in _TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, staged / name)
        _strip_remote_tokenizer(staged, src)
        extra = dict(IMAGE_TOKENS)
        if not _staged_has_token(staged, IMAGE_TOKENS["video_token"]):
            # Official vocabularies have no <video>; naming it would add an id past the embedding table.
            extra.pop("video_token")
        try:
            return AutoTokenizer.from_pretrained(staged, extra_special_tokens=extra, trust_remote_code=False)
        except Exception as exc:
            raise ModelLoadError(f"cannot load the tokenizer ({short_reason(exc)})", path=src) from None


def _strip_remote_tokenizer(staged: Path, src: Path) -> None:
    file = staged / "tokenizer_config.json"
    if not file.exists():
        raise ModelLoadError("tokenizer_config.json is missing", path=src)
    config = json.loads(file.read_text(encoding="utf-8"))
    klass = config.get("tokenizer_class")
    if config.get("auto_map") or (klass and klass not in _BUILTIN_TOKENIZERS):
        raise ModelLoadError(f"the tokenizer ({klass}) exists only as remote code", path=src, hint=SUPPORTED_HINT)
    # The official template knows no images; the native one (with its system message) is set when saving.
    config.pop("chat_template", None)
    file.write_text(json.dumps(config, ensure_ascii=False))


def _staged_has_token(staged: Path, token: str) -> bool:
    """Whether the tokenizer files already define `token` (in a vocabulary or as an added token)."""
    return token in _defined_tokens(staged)


def _defined_tokens(staged: Path) -> set[str]:
    def load(name: str) -> dict:
        file = staged / name
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}

    tokens = set(load("vocab.json")) | set(load("added_tokens.json"))
    fast = load("tokenizer.json")
    vocab = (fast.get("model") or {}).get("vocab") or {}
    tokens |= set(vocab) if isinstance(vocab, dict) else {entry[0] for entry in vocab}  # Unigram: [token, score]
    tokens |= {t.get("content") for t in fast.get("added_tokens") or []}
    tokens |= {t.get("content") for t in (load("tokenizer_config.json").get("added_tokens_decoder") or {}).values()}
    return tokens


def _token_id(tokenizer, token: str) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id or token_id >= len(tokenizer):
        return None
    return int(token_id)


def _image_token_id(tokenizer, src: Path) -> int:
    token_id = _token_id(tokenizer, "<IMG_CONTEXT>")
    if token_id is None:
        raise ModelLoadError("the tokenizer has no <IMG_CONTEXT> token: not an InternVL checkpoint", path=src)
    return token_id


def _eos_token_id(tokenizer) -> int | None:
    # Chat turns end with <|im_end|>; Qwen's llm_config names <|endoftext|> instead.
    return _token_id(tokenizer, "<|im_end|>") or tokenizer.eos_token_id


# ---------------------------------------------------------------------------------------------- config


def build_native_config(source: dict, image_token_id: int, eos_token_id: int | None = None,
                        pad_token_id: int | None = None):
    """The InternVLConfig describing the same model as an official config.json (dict)."""
    from transformers import InternVLConfig

    llm = source["llm_config"]
    text = _text_config(llm, eos_token_id, pad_token_id)
    vision = _vision_config(source["vision_config"])
    image_size = int(source.get("force_image_size") or vision.image_size[0])
    ratio = float(source.get("downsample_ratio", 0.5))
    config = InternVLConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(),
        image_token_id=image_token_id,
        image_seq_length=int((image_size // vision.patch_size[0]) ** 2 * ratio ** 2),
        downsample_ratio=ratio,
        vision_feature_layer=int(source.get("select_layer", -1)),
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        # The top-level flag decides lm_head tying in InternVLForConditionalGeneration (its default is True).
        tie_word_embeddings=bool(llm.get("tie_word_embeddings", False)),
    )
    config.architectures = ["InternVLForConditionalGeneration"]
    config.dtype = _source_dtype(source)
    quant = llm.get("quantization_config") or source.get("quantization_config")
    if quant:
        config.quantization_config = _native_quant_config(quant)
    return config


def _text_config(llm: dict, eos_token_id: int | None, pad_token_id: int | None):
    from transformers import AutoConfig

    model_type = SUPPORTED_LLMS[llm["architectures"][0]]
    klass = type(AutoConfig.for_model(model_type))
    # Keep only what the native config declares: official configs also carry training-time keys
    # (attn_implementation: flash_attention_2, use_cache: false, generation defaults) that would hurt here.
    allowed = {f.name for f in dataclasses.fields(klass)} - _GENERIC_CONFIG_FIELDS
    kwargs = {k: v for k, v in llm.items() if k in allowed or k in _LEGACY_ROPE_KEYS}
    kwargs.pop("layer_types", None)
    kwargs["use_cache"] = True
    if eos_token_id is not None:
        kwargs["eos_token_id"] = eos_token_id
    if kwargs.get("pad_token_id") is None:
        kwargs["pad_token_id"] = pad_token_id
    return klass(**kwargs)


_GENERIC_CONFIG_FIELDS = {
    "transformers_version", "architectures", "output_hidden_states", "return_dict", "dtype",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type",
}
_LEGACY_ROPE_KEYS = {"rope_scaling", "rope_theta", "partial_rotary_factor"}


def _vision_config(vision: dict):
    """InternVisionConfig keys -> InternVLVisionConfig; defaults are InternVisionConfig's (InternViT-6B's)."""
    from transformers import InternVLVisionConfig

    return InternVLVisionConfig(
        hidden_size=vision.get("hidden_size", 3200),
        intermediate_size=vision.get("intermediate_size", 12800),
        num_hidden_layers=vision.get("num_hidden_layers", 48),
        num_attention_heads=vision.get("num_attention_heads", 25),
        hidden_act=vision.get("hidden_act", "gelu"),
        layer_norm_eps=vision.get("layer_norm_eps", 1e-6),
        norm_type=vision.get("norm_type", "rms_norm"),
        attention_bias=bool(vision.get("qkv_bias", False)),
        use_qk_norm=bool(vision.get("qk_normalization", True)),
        image_size=vision.get("image_size", 224),
        patch_size=vision.get("patch_size", 14),
        num_channels=vision.get("num_channels", 3),
        initializer_range=vision.get("initializer_range", 0.02),
        layer_scale_init_value=vision.get("initializer_factor", 0.1),
        # The original ViT has absolute position embeddings and no final norm (mean-pooling head = Identity).
        use_absolute_position_embeddings=True, use_mean_pooling=True, use_mask_token=False,
        attention_dropout=0.0, hidden_dropout_prob=0.0, projection_dropout=0.0,
    )


def _source_dtype(source: dict) -> str:
    for config in (source, source.get("llm_config") or {}):
        dtype = config.get("torch_dtype") or config.get("dtype")
        if isinstance(dtype, str):
            return dtype.replace("torch.", "")
    return "bfloat16"


def _native_quant_config(quant: dict) -> dict:
    """The llm_config's AWQ block, lifted to the top with the runtime names that must stay unquantized."""
    return {
        "quant_method": "awq",
        "bits": int(quant.get("bits", 4)),
        "group_size": int(quant.get("group_size", 128)),
        "zero_point": bool(quant.get("zero_point", True)),
        "version": "gemm",
        "modules_to_not_convert": list(AWQ_MODULES_TO_NOT_CONVERT),
    }


def build_preprocessor_config(source: dict) -> dict:
    """GotOcr2 settings as the -hf checkpoints ship them, with tile size and tile limits from the source config."""
    vision = source.get("vision_config") or {}
    size = int(source.get("force_image_size") or vision.get("image_size") or 448)
    return {
        "image_processor_type": "GotOcr2ImageProcessor",
        # The -hf repos ship False and leave tiling to the caller (InternVLProcessor / our tiling step).
        "crop_to_patches": False,
        "min_patches": int(source.get("min_dynamic_patch", 1)),
        "max_patches": int(source.get("max_dynamic_patch", 12)),
        "do_resize": True,
        "size": {"height": size, "width": size},
        "resample": 3,  # bicubic, as InternVL's own load_image
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "do_convert_rgb": True,
        "processor_class": "InternVLProcessor",
    }


# ---------------------------------------------------------------------------------------------- weights


def _weight_files(src: Path) -> list[Path]:
    """The source's weight files, from an index when sharded; safetensors preferred over .bin."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = src / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelLoadError(f"{index_name} is unreadable ({exc})", path=src) from None
            return [src / name for name in sorted(set(weight_map.values()))]
        if (src / single).is_file():
            return [src / single]
    raise ModelLoadError("no weights found (model.safetensors or pytorch_model.bin, with or without an index)",
                         path=src)


def _read_tensors(file: Path) -> dict:
    """All tensors of one weights file; .bin through the weights-only unpickler, memory-mapped when possible."""
    import torch

    if not file.is_file():
        raise ModelLoadError(f"weights file {file.name} is missing", path=file.parent)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            # Legacy (non-zip) .bin files cannot be memory-mapped.
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {file.name} ({short_reason(exc)})", path=file.parent) from None


def _convert_weights(src: Path, out: Path, config) -> dict[str, tuple]:
    """Converts file by file (a fused qkv never spans files); returns {runtime name: shape} of what was written."""
    from safetensors.torch import save_file

    files = _weight_files(src)
    tied = bool(config.tie_word_embeddings)
    written: dict[str, tuple] = {}
    weight_map: dict[str, str] = {}
    total = 0
    for number, file in enumerate(files, start=1):
        converted = convert_state_dict(_read_tensors(file), config.vision_config.hidden_size, src)
        if tied:
            converted.pop("lm_head.weight", None)  # tied to the embeddings, as the source model ties it
        name = "model.safetensors" if len(files) == 1 else f"model-{number:05d}-of-{len(files):05d}.safetensors"
        on_disk = {_saved_name(k): v.contiguous() for k, v in converted.items()}
        save_file(on_disk, str(out / name), metadata={"format": "pt"})
        written.update({k: tuple(v.shape) for k, v in converted.items()})
        weight_map.update({k: name for k in on_disk})
        total += sum(v.numel() * v.element_size() for v in on_disk.values())
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return written


def convert_state_dict(state: dict, vision_hidden_size: int, src: Path | str = "") -> dict:
    """Official tensor names -> native runtime names, the vision qkv split into q/k/v by rows."""
    out = {}
    unknown = []
    for name, tensor in state.items():
        new = _runtime_name(name)
        if new is None:
            unknown.append(name)
        elif new.endswith((".attention.qkv.weight", ".attention.qkv.bias")):
            out.update(_split_qkv(new, tensor, vision_hidden_size))
        else:
            out[new] = tensor
    if unknown:
        raise ModelLoadError(f"{len(unknown)} tensors have unexpected names (e.g. {unknown[0]})", path=src,
                             hint=SUPPORTED_HINT)
    return out


def _runtime_name(name: str) -> str | None:
    if name.startswith("language_model.model."):
        return "model.language_model." + name[len("language_model.model."):]
    if name.startswith("language_model.lm_head."):
        return "lm_head." + name[len("language_model.lm_head."):]
    if name.startswith("vision_model."):
        rest = name[len("vision_model."):]
        for pattern, replacement in _VISION_RENAMES:
            rest = re.sub(pattern, replacement, rest)
        return "model.vision_tower." + rest
    match = re.match(r"^mlp1\.(\d)\.(weight|bias)$", name)
    if match and match.group(1) in _PROJECTOR_RENAMES:
        return f"model.multi_modal_projector.{_PROJECTOR_RENAMES[match.group(1)]}.{match.group(2)}"
    return None


def _split_qkv(name: str, fused, dim: int) -> dict:
    # InternViT fuses q, k and v along the output rows, in that order, each `dim` rows.
    if fused.shape[0] != 3 * dim:
        raise ModelLoadError(f"{name} has {fused.shape[0]} rows, expected 3 x {dim}")
    return {name.replace(".qkv.", f".{part}_proj."): fused[i * dim:(i + 1) * dim].clone()
            for i, part in enumerate("qkv")}


def _saved_name(name: str) -> str:
    """Runtime name -> the name save_pretrained writes (and the published -hf repos hold)."""
    if name.startswith("lm_head."):
        return "language_model." + name
    if name.startswith("model.language_model."):
        return "language_model.model." + name[len("model.language_model."):]
    return name[len("model."):]


def _check_weights(written: dict[str, tuple], config, src: Path) -> None:
    """Compares names and shapes with a meta-device native model, so a mismatch fails here, not at load time."""
    expected = _expected_shapes(config)
    quantized = bool(getattr(config, "quantization_config", None))
    missing = []
    for name, shape in expected.items():
        if name in written:
            if tuple(written[name]) != shape:
                raise ModelLoadError(f"{name} has shape {written[name]}, the config implies {shape}", path=src,
                                     hint=SUPPORTED_HINT)
        elif not (quantized and _has_awq_triplet(name, written)):
            missing.append(name)
    extra = [n for n in written if n not in expected and not _is_awq_part(n, expected)]
    if missing or extra:
        example = (missing or extra)[0]
        raise ModelLoadError(f"converted weights do not match the model ({len(missing)} missing, {len(extra)} "
                             f"unexpected, e.g. {example})", path=src, hint=SUPPORTED_HINT)


def _expected_shapes(config) -> dict[str, tuple]:
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    plain = InternVLConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    with torch.device("meta"):
        model = InternVLForConditionalGeneration(plain)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if plain.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def _has_awq_triplet(name: str, written: dict) -> bool:
    if not (name.startswith("model.language_model.layers.") and name.endswith(".weight")):
        return False
    stem = name[: -len("weight")]
    return all(stem + suffix in written for suffix in _AWQ_SUFFIXES)


def _is_awq_part(name: str, expected: dict) -> bool:
    stem, _, suffix = name.rpartition(".")
    return suffix in _AWQ_SUFFIXES and f"{stem}.weight" in expected


# ---------------------------------------------------------------------------------------------- tokenizer & co


def source_system_message(src: Path, source: dict, tokenizer) -> str | None:
    """The default system message the source's own template opens a chat with (None when it has none).

    Read by rendering the source's tokenizer_config.json chat template (a Jinja template, rendered by
    transformers' sandbox like any chat template, no Python code involved) for one user turn; sources without
    one fall back to the conversation template named in config.json.
    """
    template = _source_chat_template(src)
    if template:
        try:
            rendered = tokenizer.apply_chat_template([{"role": "user", "content": "."}], chat_template=template,
                                                     tokenize=False)
        except Exception as exc:
            raise ModelLoadError(f"cannot render the checkpoint's chat template ({short_reason(exc)})",
                                 path=src) from None
        if not rendered.startswith(_SYSTEM_TURN_START):
            return None
        end = rendered.find(_TURN_END, len(_SYSTEM_TURN_START))
        return rendered[len(_SYSTEM_TURN_START):end] if end >= 0 else None
    return CONVERSATION_SYSTEM_MESSAGES.get(str(source.get("template")))


# ChatML, as every InternVL template is (models/prompting.py reads system turns the same way).
_SYSTEM_TURN_START = "<|im_start|>system\n"
_TURN_END = "<|im_end|>"


def _source_chat_template(src: Path) -> str | None:
    config = _read_json_file(src / "tokenizer_config.json")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    if not template and (src / "chat_template.jinja").is_file():
        template = (src / "chat_template.jinja").read_text(encoding="utf-8")
    if not template:
        template = _read_json_file(src / "chat_template.json").get("chat_template")
    return template if isinstance(template, str) and template else None


def _read_json_file(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_tokenizer(tokenizer, out: Path, system_message: str | None = None) -> None:
    """Saves with the native chat template (keeping the source's default system message) and the named image
    tokens AutoTokenizer exposes."""
    tokenizer.chat_template = native_chat_template(system_message)
    tokenizer.save_pretrained(out)
    # from_pretrained's own arguments end up in the saved config; they describe our staging folder, not the model.
    config_file = out / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only", "trust_remote_code", "name_or_path"):
        config.pop(key, None)
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_generation_config(tokenizer, out: Path) -> None:
    from transformers import GenerationConfig

    GenerationConfig(eos_token_id=_eos_token_id(tokenizer), pad_token_id=tokenizer.pad_token_id).save_pretrained(out)


# ---------------------------------------------------------------------------------------------- cache keys


def _source_identity(src_id_or_path: str) -> str:
    """A local folder is known by its resolved path and its files' sizes and times; a hub id by itself."""
    path = Path(src_id_or_path).expanduser()
    if not path.is_dir():
        return f"id:{src_id_or_path}"
    parts = [f"path:{path.resolve()}"]
    for file in sorted(path.iterdir()):
        if file.is_file():
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "\n".join(parts)


def _readable_name(src_id_or_path: str) -> str:
    path = Path(src_id_or_path.rstrip("/\\"))
    name = path.name
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        # A hub cache snapshot folder is named by its commit; the repo name sits two levels up.
        name = path.parent.parent.name.split("--")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
