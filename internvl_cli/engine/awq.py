"""Step 3, engines: what loading an AWQ (4-bit GEMM) InternVL checkpoint through transformers + gptqmodel needs."""
from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import shutil
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError, short_reason

if TYPE_CHECKING:  # heavy imports, only for annotations
    import torch
    from transformers import PretrainedConfig

# The modules that stay 16-bit, named as they are at run time in transformers 5.x. transformers matches
# `modules_to_not_convert` against these runtime names, so checkpoint-style names ("vision_tower", "mlp1")
# match nothing, the vision tower gets AWQ layers with no weights to fill them, and the output is NaN.
RUNTIME_SKIPS: tuple[str, ...] = ("model.vision_tower", "model.multi_modal_projector", "lm_head")

# Checkpoint-style prefixes (native -hf files and the remote-code layout) and their runtime names.
_RUNTIME_PREFIXES: tuple[tuple[str, str], ...] = (
    ("language_model.model", "model.language_model"),
    ("language_model.lm_head", "lm_head"),
    ("vision_tower", "model.vision_tower"),
    ("multi_modal_projector", "model.multi_modal_projector"),
    ("vision_model", "model.vision_tower"),
    ("mlp1", "model.multi_modal_projector"),
)

# 7.7 needs torch >= 2.14.1; an unpinned install could upgrade torch, so the range is closed.
GPTQMODEL_REQUIREMENT = "gptqmodel>=7.6,<7.7"
INSTALL_HINT = (
    f'it is a dependency of internvl-cli: pip install "{GPTQMODEL_REQUIREMENT}", or without its heavy extras: '
    f'pip install pypcre logbar device-smi tokenicer defuser threadpoolctl accelerate requests && '
    f'pip install --no-deps "{GPTQMODEL_REQUIREMENT}"'
)


def quantization_config_of(config: dict) -> dict | None:
    """The checkpoint's quantization block: top level, or nested in the text config (LMDeploy's `llm_config`)."""
    for holder in (config, config.get("text_config") or {}, config.get("llm_config") or {}):
        block = holder.get("quantization_config")
        if isinstance(block, dict) and block:
            return block
    return None


def is_awq_checkpoint(config: dict) -> bool:
    """True when config.json (as a dict) declares AWQ quantization anywhere transformers or LMDeploy put it."""
    block = quantization_config_of(config) or {}
    return str(block.get("quant_method", "")).lower() == "awq"


def runtime_module_name(name: str) -> str:
    """Map a checkpoint-style module name to the name transformers gives the module at run time."""
    for prefix, runtime in _RUNTIME_PREFIXES:
        if name == prefix or name.startswith(prefix + "."):
            return runtime + name[len(prefix):]
    return name


def fixed_quantization_config(config: dict) -> dict:
    """A copy of the AWQ block whose `modules_to_not_convert` uses runtime names and always keeps vision in 16-bit."""
    block = copy.deepcopy(quantization_config_of(config) or {})
    names = [runtime_module_name(n) for n in block.get("modules_to_not_convert") or []]
    block["modules_to_not_convert"] = list(dict.fromkeys([*RUNTIME_SKIPS, *names]))
    return block


def check_awq_config(config: dict, device: str) -> None:
    """Refuse AWQ variants that no loader here can run, with the reason, before transformers fails obscurely."""
    if config.get("model_type") != "internvl":
        raise ModelLoadError(
            f"AWQ checkpoint of model_type '{config.get('model_type')}': only the native InternVL layout loads here",
            hint="the OpenGVLab *-AWQ repositories use the remote-code layout (vLLM or LMDeploy load them); "
            "quantize a native -hf checkpoint with `internvl quantize` instead",
        )
    block = quantization_config_of(config) or {}
    if int(block.get("bits", 4)) != 4:
        raise ModelLoadError(f"AWQ with {block.get('bits')} bits is not supported (only 4-bit)")
    version = str(block.get("version", block.get("format", "gemm"))).lower()
    if version != "gemm" and not device.startswith("cuda"):
        raise ModelLoadError(f"AWQ '{version}' packing has no CPU kernel", hint="use a GPU, or a GEMM-packed checkpoint")


def require_gptqmodel() -> str:
    """gptqmodel's version, or a ModelLoadError saying how to install it (transformers' AWQ path needs it)."""
    try:
        version = importlib.metadata.version("gptqmodel")
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError("AWQ checkpoints need the gptqmodel package, which is not installed",
                             hint=INSTALL_HINT) from None
    try:
        with gptqmodel_output_to_stderr():
            import gptqmodel  # noqa: F401
    except Exception as exc:  # a broken install raises anything from ImportError to RuntimeError
        raise ModelLoadError(f"gptqmodel {version} is installed but does not import ({short_reason(exc)})",
                             hint=INSTALL_HINT) from None
    _quiet_gptqmodel_logs()
    return version


def _quiet_gptqmodel_logs() -> None:
    """gptqmodel logs every kernel choice at INFO through LogBar (a logging.Logger); keep warnings only."""
    import logging

    try:
        from logbar import LogBar

        LogBar.shared().setLevel(logging.WARNING)
    except Exception:  # cosmetic: a LogBar without this API must not stop a model from loading
        pass


@contextlib.contextmanager
def gptqmodel_output_to_stderr() -> Iterator[None]:
    """gptqmodel logs its banner and kernel choices to stdout, where our results go: send them to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def awq_dtype(device: str, requested: Any = None) -> torch.dtype:
    """16-bit compute dtype for AWQ: float16 on CUDA, bfloat16 on CPU unless float16 was asked for."""
    import torch

    if device.startswith("cuda"):
        # The CUDA AWQ kernels are float16 kernels; transformers itself casts bfloat16 to float16 there.
        return torch.float16
    # The CPU kernel (ATen int4pack) computes in bfloat16 whatever it is given; float32 only adds casts.
    return torch.float16 if requested in (torch.float16, "float16", "fp16") else torch.bfloat16


def awq_load_kwargs(config: dict, device: str, dtype: Any = None) -> dict:
    """Keyword arguments for `AutoModelForImageTextToText.from_pretrained` of an AWQ checkpoint on `device`.

    Returns dtype, device_map (the AWQ kernel is chosen for the device_map's device, so it must be given
    rather than moving the model afterwards) and a config whose quantization block names the 16-bit modules
    by runtime name (a `quantization_config=` argument cannot change them: transformers keeps the checkpoint's).
    """
    check_awq_config(config, device)
    require_gptqmodel()
    return {
        "dtype": awq_dtype(device, dtype),
        "device_map": device,
        "config": pretrained_config(config),
    }


def pretrained_config(config: dict) -> PretrainedConfig:
    """A transformers config object built from config.json's dict, with the AWQ block fixed (see RUNTIME_SKIPS)."""
    from transformers import AutoConfig

    data = copy.deepcopy(config)
    model_type = data.pop("model_type")
    for holder in (data, data.get("text_config") or {}, data.get("llm_config") or {}):
        holder.pop("quantization_config", None)
    data["quantization_config"] = fixed_quantization_config(config)
    return AutoConfig.for_model(model_type, **data)


def awq_kernel_status(device: str | None = None, *, allow_compile: bool = False) -> tuple[bool, str]:
    """(usable, one line): whether gptqmodel imports and which AWQ kernel a load on `device` would pick.

    On CUDA, picking a kernel may JIT-compile gptqmodel's CUDA extensions (needs nvcc >= 12.8 and ninja,
    minutes the first time, cached afterwards), so by default only the prerequisites are reported there.
    """
    try:
        version = require_gptqmodel()
    except ModelLoadError as exc:
        return False, exc.one_line()
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        return False, f"gptqmodel {version}; torch sees no CUDA GPU"
    if device.startswith("cuda") and not allow_compile:
        return True, f"gptqmodel {version}; CUDA: {_cuda_toolchain_line()}"
    try:
        kernel = _select_kernel(device)
    except Exception as exc:
        return False, f"gptqmodel {version} imports but has no AWQ kernel for {device} ({short_reason(exc)})"
    return True, f"gptqmodel {version}; AWQ GEMM kernel on {device}: {kernel}"


def _select_kernel(device: str) -> str:
    """Ask gptqmodel the same question transformers asks when it replaces Linear layers."""
    with gptqmodel_output_to_stderr():
        from gptqmodel.quantization import METHOD
        from gptqmodel.utils.importer import hf_select_quant_linear_v2

        cls = hf_select_quant_linear_v2(
            bits=4, group_size=128, desc_act=False, sym=False, format="gemm", quant_method=METHOD.AWQ,
            zero_point=True, backend="auto", device_map={"": device}, pack=False,
        )
    return cls.__name__


def _cuda_toolchain_line() -> str:
    """What decides the CUDA kernel: gptqmodel JIT-compiles its fast ones (Marlin, AWQ GEMM) with nvcc + ninja."""
    nvcc = shutil.which("nvcc")
    ninja = shutil.which("ninja")
    if nvcc and ninja:
        return f"nvcc and ninja found: the compiled kernels (Marlin) build on first load ({nvcc})"
    missing = " and ".join(n for n, p in (("nvcc", nvcc), ("ninja", ninja)) if not p)
    return f"{missing} not found: only kernels that need no compiler (Triton, torch) are available, slower"


def quantized_module_names(model: torch.nn.Module) -> list[str]:
    """Names of the modules that gptqmodel's AWQ layers replaced (for checks and `internvl doctor`)."""
    try:
        from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    except ImportError:
        return []
    return [name for name, module in model.named_modules() if isinstance(module, BaseQuantLinear)]
