"""Tiny InternVL checkpoints in OpenGVLab's remote-code layout, reverse-mapped from tiny native ones (for tests)."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from tiny_models import build_tiny_native

# The default system prompt that the official `internvl2_5` template (InternVL 2.5 and 3) puts in every chat.
SYSTEM_PROMPT = (
    "你是书生·万象，英文名是InternVL，"
    "是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)

# The official tokenizer_config.json chat template: ChatML with the system prompt above and no image handling
# (the remote code splices `<img><IMG_CONTEXT>...</img>` into the text itself).
OFFICIAL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# What transformers 4.37's PretrainedConfig.to_dict() wrote into every official sub-config; the converter must
# shrug these off (some, like attn_implementation, would break a native load if passed through).
_LEGACY_CONFIG_KEYS = {
    "_name_or_path": "", "add_cross_attention": False, "bad_words_ids": None, "begin_suppress_tokens": None,
    "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None, "decoder_start_token_id": None,
    "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False, "encoder_no_repeat_ngram_size": 0,
    "exponential_decay_length_penalty": None, "finetuning_task": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "is_decoder": False,
    "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "length_penalty": 1.0,
    "max_length": 20, "min_length": 0, "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1,
    "num_return_sequences": 1, "output_attentions": False, "output_hidden_states": False, "output_scores": False,
    "prefix": None, "problem_type": None, "pruned_heads": {}, "remove_invalid_values": False,
    "repetition_penalty": 1.0, "return_dict": True, "return_dict_in_generate": False, "sep_token_id": None,
    "suppress_tokens": None, "task_specific_params": None, "temperature": 1.0, "tf_legacy_loss": False,
    "tie_encoder_decoder": False, "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torchscript": False,
    "transformers_version": "4.37.2", "typical_p": 1.0, "use_bfloat16": True,
}

# Native (runtime) name -> official name, applied in order; vision qkv fusing is handled separately.
_VISION_RENAMES = [
    (r"^model\.vision_tower\.", "vision_model."),
    (r"\.encoder\.layer\.", ".encoder.layers."),
    (r"\.embeddings\.cls_token$", ".embeddings.class_embedding"),
    (r"\.embeddings\.position_embeddings$", ".embeddings.position_embedding"),
    (r"\.embeddings\.patch_embeddings\.projection\.", ".embeddings.patch_embedding."),
    (r"\.lambda_(\d)$", r".ls\1"),
    (r"\.attention\.projection_layer\.", ".attn.proj."),
    (r"\.attention\.", ".attn."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
]
_PROJECTOR_RENAMES = {"layer_norm": "0", "linear_1": "1", "linear_2": "3"}


def build_tiny_official(out_dir: Path, seed: int = 0, awq: bool = False, native_dir: Path | None = None,
                        weights: str = "bin", dtype: str | None = None) -> Path:
    """A tiny checkpoint in the official remote-code layout, made from a tiny native one (built here unless given).

    `weights`: "bin" (pytorch_model.bin), "safetensors" (model.safetensors), "sharded" or "sharded-bin" (two
    shards with an index), the forms OpenGVLab repos come in. `dtype` ("bfloat16", ...) casts the floating tensors, as
    official repos hold bf16 while tiny native ones are fp32. No remote-code .py files are written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if native_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return _reverse_map(_build_native(Path(tmp), seed, awq), out_dir, weights, dtype)
    return _reverse_map(Path(native_dir), out_dir, weights, dtype)


def build_tiny_native_variant(out_dir: Path, seed: int = 0, text_model_type: str = "qwen2",
                              tie_word_embeddings: bool = True) -> Path:
    """Like tiny_models.build_tiny_native, with another language model (qwen2, qwen3, llama) or an untied lm_head."""
    import torch
    from transformers import AutoConfig, GenerationConfig, InternVLForConditionalGeneration

    from tiny_models import CHAT_TEMPLATE, build_tokenizer, preprocessor_config, tiny_config

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir)
    config = tiny_config(tokenizer)
    text = {k: v for k, v in config.text_config.to_dict().items()
            if k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "max_position_embeddings", "eos_token_id", "pad_token_id")}
    config.text_config = AutoConfig.for_model(text_model_type, **text, tie_word_embeddings=tie_word_embeddings)
    config.tie_word_embeddings = tie_word_embeddings
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2))
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return out_dir


def _build_native(tmp: Path, seed: int, awq: bool) -> Path:
    if awq:
        from tiny_awq import build_tiny_native_awq

        return build_tiny_native_awq(tmp / "native", seed=seed)
    return build_tiny_native(tmp / "native", seed=seed)


def _reverse_map(native_dir: Path, out_dir: Path, weights: str, dtype: str | None) -> Path:
    native_config = json.loads((native_dir / "config.json").read_text())
    state = _official_state_dict(_read_native_weights(native_dir), native_config)
    if dtype:
        state = _cast(state, dtype)
        native_config = {**native_config, "dtype": dtype}
    _write_weights(state, out_dir, weights)
    tokenizer_json = json.loads((native_dir / "tokenizer.json").read_text())
    (out_dir / "config.json").write_text(json.dumps(official_config(native_config, tokenizer_json), indent=2))
    _write_tokenizer(tokenizer_json, out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(_official_preprocessor(), indent=2))
    return out_dir


# ---------------------------------------------------------------------------------------------- weights


def _read_native_weights(native_dir: Path) -> dict:
    """Every tensor of a native checkpoint, under runtime names (`model.vision_tower...`, `lm_head.weight`)."""
    from safetensors.torch import load_file

    state = {}
    for file in sorted(native_dir.glob("*.safetensors")):
        for name, tensor in load_file(file).items():
            state[_runtime_name(name)] = tensor
    return state


def _runtime_name(name: str) -> str:
    # save_pretrained writes the legacy -hf names; fold them onto the module names the model uses at runtime.
    if name.startswith("language_model.lm_head."):
        return name.replace("language_model.", "", 1)
    if name.startswith("language_model.model."):
        return "model.language_model." + name[len("language_model.model."):]
    if name.startswith(("vision_tower.", "multi_modal_projector.")):
        return "model." + name
    return name


def _official_state_dict(native: dict, native_config: dict) -> dict:
    state = {}
    for name, tensor in native.items():
        if ".attention.q_proj." in name or ".attention.k_proj." in name or ".attention.v_proj." in name:
            continue  # fused below
        state[_official_name(name)] = tensor
    for name in native:
        if ".attention.q_proj." in name:
            fused = _official_name(name).replace(".attn.q_proj.", ".attn.qkv.")
            parts = [native[name.replace(".q_proj.", f".{p}_proj.")] for p in "qkv"]
            state[fused] = _cat_rows(parts)
    if "language_model.lm_head.weight" not in state:
        # A tied model's torch state_dict lists lm_head too, sharing the embedding's storage.
        state["language_model.lm_head.weight"] = state["language_model.model.embed_tokens.weight"]
    return state


def _cast(state: dict, dtype: str) -> dict:
    import torch

    target = getattr(torch, dtype)
    cast = {}
    for name, tensor in state.items():
        cast[name] = tensor.to(target) if tensor.is_floating_point() else tensor
    # Keep the tied lm_head sharing the embedding's storage, as torch.save of a tied model does.
    if state["language_model.lm_head.weight"] is state["language_model.model.embed_tokens.weight"]:
        cast["language_model.lm_head.weight"] = cast["language_model.model.embed_tokens.weight"]
    return cast


def _cat_rows(parts: list):
    import torch

    return torch.cat(parts, dim=0)


def _official_name(name: str) -> str:
    if name == "lm_head.weight" or name.startswith("lm_head."):
        return "language_model." + name
    if name.startswith("model.language_model."):
        return "language_model.model." + name[len("model.language_model."):]
    if name.startswith("model.multi_modal_projector."):
        module, leaf = name[len("model.multi_modal_projector."):].split(".", 1)
        return f"mlp1.{_PROJECTOR_RENAMES[module]}.{leaf}"
    if name.startswith("model.vision_tower."):
        for pattern, replacement in _VISION_RENAMES:
            name = re.sub(pattern, replacement, name)
        return name
    raise ValueError(f"unexpected native tensor {name}")


def _write_weights(state: dict, out_dir: Path, weights: str) -> None:
    import torch
    from safetensors.torch import save_file

    if weights == "bin":
        torch.save(state, out_dir / "pytorch_model.bin")
        return
    # safetensors refuses tensors that share storage (the tied lm_head); official files hold separate copies.
    state = {k: v.clone().contiguous() for k, v in state.items()}
    if weights == "safetensors":
        save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return
    if weights not in ("sharded", "sharded-bin"):
        raise ValueError(f"unknown weights format {weights!r}")
    stem, ext = ("pytorch_model", "bin") if weights == "sharded-bin" else ("model", "safetensors")
    names = sorted(state)
    shards = {f"{stem}-00001-of-00002.{ext}": names[::2], f"{stem}-00002-of-00002.{ext}": names[1::2]}
    weight_map = {}
    for file, keys in shards.items():
        if ext == "bin":
            torch.save({k: state[k] for k in keys}, out_dir / file)
        else:
            save_file({k: state[k] for k in keys}, str(out_dir / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in keys})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}
    (out_dir / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2))


# ---------------------------------------------------------------------------------------------- config


def official_config(native_config: dict, tokenizer_json: dict) -> dict:
    """config.json as OpenGVLab's InternVL3 repos ship it, describing the same model as `native_config`."""
    vision, text = native_config["vision_config"], native_config["text_config"]
    quant = native_config.get("quantization_config")
    # Official repos say bfloat16 (AWQ: float16); a tiny one says what its tensors really are.
    dtype = native_config.get("dtype") or ("float16" if quant else "bfloat16")
    image_size = _first(vision["image_size"])
    return {
        "_commit_hash": None,
        "architectures": ["InternVLChatModel"],
        "auto_map": {
            "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel",
            "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
        },
        "downsample_ratio": native_config["downsample_ratio"],
        "dynamic_image_size": True,
        "force_image_size": image_size,
        "hidden_size": text["hidden_size"],
        "image_fold": None,
        "llm_config": _official_llm_config(text, quant, dtype, native_config, tokenizer_json),
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "model_type": "internvl_chat",
        "pad2square": False,
        "ps_version": "v2",
        "select_layer": native_config.get("vision_feature_layer", -1),
        "system_message": None,
        "template": "internvl2_5",
        "tie_word_embeddings": False,
        "torch_dtype": dtype,
        "transformers_version": None,
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": True,
        "vision_config": _official_vision_config(vision, dtype),
    }


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


_LLM_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}


def _official_llm_config(text: dict, quant: dict | None, dtype: str, native_config: dict,
                         tokenizer_json: dict) -> dict:
    ids = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
    rope = text.get("rope_parameters") or {}
    config = dict(_LEGACY_CONFIG_KEYS)
    config.update({k: v for k, v in text.items() if k not in ("rope_parameters", "layer_types", "dtype")})
    config.update({
        "_name_or_path": "./pretrained/Qwen2.5-1.5B-Instruct",
        "architectures": [_LLM_ARCHITECTURES[text["model_type"]]],
        # Official configs name flash attention here; a native load must not inherit it.
        "attn_implementation": "flash_attention_2",
        "bos_token_id": ids["<|endoftext|>"],
        # Qwen's config names <|endoftext|> as eos; chat turns really end with <|im_end|>.
        "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": None,
        "rope_scaling": None,
        "rope_theta": rope.get("rope_theta", 10000.0),
        # What the tiny native model really does: the top-level flag decides whether lm_head is tied.
        "tie_word_embeddings": bool(native_config.get("tie_word_embeddings", False)),
        "torch_dtype": dtype,
        "use_bfloat16": dtype == "bfloat16",
        # Training configs ship use_cache false; generation needs it on.
        "use_cache": False,
    })
    if text["model_type"] in ("qwen2", "qwen3"):
        config["sliding_window"] = text.get("sliding_window") or 32768
    if quant:
        config["quantization_config"] = _official_quant_config(quant)
    return config


def _official_quant_config(quant: dict) -> dict:
    """LMDeploy `lite auto_awq` writes only these five keys, nested in llm_config."""
    return {
        "bits": quant.get("bits", 4),
        "group_size": quant.get("group_size", 128),
        "quant_method": "awq",
        "version": "gemm",
        "zero_point": bool(quant.get("zero_point", True)),
    }


def _official_vision_config(vision: dict, dtype: str) -> dict:
    config = dict(_LEGACY_CONFIG_KEYS)
    config.update({
        "_name_or_path": "",
        "architectures": ["InternVisionModel"],
        "attention_dropout": vision.get("attention_dropout", 0.0),
        "drop_path_rate": 0.1,
        "dropout": vision.get("hidden_dropout_prob", 0.0),
        "hidden_act": vision["hidden_act"],
        "hidden_size": vision["hidden_size"],
        "image_size": _first(vision["image_size"]),
        "initializer_factor": vision.get("layer_scale_init_value", 0.1),
        "initializer_range": vision.get("initializer_range", 0.02),
        "intermediate_size": vision["intermediate_size"],
        "layer_norm_eps": vision["layer_norm_eps"],
        "model_type": "intern_vit_6b",
        "norm_type": vision["norm_type"],
        "num_attention_heads": vision["num_attention_heads"],
        "num_channels": vision.get("num_channels", 3),
        "num_hidden_layers": vision["num_hidden_layers"],
        "patch_size": _first(vision["patch_size"]),
        "qk_normalization": bool(vision.get("use_qk_norm", False)),
        "qkv_bias": bool(vision.get("attention_bias", False)),
        "torch_dtype": dtype,
        "use_bfloat16": dtype == "bfloat16",
        "use_flash_attn": True,
    })
    return config


def _official_preprocessor() -> dict:
    """The CLIP-style preprocessor_config.json the official repos carry (unused by their remote code)."""
    return {
        "crop_size": 448, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "resample": 3, "size": 448,
    }


# ---------------------------------------------------------------------------------------------- tokenizer


def _write_tokenizer(tokenizer_json: dict, out_dir: Path) -> None:
    """Qwen2Tokenizer files as the official repos have them: vocab.json + merges.txt, no tokenizer.json."""
    model = tokenizer_json["model"]
    (out_dir / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
    (out_dir / "added_tokens.json").write_text(json.dumps(added, indent=2))
    extra = [t for t in added if t not in ("<|endoftext|>",)]
    (out_dir / "special_tokens_map.json").write_text(json.dumps({
        "additional_special_tokens": extra, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
    }, indent=2))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(_official_tokenizer_config(tokenizer_json, extra),
                                                              indent=2, ensure_ascii=False))


def _official_tokenizer_config(tokenizer_json: dict, extra: list[str]) -> dict:
    decoder = {
        str(t["id"]): {
            "content": t["content"], "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True,
        }
        for t in tokenizer_json["added_tokens"]
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": extra,
        "bos_token": None,
        "chat_template": OFFICIAL_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 16384,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
