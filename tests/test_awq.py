"""AWQ: the tiny 4-bit checkpoint's packing, its loading through transformers + gptqmodel, and quantization."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import tiny_awq
from internvl_cli.hardware import awq
from internvl_cli.errors import ModelLoadError

# AWQ (CPU kernel, bfloat16) vs the same model with the dequantized weights in float32. Measured over seeds
# 0-2 and group sizes 32/64: at most 0.008 (1-2 bfloat16 steps at |logit| ~ 1.4; logits' std is 0.16).
# The quantization error itself (dequantized vs original weights) is 0.06-0.09, and packing mistakes are
# far larger (AWQ column order ignored: 0.7; zero point off by one: 1.0; scales 5% off: 0.056), so
# 0.02 passes bfloat16 rounding and fails any of them.
LOGIT_ATOL = 0.02
TILES = 2

# Loading and quantizing need gptqmodel (a dependency; see README), the format and error paths do not.
needs_gptqmodel = pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None, reason="gptqmodel not installed")


@pytest.fixture(scope="module")
def awq_dir(tmp_path_factory) -> Path:
    return tiny_awq.build_tiny_native_awq(tmp_path_factory.mktemp("awq") / "tiny-awq", seed=0, group_size=32)


@pytest.fixture(scope="module")
def awq_model(awq_dir):
    return _load(awq_dir)


@pytest.fixture(scope="module")
def reference_logits(tmp_path_factory) -> torch.Tensor:
    from transformers import AutoModelForImageTextToText

    ref_dir = tiny_awq.build_dequantized_reference(tmp_path_factory.mktemp("ref") / "tiny-ref", seed=0, group_size=32)
    model = AutoModelForImageTextToText.from_pretrained(ref_dir, dtype=torch.float32).eval()
    return _logits(model, torch.float32)


def _inputs(config, dtype) -> dict:
    """Two 448x448 tiles and a prompt with <img> + 256 <IMG_CONTEXT> per tile + </img>, as the processor builds it."""
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(TILES, 3, 448, 448, generator=generator).to(dtype)
    return {"pixel_values": pixel_values, "input_ids": _prompt_ids(config, TILES)}


def _prompt_ids(config, tiles: int) -> torch.Tensor:
    from tiny_models import SPECIAL_TOKENS

    # tiny_models' tokenizer numbers its special tokens first, in SPECIAL_TOKENS' order.
    special = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    assert special["<IMG_CONTEXT>"] == config.image_token_id
    image = [special["<img>"]] + [config.image_token_id] * (config.image_seq_length * tiles) + [special["</img>"]]
    return torch.tensor([[special["<|im_start|>"], *image, 40, 41, 42, 43, special["<|im_end|>"]]])


def _logits(model, dtype) -> torch.Tensor:
    with torch.no_grad():
        return model(**_inputs(model.config, dtype)).logits.float()


def _load(path: Path, device: str = "cpu", config: dict | None = None):
    """transformers with our kwargs, as the engine loads (its dtype settled whatever transformers' version)."""
    from transformers import AutoModelForImageTextToText

    config = config or json.loads((path / "config.json").read_text())
    kwargs = awq.awq_load_kwargs(config, device)
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs).eval()
    awq.settle_dtype(model, kwargs["dtype"])
    return model


LM_LINEARS = sorted(
    f"model.language_model.layers.{i}.{m}"
    for i in range(2)
    for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
)


# -- packing ---------------------------------------------------------------------------------------------

def test_packing_round_trips():
    codes = torch.randint(0, 16, (48, 64), dtype=torch.int32)
    assert torch.equal(tiny_awq.unpack_columns(tiny_awq.pack_columns(codes)), codes)


def test_quantize_pack_unpack_gives_back_the_quantized_weight():
    weight = torch.randn(128, 64) * 0.05
    codes, zeros, scales = tiny_awq.quantize_weight(weight, group_size=32)
    packed = tiny_awq.pack_awq_gemm(codes, zeros, scales)
    assert packed["qweight"].shape == (64, 16) and packed["qzeros"].shape == (2, 16)
    assert packed["scales"].shape == (2, 128) and packed["scales"].dtype == torch.float16
    back_codes, back_zeros, back_scales = tiny_awq.unpack_awq_gemm(**packed)
    assert torch.equal(back_codes, codes) and torch.equal(back_zeros, zeros) and torch.equal(back_scales, scales)
    # Round to nearest: within half a step of the original weight, plus what the float16-rounded scale
    # (relative error <= 2**-11) loses over the 15 steps at the edge of a group's range.
    step = scales.float().repeat_interleave(32, dim=1)
    error = (tiny_awq.dequantize(codes, zeros, scales, 32) - weight).abs()
    assert (error <= step * (0.5 + 15 * 2**-11)).all()


@needs_gptqmodel
def test_packing_matches_gptqmodels_reading_of_awq_gemm():
    """An independent reader of the format (gptqmodel's dequantizer) gets the same weight back."""
    from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm

    weight = torch.randn(64, 128) * 0.05
    codes, zeros, scales = tiny_awq.quantize_weight(weight, group_size=32)
    packed = tiny_awq.pack_awq_gemm(codes, zeros, scales)
    theirs = dequantize_gemm(packed["qweight"], packed["qzeros"], packed["scales"].float(), 4, 32)  # (in, out)
    assert torch.equal(theirs.t(), tiny_awq.dequantize(codes, zeros, scales, 32))


# -- loading ---------------------------------------------------------------------------------------------

def test_checkpoint_layout(awq_dir):
    from safetensors import safe_open

    config = json.loads((awq_dir / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm",
        "modules_to_not_convert": ["model.vision_tower", "model.multi_modal_projector", "lm_head"],
    }
    with safe_open(awq_dir / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("language_model.model.layers.0.mlp.down_proj.qweight").dtype == torch.int32
    prefix = "language_model.model.layers.0.self_attn.q_proj"
    assert {f"{prefix}.qweight", f"{prefix}.qzeros", f"{prefix}.scales", f"{prefix}.bias"} <= keys
    assert f"{prefix}.weight" not in keys
    assert "vision_tower.encoder.layer.0.attention.q_proj.weight" in keys


@needs_gptqmodel
def test_plain_from_pretrained_loads_the_checkpoint(awq_dir):
    """transformers alone (no kwargs of ours) reads the checkpoint: its config names the runtime modules."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(awq_dir, dtype=torch.bfloat16, device_map="cpu")
    assert sorted(awq.quantized_module_names(model)) == LM_LINEARS


@needs_gptqmodel
def test_only_the_language_model_is_quantized_and_logits_match(awq_model, reference_logits):
    model = awq_model
    assert model.dtype == torch.bfloat16
    assert sorted(awq.quantized_module_names(model)) == LM_LINEARS
    for name in ("model.vision_tower.encoder.layer.0.attention.q_proj", "model.multi_modal_projector.linear_1",
                 "lm_head"):
        assert type(model.get_submodule(name)) is torch.nn.Linear, name
    logits = _logits(model, torch.bfloat16)
    assert logits.shape == reference_logits.shape
    assert (logits - reference_logits).abs().max().item() <= LOGIT_ATOL


@needs_gptqmodel
def test_rotary_frequencies_stay_float32_and_long_positions_match_transformers(awq_dir):
    """Settling the AWQ model's dtype leaves the rotary buffers in float32, as transformers keeps them: cast to
    16 bits their phase drifts with the position. Both loads in float16 (the checkpoint's dtype, so every other
    tensor is the same), over 6,200 text tokens: past position 6,000 the logits are exactly transformers' own."""
    from transformers import AutoModelForImageTextToText

    config = json.loads((awq_dir / "config.json").read_text())
    kwargs = awq.awq_load_kwargs(config, "cpu", torch.float16)
    ours = AutoModelForImageTextToText.from_pretrained(awq_dir, **kwargs).eval()
    awq.settle_dtype(ours, kwargs["dtype"])
    theirs = AutoModelForImageTextToText.from_pretrained(awq_dir, dtype=torch.float16, device_map="cpu").eval()
    rotary = {name: b.dtype for name, b in ours.named_buffers() if "inv_freq" in name}
    assert rotary and set(rotary.values()) == {torch.float32}, rotary
    ids = torch.randint(20, 200, (1, 6200), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mine, reference = ours(input_ids=ids).logits[0, 6000:], theirs(input_ids=ids).logits[0, 6000:]
    assert torch.equal(mine, reference), (mine.float() - reference.float()).abs().max()


@needs_gptqmodel
def test_checkpoint_style_skip_names_are_fixed(awq_dir, tmp_path):
    """Names as the checkpoint spells them would leave the vision tower converted (NaN); the kwargs rename them."""
    bad = tmp_path / "bad-names"
    bad.mkdir()
    for item in awq_dir.iterdir():
        (bad / item.name).symlink_to(item)
    config = json.loads((awq_dir / "config.json").read_text())
    config["quantization_config"]["modules_to_not_convert"] = ["vision_tower", "multi_modal_projector"]
    (bad / "config.json").unlink()
    (bad / "config.json").write_text(json.dumps(config))

    model = _load(bad, config=config)
    assert sorted(awq.quantized_module_names(model)) == LM_LINEARS


# -- engine helpers --------------------------------------------------------------------------------------

def test_awq_detection_and_skip_names():
    native = {"model_type": "internvl", "quantization_config": {"quant_method": "awq", "bits": 4}}
    lmdeploy = {"model_type": "internvl_chat", "llm_config": {"quantization_config": {"quant_method": "awq"}}}
    assert awq.is_awq_checkpoint(native) and awq.is_awq_checkpoint(lmdeploy)
    assert not awq.is_awq_checkpoint({"model_type": "internvl"})
    assert not awq.is_awq_checkpoint({"quantization_config": {"quant_method": "gptq"}})

    assert awq.runtime_module_name("vision_model") == "model.vision_tower"
    assert awq.runtime_module_name("mlp1") == "model.multi_modal_projector"
    assert awq.runtime_module_name("language_model.model.layers.3.mlp") == "model.language_model.layers.3.mlp"
    assert awq.runtime_module_name("language_model.lm_head") == "lm_head"
    assert awq.runtime_module_name("model.vision_tower") == "model.vision_tower"
    assert awq.runtime_module_name("mlp.gate") == "mlp.gate"  # suffix patterns stay as they are

    native["quantization_config"]["modules_to_not_convert"] = ["vision_tower", "language_model.model.layers.0.mlp"]
    fixed = awq.fixed_quantization_config(native)["modules_to_not_convert"]
    assert fixed == [*awq.RUNTIME_SKIPS, "model.language_model.layers.0.mlp"]
    assert native["quantization_config"]["modules_to_not_convert"][0] == "vision_tower"  # input untouched


@needs_gptqmodel
def test_load_kwargs_per_device():
    config = {"model_type": "internvl", "text_config": {"model_type": "qwen2"},
              "quantization_config": {"quant_method": "awq", "bits": 4, "version": "gemm"}}
    cpu = awq.awq_load_kwargs(config, "cpu")
    assert cpu["dtype"] == torch.bfloat16 and cpu["device_map"] == "cpu"
    assert cpu["config"].quantization_config["modules_to_not_convert"] == list(awq.RUNTIME_SKIPS)
    assert awq.awq_load_kwargs(config, "cpu", dtype=torch.float16)["dtype"] == torch.float16
    assert awq.awq_load_kwargs(config, "cuda:0")["dtype"] == torch.float16


def test_unsupported_awq_variants_are_refused():
    remote = {"model_type": "internvl_chat", "quantization_config": {"quant_method": "awq"}}
    with pytest.raises(ModelLoadError, match="native InternVL layout"):
        awq.awq_load_kwargs(remote, "cpu")
    gemv = {"model_type": "internvl", "quantization_config": {"quant_method": "awq", "version": "gemv"}}
    with pytest.raises(ModelLoadError, match="no CPU kernel"):
        awq.awq_load_kwargs(gemv, "cpu")


def test_missing_gptqmodel_says_how_to_install(monkeypatch):
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(ModelLoadError, match="gptqmodel") as info:
        awq.awq_load_kwargs({"model_type": "internvl", "quantization_config": {"quant_method": "awq"}}, "cpu")
    assert 'pip install "internvl-cli[awq]"' in info.value.hint


@needs_gptqmodel
@pytest.mark.parametrize("backend, kernel", [("torch_fused_awq", "TorchFusedAwqLinear"),
                                             ("torch_awq", "AwqTorchLinear")])
def test_the_backend_named_in_the_config_is_the_kernel_that_loads(awq_dir, reference_logits, backend, kernel):
    """gptqmodel's selector is skipped: the quantization config's `backend` decides the kernel class."""
    from transformers import AutoModelForImageTextToText

    config = json.loads((awq_dir / "config.json").read_text())
    kwargs = awq.awq_load_kwargs(config, "cpu", backend=backend)
    assert kwargs["config"].quantization_config["backend"] == backend
    model = AutoModelForImageTextToText.from_pretrained(awq_dir, **kwargs).eval()
    assert {type(model.get_submodule(n)).__name__ for n in awq.quantized_module_names(model)} == {kernel}
    assert (_logits(model, torch.bfloat16) - reference_logits).abs().max().item() <= LOGIT_ATOL


# -- quantization ----------------------------------------------------------------------------------------

def test_quantize_refuses_without_cuda(tmp_path, monkeypatch):
    from internvl_cli.models.quantize import quantize_to_awq

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="CUDA") as info:
        quantize_to_awq(tmp_path / "src", tmp_path / "dst", [tmp_path / "page.png"])
    assert info.value.hint
    with pytest.raises(ModelLoadError, match="CUDA"):
        quantize_to_awq(tmp_path / "src", tmp_path / "dst", [tmp_path / "page.png"], device="cpu")


@needs_gptqmodel
def test_quantize_pipeline_on_cpu_with_a_tiny_model(tmp_path, monkeypatch):
    """The whole gptqmodel path (calibration, AWQ search, packing, save, our fixes) on CPU, then load it back.

    AWQ's clip search needs every quantized layer's output width to be a multiple of 64, so this tiny model
    has 4 KV heads (k/v width 64) rather than tiny_models' 2.
    """
    import tiny_models
    from PIL import Image

    from internvl_cli.models import quantize

    small_config = tiny_models.tiny_config

    def four_kv_heads(tokenizer, **kwargs):
        config = small_config(tokenizer, **kwargs)
        config.text_config.num_key_value_heads = 4
        return config

    monkeypatch.setattr(tiny_models, "tiny_config", four_kv_heads)
    src = tiny_models.build_tiny_native(tmp_path / "src")
    page = tmp_path / "page.png"
    Image.effect_noise((600, 800), 40).convert("RGB").save(page)

    # One tile of one page: float16 matmuls are slow on CPU, and the vision tower runs at full width.
    monkeypatch.chdir(tmp_path)  # gptqmodel writes its per-layer logs below the current folder unless told not to
    monkeypatch.setenv("INTERNVL_CLI_CACHE", str(tmp_path / "cache"))
    dst = quantize._quantize(src, tmp_path / "dst", [page], group_size=32, max_tiles=1,
                             prompt="Read the page.", device="cpu")

    config = json.loads((dst / "config.json").read_text())
    assert awq.is_awq_checkpoint(config)
    block = config["quantization_config"]
    assert block["modules_to_not_convert"] == list(awq.RUNTIME_SKIPS)
    assert (block["bits"], block["group_size"], block["zero_point"], block["version"]) == (4, 32, True, "gemm")
    assert (dst / "preprocessor_config.json").is_file() and (dst / "tokenizer.json").is_file()
    assert (dst / "generation_config.json").read_text() == (src / "generation_config.json").read_text()
    model = _load(dst, config=config)
    assert sorted(awq.quantized_module_names(model)) == LM_LINEARS
    assert not _logits(model, torch.bfloat16).isnan().any()
    assert not (tmp_path / "logs").exists()  # nothing left in the user's folder (the suite's: the repository)
    assert (tmp_path / "cache" / "quantize-logs").is_dir()


def test_quantize_checks_its_arguments(tmp_path):
    from internvl_cli.errors import InputFileError, OutputError, UsageError
    from internvl_cli.models.quantize import _quantize
    from tiny_models import build_tiny_native

    src = build_tiny_native(tmp_path / "src")
    args = dict(group_size=32, max_tiles=2, prompt="x", device="cpu")
    with pytest.raises(UsageError, match="calibration images"):
        _quantize(src, tmp_path / "dst", [], **args)
    with pytest.raises(InputFileError, match="not found"):
        _quantize(src, tmp_path / "dst", [tmp_path / "missing.png"], **args)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputFileError, match="cannot read"):
        _quantize(src, tmp_path / "dst", [tmp_path / "broken.png"], **args)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "old.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        _quantize(src, tmp_path / "dst", [tmp_path / "broken.png"], **args)
    with pytest.raises(UsageError, match="group size"):
        _quantize(src, tmp_path / "dst", [tmp_path / "missing.png"], **{**args, "group_size": 48})
    with pytest.raises(ModelLoadError, match="not the native"):
        (tmp_path / "remote").mkdir()
        (tmp_path / "remote" / "config.json").write_text('{"model_type": "internvl_chat"}')
        _quantize(tmp_path / "remote", tmp_path / "dst", [], **args)


# GPU: tests/test_gpu_cuda.py loads this model on CUDA through each kernel the machine allows.
