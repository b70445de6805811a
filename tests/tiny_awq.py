"""Tiny AWQ (4-bit GEMM-packed) checkpoints of the native InternVL layout, and their dequantized twins, for tests."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tiny_models import build_tiny_native

BITS = 4
MAX_CODE = (1 << BITS) - 1
# AWQ GEMM stores 8 output columns per int32 word, in this interleaved order: nibble i holds column AWQ_ORDER[i].
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
PACK = 32 // BITS

# Every Linear of the language model (attention and MLP), as the checkpoint names them.
LM_LINEAR = re.compile(r"^language_model\.model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")

# What transformers must leave in 16-bit, by the names modules have at run time (not in the checkpoint).
RUNTIME_SKIPS = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def quantize_weight(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit round-to-nearest per (output row, input group), as AWQ's pseudo-quantizer does.

    Returns codes (out, in) int32, zeros (out, in/G) int32 and scales (out, in/G) fp16.
    """
    out_features, in_features = weight.shape
    if in_features % group_size:
        raise ValueError(f"group size {group_size} does not divide in_features {in_features}")
    groups = weight.float().reshape(out_features, in_features // group_size, group_size)
    w_max = groups.amax(dim=-1)
    w_min = groups.amin(dim=-1)
    # Rounding the scale to fp16 first keeps codes consistent with the fp16 scale that is stored.
    scales = ((w_max - w_min).clamp(min=1e-5) / MAX_CODE).half()
    s = scales.float()
    zeros = (-torch.round(w_min / s)).clamp(0, MAX_CODE)
    codes = (torch.round(groups / s[..., None]) + zeros[..., None]).clamp(0, MAX_CODE)
    return codes.reshape(out_features, in_features).int(), zeros.int(), scales


def dequantize(codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """(codes - zero) * scale in fp32: exact, since codes and zeros are small integers and scales are fp16."""
    z = zeros.repeat_interleave(group_size, dim=1).float()
    s = scales.repeat_interleave(group_size, dim=1).float()
    return (codes.float() - z) * s


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """Reinterpret unsigned 32-bit values held in int64 as int32 (two's complement), as the checkpoint stores them."""
    words = words & 0xFFFFFFFF
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_columns(values: torch.Tensor) -> torch.Tensor:
    """Pack an (rows, cols) int tensor of 4-bit codes into (rows, cols/8) int32 words in AWQ's column order."""
    rows, cols = values.shape
    if cols % PACK:
        raise ValueError(f"AWQ GEMM packing needs a multiple of {PACK} columns, got {cols}")
    blocks = values.to(torch.int64).reshape(rows, cols // PACK, PACK)[..., list(AWQ_ORDER)]
    shifts = torch.arange(0, 32, BITS, dtype=torch.int64)
    return _to_int32((blocks << shifts).sum(dim=-1))


def unpack_columns(words: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_columns: (rows, cols/8) int32 -> (rows, cols) int32 codes in natural column order."""
    shifts = torch.arange(0, 32, BITS, dtype=torch.int64)
    nibbles = (words.to(torch.int64)[..., None] >> shifts) & MAX_CODE
    inverse = [AWQ_ORDER.index(i) for i in range(PACK)]
    return nibbles[..., inverse].reshape(words.shape[0], -1).to(torch.int32)


def pack_awq_gemm(codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor) -> dict[str, torch.Tensor]:
    """AWQ GEMM tensors: qweight (in, out/8), qzeros (in/G, out/8) int32, scales (in/G, out) fp16."""
    return {
        "qweight": pack_columns(codes.t().contiguous()),
        "qzeros": pack_columns(zeros.t().contiguous()),
        "scales": scales.t().contiguous().half(),
    }


def unpack_awq_gemm(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor):
    """Back to (codes (out, in), zeros (out, in/G), scales (out, in/G)) from the checkpoint tensors."""
    return unpack_columns(qweight).t().contiguous(), unpack_columns(qzeros).t().contiguous(), scales.t().contiguous()


def _fp16_exact(tensor: torch.Tensor) -> torch.Tensor:
    """Round to fp16 and back, so the AWQ checkpoint (fp16) and the reference (fp32) hold the same values."""
    return tensor.half().float() if tensor.is_floating_point() else tensor


def _rewrite(out_dir: Path, seed: int, group_size: int, quantized: bool) -> Path:
    """Build the tiny fp model in out_dir, then replace each language-model Linear by AWQ tensors or their dequantization."""
    if 64 % group_size or 128 % group_size:
        raise ValueError(f"group size must divide 64 and 128, got {group_size}")
    out_dir = build_tiny_native(Path(out_dir), seed=seed)
    state = {k: _fp16_exact(v) for k, v in load_file(out_dir / "model.safetensors").items()}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if not LM_LINEAR.match(key):
            out[key] = tensor.half() if quantized and tensor.is_floating_point() else tensor
            continue
        codes, zeros, scales = quantize_weight(tensor, group_size)
        prefix = key.removesuffix(".weight")
        if quantized:
            out.update({f"{prefix}.{name}": t for name, t in pack_awq_gemm(codes, zeros, scales).items()})
        else:
            out[key] = dequantize(codes, zeros, scales, group_size)
    save_file(out, out_dir / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out_dir / "config.json").read_text())
    if quantized:
        config["dtype"] = "float16"
        config["quantization_config"] = awq_quantization_config(group_size)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def awq_quantization_config(group_size: int, modules_to_not_convert: list[str] | None = None) -> dict:
    """The config.json block of an AWQ GEMM checkpoint as transformers 5.x reads it."""
    return {
        "quant_method": "awq",
        "bits": BITS,
        "group_size": group_size,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": list(RUNTIME_SKIPS if modules_to_not_convert is None else modules_to_not_convert),
    }


def build_tiny_native_awq(out_dir: Path, seed: int = 0, group_size: int = 32) -> Path:
    """A tiny native InternVL whose language-model Linears are real AWQ GEMM 4-bit tensors (fp16 elsewhere).

    Group size 16 builds too, but gptqmodel's CPU kernel (ATen int4pack) only runs groups of 32 and up.
    """
    return _rewrite(Path(out_dir), seed, group_size, quantized=True)


def build_dequantized_reference(out_dir: Path, seed: int = 0, group_size: int = 32) -> Path:
    """The same model (same seed and group size) with the dequantized weights in plain Linears, no quantization config."""
    return _rewrite(Path(out_dir), seed, group_size, quantized=False)
