"""Tests for step 0, the offline remote-code -> native checkpoint converter (internvl_cli.models.convert)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from internvl_cli.models import convert
from internvl_cli.models.convert import (
    MARKER_FILE, NATIVE, REMOTE_CODE, convert_checkpoint, converted_cache_dir, detect_layout, ensure_native,
)
from internvl_cli.errors import ExitCode, ModelLoadError, OutputError
from tiny_models import CHAT_TEMPLATE, build_tiny_native
from tiny_official import SYSTEM_PROMPT, build_tiny_native_variant, build_tiny_official

TILES = 2


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """(tiny native checkpoint, the official-layout checkpoint reverse-mapped from it)."""
    root = tmp_path_factory.mktemp("convert")
    native = build_tiny_native(root / "native", seed=0)
    return native, build_tiny_official(root / "official", native_dir=native)


@pytest.fixture(scope="module")
def converted(pair, tmp_path_factory) -> Path:
    return convert_checkpoint(pair[1], tmp_path_factory.mktemp("out") / "converted")


def _load(path: Path, dtype=torch.float32, **kwargs):
    from transformers import AutoModelForImageTextToText

    model, info = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, output_loading_info=True, **kwargs)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    return model.eval()


def _image_prompt_ids(model_dir: Path) -> torch.Tensor:
    """A chat with one 2-tile image, rendered by the checkpoint's template and expanded as InternVLProcessor does."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Invoice total?"}]}]
    chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    context = tokenizer.context_image_token
    expanded = chat.replace(f"{context}\n", tokenizer.start_image_token + context * (256 * TILES)
                            + tokenizer.end_image_token + "\n")
    return tokenizer(expanded, return_tensors="pt").input_ids


def _logits(model, input_ids: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    pixels = torch.randn(TILES, 3, 448, 448, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.inference_mode():
        return model(input_ids=input_ids, pixel_values=pixels).logits.float()


# ---------------------------------------------------------------------------------------------- layout


def test_detect_layout(pair, converted):
    native, official = pair
    assert detect_layout(native) == NATIVE
    assert detect_layout(official) == REMOTE_CODE
    assert detect_layout(converted) == NATIVE


def test_official_fixture_looks_official(pair):
    official = pair[1]
    config = json.loads((official / "config.json").read_text())
    assert config["architectures"] == ["InternVLChatModel"] and config["model_type"] == "internvl_chat"
    assert config["llm_config"]["architectures"] == ["Qwen2ForCausalLM"]
    assert config["vision_config"]["model_type"] == "intern_vit_6b"
    assert not list(official.glob("*.py"))
    state = torch.load(official / "pytorch_model.bin", weights_only=True)
    assert "vision_model.encoder.layers.0.attn.qkv.weight" in state and "mlp1.1.weight" in state
    assert "language_model.lm_head.weight" in state


# ---------------------------------------------------------------------------------------------- bf16 parity


def test_converted_logits_equal_native(pair, converted):
    native, _ = pair
    input_ids = _image_prompt_ids(converted)
    assert (input_ids == json.loads((converted / "config.json").read_text())["image_token_id"]).sum() == 256 * TILES
    expected = _logits(_load(native), input_ids)
    torch.testing.assert_close(_logits(_load(converted), input_ids), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("text_model_type,tied,weights", [
    ("qwen2", False, "sharded"),
    ("qwen3", True, "safetensors"),
    ("llama", False, "sharded-bin"),
])
def test_variants_convert_exactly(tmp_path, text_model_type, tied, weights):
    native = build_tiny_native_variant(tmp_path / "native", text_model_type=text_model_type,
                                       tie_word_embeddings=tied)
    official = build_tiny_official(tmp_path / "official", native_dir=native, weights=weights)
    out = convert_checkpoint(official, tmp_path / "converted")
    input_ids = _image_prompt_ids(out)
    torch.testing.assert_close(_logits(_load(out), input_ids), _logits(_load(native), input_ids), rtol=0, atol=1e-6)


def test_bf16_checkpoint_stays_bf16(tmp_path, pair):
    official = build_tiny_official(tmp_path / "official", native_dir=pair[0], dtype="bfloat16")
    out = convert_checkpoint(official, tmp_path / "converted")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    input_ids = _image_prompt_ids(out)
    expected = _logits(_load(pair[0], dtype=torch.bfloat16), input_ids, torch.bfloat16)
    got = _logits(_load(out, dtype=torch.bfloat16), input_ids, torch.bfloat16)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- converted files


def test_converted_config_matches_native(pair, converted):
    native = json.loads((pair[0] / "config.json").read_text())
    ours = json.loads((converted / "config.json").read_text())
    for key in ("architectures", "model_type", "image_token_id", "image_seq_length", "downsample_ratio",
                "vision_feature_layer", "vision_feature_select_strategy", "tie_word_embeddings", "vision_config"):
        assert ours[key] == native[key], key
    text = ours["text_config"]
    assert text["use_cache"] is True  # the official llm_config says false
    assert "attn_implementation" not in text and "_attn_implementation" not in text
    assert "quantization_config" not in ours


def test_converted_tokenizer_template_and_processor(converted):
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer.context_image_token == "<IMG_CONTEXT>"
    assert (tokenizer.start_image_token, tokenizer.end_image_token) == ("<img>", "</img>")
    # The -hf template, opened by the official template's default system turn (tests/test_system_prompt.py
    # compares whole prompts with the original's, token for token).
    assert tokenizer.chat_template == convert.native_chat_template(SYSTEM_PROMPT)
    loop_body = CHAT_TEMPLATE[len("{% for message in messages %}"):]
    assert CHAT_TEMPLATE == convert.NATIVE_CHAT_TEMPLATE and tokenizer.chat_template.endswith(loop_body)
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered == f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    assert GenerationConfig.from_pretrained(converted).eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    processor = json.loads((converted / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "GotOcr2ImageProcessor"
    assert processor["size"] == {"height": 448, "width": 448} and processor["max_patches"] == 12
    assert processor["image_mean"] == [0.485, 0.456, 0.406] and processor["resample"] == 3
    assert (converted / MARKER_FILE).exists() and not list(converted.glob("*.py"))


def test_no_video_token_when_vocab_lacks_it(tmp_path, pair):
    official = build_tiny_official(tmp_path / "official", native_dir=pair[0])
    for name in ("added_tokens.json", "special_tokens_map.json", "tokenizer_config.json"):
        text = (official / name).read_text().replace("<video>", "<vid_unused>")
        (official / name).write_text(text)
    vocab = json.loads((official / "vocab.json").read_text())
    vocab["<vid_unused>"] = vocab.pop("<video>")
    (official / "vocab.json").write_text(json.dumps(vocab))
    out = convert_checkpoint(official, tmp_path / "converted")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) <= json.loads((out / "config.json").read_text())["text_config"]["vocab_size"]
    assert tokenizer.context_image_token == "<IMG_CONTEXT>"


# ---------------------------------------------------------------------------------------------- AWQ


@pytest.fixture(scope="module")
def awq_pair(tmp_path_factory) -> tuple[Path, Path]:
    tiny_awq = pytest.importorskip("tiny_awq")
    root = tmp_path_factory.mktemp("awq")
    native = tiny_awq.build_tiny_native_awq(root / "native", seed=0)
    official = build_tiny_official(root / "official", native_dir=native)
    return native, convert_checkpoint(official, root / "converted")


def test_awq_official_nests_quantization_in_llm_config(tmp_path, awq_pair):
    official = build_tiny_official(tmp_path / "official", native_dir=awq_pair[0])
    config = json.loads((official / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["llm_config"]["quantization_config"]["quant_method"] == "awq"
    state = torch.load(official / "pytorch_model.bin", weights_only=True)
    assert state["language_model.model.layers.0.self_attn.q_proj.qweight"].dtype == torch.int32


def test_awq_converted_tensors_and_config_equal_native(awq_pair):
    from safetensors.torch import load_file

    native, out = awq_pair
    expected, got = load_file(native / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    native_config = json.loads((native / "config.json").read_text())
    ours = json.loads((out / "config.json").read_text())
    assert ours["quantization_config"] == native_config["quantization_config"]
    assert ours["quantization_config"]["modules_to_not_convert"] == [
        "model.vision_tower", "model.multi_modal_projector", "lm_head"]
    assert "quantization_config" not in ours["text_config"]


def test_awq_converted_logits_equal_native(awq_pair):
    pytest.importorskip("gptqmodel", reason="AWQ checkpoints load through gptqmodel")
    native, out = awq_pair

    def load(path: Path):
        kwargs = {"dtype": torch.bfloat16}
        try:
            from internvl_cli.hardware.awq import awq_load_kwargs

            kwargs.update(awq_load_kwargs(json.loads((path / "config.json").read_text()), "cpu"))
        except ImportError:
            pass
        return _load(path, **kwargs)

    input_ids = _image_prompt_ids(out)
    model = load(out)
    quantized = [n for n, m in model.named_modules() if hasattr(m, "qweight")]
    assert quantized and all(n.startswith("model.language_model.layers.") for n in quantized)
    expected = _logits(load(native), input_ids, torch.bfloat16)
    torch.testing.assert_close(_logits(model, input_ids, torch.bfloat16), expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- refusals


def _official_copy(tmp_path: Path, pair) -> Path:
    return build_tiny_official(tmp_path / "official", native_dir=pair[0])


def _edit_config(path: Path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


class _Payload:
    """Pickles as a call to os.mkdir: a weights_only load must refuse it rather than run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _garbage(kind: str, tmp_path: Path, pair) -> Path:
    if kind == "empty dir":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    if kind == "bad json":
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "config.json").write_text("{not json")
        return tmp_path / "bad"
    if kind == "not internvl":
        (tmp_path / "bert").mkdir()
        (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
        return tmp_path / "bert"
    path = _official_copy(tmp_path, pair)
    if kind == "internlm2":
        _edit_config(path, lambda c: c["llm_config"].update(architectures=["InternLM2ForCausalLM"]))
    elif kind == "pixel shuffle v1":
        _edit_config(path, lambda c: c.update(ps_version="v1"))
    elif kind == "gptq":
        _edit_config(path, lambda c: c["llm_config"].update(quantization_config={"quant_method": "gptq"}))
    elif kind == "no weights":
        (path / "pytorch_model.bin").unlink()
    elif kind == "pickle payload":
        torch.save({"x": _Payload(tmp_path / "pwned")}, path / "pytorch_model.bin")
    elif kind == "stray tensor":
        state = torch.load(path / "pytorch_model.bin", weights_only=True)
        torch.save({**state, "something.else.weight": torch.zeros(2)}, path / "pytorch_model.bin")
    elif kind == "missing tensor":
        state = torch.load(path / "pytorch_model.bin", weights_only=True)
        state.pop("mlp1.3.weight")
        torch.save(state, path / "pytorch_model.bin")
    elif kind == "wrong shape":
        _edit_config(path, lambda c: c["vision_config"].update(intermediate_size=48))
    elif kind == "remote tokenizer":
        config = json.loads((path / "tokenizer_config.json").read_text())
        config.update(tokenizer_class="InternLM2Tokenizer", auto_map={"AutoTokenizer": ["tok.InternLM2Tokenizer"]})
        (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("kind", [
    "empty dir", "bad json", "not internvl", "internlm2", "pixel shuffle v1", "gptq", "no weights",
    "pickle payload", "stray tensor", "missing tensor", "wrong shape", "remote tokenizer",
])
def test_refuses_garbage_with_typed_error(tmp_path, pair, kind):
    src = _garbage(kind, tmp_path, pair)
    dst = tmp_path / "out" / "converted"
    with pytest.raises(ModelLoadError) as caught:
        convert_checkpoint(src, dst)
    assert caught.value.exit_code == ExitCode.MODEL_LOAD and caught.value.one_line()
    assert not dst.exists()
    assert not dst.parent.exists() or not list(dst.parent.iterdir())  # no half-written leftovers
    assert not (tmp_path / "pwned").exists()
    if kind == "internlm2":
        assert "InternLM2" in caught.value.message and caught.value.hint


def test_crash_leaves_no_partial_output(tmp_path, pair, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(convert, "_save_generation_config", boom)
    with pytest.raises(RuntimeError):
        convert_checkpoint(pair[1], tmp_path / "out" / "converted")
    assert not list((tmp_path / "out").iterdir())


def test_refuses_existing_destination_unless_overwrite(tmp_path, pair):
    dst = tmp_path / "converted"
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="already exists") as refused:
        convert_checkpoint(pair[1], dst)
    assert "--overwrite" in refused.value.hint and (dst / "keep.txt").exists()
    convert_checkpoint(pair[1], dst, overwrite=True)
    assert not (dst / "keep.txt").exists() and detect_layout(dst) == NATIVE


# ---------------------------------------------------------------------------------------------- cache


def test_ensure_native_converts_once(tmp_path, pair, monkeypatch):
    monkeypatch.setenv("INTERNVL_CLI_CACHE", str(tmp_path / "cache"))
    native, official = pair
    assert ensure_native(native) == native
    first = ensure_native(official)
    assert first.parent == tmp_path / "cache" / "converted" and first.name.startswith("official-")
    assert first == converted_cache_dir(str(official))

    def refuse(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(convert, "convert_checkpoint", refuse)
    assert ensure_native(official) == first


def test_stale_partial_of_a_dead_process_is_removed(tmp_path, pair, monkeypatch):
    monkeypatch.setenv("INTERNVL_CLI_CACHE", str(tmp_path / "cache"))
    dst = converted_cache_dir(str(pair[1]))
    dst.parent.mkdir(parents=True)
    dead = dst.parent / f".{dst.name}.partial-999999999-deadbeef"
    alive = dst.parent / f".{dst.name}.partial-{os.getpid()}-cafebabe"
    dead.mkdir()
    alive.mkdir()
    ensure_native(pair[1])
    assert not dead.exists() and alive.exists()


def test_realistic_internvl3_config_translates():
    """An InternVL3-2B-style config.json (values as published) becomes a valid native config."""
    source = {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "downsample_ratio": 0.5,
        "force_image_size": 448, "select_layer": -1, "ps_version": "v2", "template": "internvl2_5",
        "max_dynamic_patch": 12, "min_dynamic_patch": 1, "dynamic_image_size": True, "use_thumbnail": True,
        "torch_dtype": "bfloat16",
        "llm_config": {
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
            "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
            "num_key_value_heads": 2, "vocab_size": 151674, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "rope_scaling": {"factor": 2.0, "rope_type": "dynamic", "type": "dynamic"},
            "rms_norm_eps": 1e-06, "tie_word_embeddings": False, "use_cache": False, "sliding_window": 32768,
            "use_sliding_window": False, "max_window_layers": 70, "attn_implementation": "flash_attention_2",
            "torch_dtype": "bfloat16", "use_bfloat16": True, "bos_token_id": 151643, "eos_token_id": 151643,
            "transformers_version": "4.37.2", "top_k": 50, "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
        },
        "vision_config": {
            "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": 1024,
            "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 448,
            "patch_size": 14, "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm",
            "layer_norm_eps": 1e-06, "drop_path_rate": 0.1, "use_flash_attn": True, "initializer_factor": 1.0,
        },
    }
    config = convert.build_native_config(source, image_token_id=151667, eos_token_id=151645, pad_token_id=151643)
    assert config.image_seq_length == 256 and config.image_token_id == 151667
    assert config.tie_word_embeddings is False and str(config.dtype).endswith("bfloat16")
    text, vision = config.text_config, config.vision_config
    assert text.use_cache is True and text.eos_token_id == 151645 and text._attn_implementation is None
    assert text.rope_parameters["rope_type"] == "dynamic" and text.rope_parameters["rope_theta"] == 1e6
    assert text.sliding_window is None and text.vocab_size == 151674
    assert vision.attention_bias is True and vision.use_qk_norm is False and vision.norm_type == "layer_norm"
    assert tuple(vision.image_size) == (448, 448) and tuple(vision.patch_size) == (14, 14)
    assert vision.layer_scale_init_value == 1.0
    # InternViT-6B configs leave some keys to InternVisionConfig's defaults: RMSNorm and QK-norm on.
    six_b = {k: v for k, v in source["vision_config"].items() if k not in ("qk_normalization", "norm_type")}
    vision_6b = convert.build_native_config({**source, "vision_config": six_b}, 151667).vision_config
    assert vision_6b.use_qk_norm is True and vision_6b.norm_type == "rms_norm"


def test_cache_key_follows_source_identity(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERNVL_CLI_CACHE", str(tmp_path / "cache"))
    assert converted_cache_dir("OpenGVLab/InternVL3-2B-AWQ") == converted_cache_dir("OpenGVLab/InternVL3-2B-AWQ")
    assert converted_cache_dir("OpenGVLab/InternVL3-2B-AWQ").name.startswith("InternVL3-2B-AWQ-")
    assert converted_cache_dir("OpenGVLab/InternVL3-2B") != converted_cache_dir("OpenGVLab/InternVL3-2B-AWQ")
    snapshot = tmp_path / "hub" / "models--OpenGVLab--InternVL3-1B" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    before = converted_cache_dir(str(snapshot))
    assert before.name.startswith("InternVL3-1B-")
    (snapshot / "config.json").write_text('{"changed": true}')
    assert converted_cache_dir(str(snapshot)) != before
    monkeypatch.delenv("INTERNVL_CLI_CACHE")
    assert converted_cache_dir("a/b").parent == Path.home() / ".cache" / "internvl-cli" / "converted"
