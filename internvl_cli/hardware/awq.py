"""Hardware, AWQ loading: what loading an AWQ (4-bit GEMM) InternVL checkpoint through transformers + gptqmodel needs:
the config fixes, the kernel named explicitly, and building a compiled kernel with a note and progress."""
from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError, short_reason

if TYPE_CHECKING:  # heavy imports, only for annotations
    import torch
    from transformers import PretrainedConfig

    from .kernels import KernelChoice

log = logging.getLogger("internvl_cli.engine")

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
# gptqmodel is the `awq` extra (README "Install" says why); the hint names the extra and the bare package.
INSTALL_HINT = f'install AWQ support: pip install "internvl-cli[awq]" (or pip install "{GPTQMODEL_REQUIREMENT}")'
# gptqmodel imports `pcre` (pypcre) unconditionally, and pypcre is a source archive with a required C extension:
# no wheel exists for CPython 3.10-3.13, so installing the extra compiles it.
PCRE_BUILD_NEEDS = "a C compiler, Python.h and libpcre2-dev"
PCRE_APT_LINE = "apt install build-essential python3-dev libpcre2-dev"
PCRE_HINT = f"{PCRE_APT_LINE}, then pip install --force-reinstall pypcre"


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


def fixed_quantization_config(config: dict, backend: str | None = None) -> dict:
    """A copy of the AWQ block whose `modules_to_not_convert` uses runtime names and always keeps vision in 16-bit,
    and whose `backend` names the kernel (transformers hands it to gptqmodel's `normalize_backend`, and gptqmodel
    then skips its own selector, which can download CUTLASS or pick a kernel that cannot be compiled here)."""
    block = copy.deepcopy(quantization_config_of(config) or {})
    names = [runtime_module_name(n) for n in block.get("modules_to_not_convert") or []]
    block["modules_to_not_convert"] = list(dict.fromkeys([*RUNTIME_SKIPS, *names]))
    if backend is not None:
        block["backend"] = backend
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
    from ..quiet import quiet_imported_libraries, quiet_logbar, quiet_third_party

    quiet_third_party()  # its banner and notices come at import time
    quiet_logbar()
    try:
        with gptqmodel_output_to_stderr():
            import gptqmodel  # noqa: F401
    except Exception as exc:  # a broken install raises anything from ImportError to RuntimeError
        missing = missing_module(exc)
        if missing in ("pcre", "pcre_ext_c"):
            raise ModelLoadError(f"gptqmodel could not be imported: No module named '{missing}' (pypcre needs "
                                 f"{PCRE_BUILD_NEEDS} to build)", hint=PCRE_HINT) from None
        raise ModelLoadError(f"gptqmodel {version} is installed but does not import ({short_reason(exc)})",
                             hint=INSTALL_HINT) from None
    quiet_imported_libraries()
    return version


def missing_module(exc: BaseException) -> str | None:
    """The top-level module whose absence made an import fail (a ModuleNotFoundError anywhere in the chain)."""
    while exc is not None:
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            return exc.name.split(".")[0]
        exc = exc.__cause__ or exc.__context__
    return None


def awq_install_line(gptqmodel: str | None, pcre: str | None, cc: bool, python_headers: bool,
                     pcre2_headers: bool) -> str:
    """What `doctor` says about the `awq` extra: installed and importable, or what `pip install ".[awq]"` needs
    here to build pypcre (versions: None when not installed; the rest: found on this machine)."""
    if gptqmodel and pcre:
        return f"ok: gptqmodel {gptqmodel}, pypcre {pcre}"
    needs = {"a C compiler": cc, "Python.h": python_headers, "libpcre2-dev (pcre2.h)": pcre2_headers}
    missing = [name for name, found in needs.items() if not found]
    state = (f"gptqmodel {gptqmodel} is installed but pypcre (its pcre module) is not" if gptqmodel else
             "not installed")
    build = (f"pip install \".[awq]\" builds pypcre from source: needs {', '.join(needs)}; "
             + (f"missing here: {', '.join(missing)} ({PCRE_APT_LINE})" if missing else "all found here"))
    return f"{state}; {build}"


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


def awq_load_kwargs(config: dict, device: str, dtype: Any = None, backend: str | None = None) -> dict:
    """Keyword arguments for `AutoModelForImageTextToText.from_pretrained` of an AWQ checkpoint on `device`.

    Returns dtype, device_map (the AWQ kernel is chosen for the device_map's device, so it must be given
    rather than moving the model afterwards) and a config whose quantization block names the 16-bit modules
    by runtime name (a `quantization_config=` argument cannot change them: transformers keeps the checkpoint's)
    and, when given, the kernel's `backend`.
    """
    check_awq_config(config, device)
    require_gptqmodel()
    return {
        "dtype": awq_dtype(device, dtype),
        "device_map": device,
        "config": pretrained_config(config, backend),
    }


def settle_dtype(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Puts the 16-bit part of a loaded AWQ model (vision tower, projector, embeddings, norms, lm_head) in `dtype`.

    transformers before 5.20 leaves an AWQ checkpoint's unquantized tensors in the dtype they were saved in
    (float16 for LMDeploy's checkpoints) whatever `dtype` asked for; later versions cast them. Quantized layers
    keep the tensors gptqmodel prepared for its kernel. Buffers the model computes itself rather than loads
    (non-persistent ones: the rotary `inv_freq` / `original_inv_freq`) keep the dtype transformers gave them:
    it keeps those in float32 on purpose, and in 16 bits a rotary phase is off by radians 7,000 tokens in.
    """
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    for module in model.modules():
        if isinstance(module, BaseQuantLinear):
            continue
        computed = module._non_persistent_buffers_set
        loaded_buffers = [(name, b) for name, b in module.named_buffers(recurse=False) if name not in computed]
        for name, tensor in list(module.named_parameters(recurse=False)) + loaded_buffers:
            if tensor.is_floating_point() and tensor.dtype != dtype:
                tensor.data = tensor.data.to(dtype)


def pretrained_config(config: dict, backend: str | None = None) -> PretrainedConfig:
    """A transformers config object built from config.json's dict, with the AWQ block fixed (see RUNTIME_SKIPS)."""
    from transformers import AutoConfig

    data = copy.deepcopy(config)
    model_type = data.pop("model_type")
    for holder in (data, data.get("text_config") or {}, data.get("llm_config") or {}):
        holder.pop("quantization_config", None)
    data["quantization_config"] = fixed_quantization_config(config, backend)
    return AutoConfig.for_model(model_type, **data)


# ---------------------------------------------------------------------------------------------- kernels


class KernelBuildError(ModelLoadError):
    """A compiled AWQ kernel failed to build (toolchain, headers, a download it needed)."""


# How often a long build says it is still at work, in seconds.
BUILD_HEARTBEAT = 30.0


def build_kernel(choice: KernelChoice, *, heartbeat: float = BUILD_HEARTBEAT,
                 compile_extension: Callable[[str], None] | None = None) -> None:
    """Compile (or load from gptqmodel's cache) the torch.ops extension `choice` needs, before the model loads,
    so that a failure is ours to handle. Says so in one line, then every `heartbeat` seconds, then the outcome.

    gptqmodel caches builds under ~/.cache/gptqmodel/torch_extensions (GPTQMODEL_TORCH_EXTENSIONS_DIR),
    keyed by torch, CUDA, GPU architecture and source; a second run only loads the library.
    """
    from .machine import kernel_cache_dir, ninja_on_path

    extension = choice.extension
    if extension is None:
        return
    name = choice.kernel.name
    if not choice.compile:
        log.debug("loading the cached %s kernel", name)
    else:
        about = f"about {choice.kernel.build_seconds // 60} min, " if choice.kernel.build_seconds >= 90 else ""
        log.info("compiling the %s AWQ kernel for this GPU (once: %scached in %s) ...", name, about,
                 kernel_cache_dir())
        if choice.note:
            log.info("%s", choice.note)
    ninja_on_path()
    started = time.monotonic()
    done = threading.Event()

    def still_compiling() -> None:
        while not done.wait(heartbeat):
            log.info("still compiling %s (%.0f s)", name, time.monotonic() - started)

    ticker = threading.Thread(target=still_compiling, name="kernel-build-progress", daemon=True)
    if choice.compile:
        ticker.start()
    try:
        with gptqmodel_output_to_stderr():
            (compile_extension or _gptqmodel_build)(extension)
    except Exception as exc:
        log.debug("building %s failed: %s", extension, exc)
        raise KernelBuildError(f"the {name} AWQ kernel did not build ({short_reason(exc)})",
                               hint="`internvl -v doctor --warm` shows the compiler's output") from exc
    finally:
        done.set()
        if ticker.is_alive():
            ticker.join()
    if choice.compile:
        log.info("%s kernel ready (%.0f s)", name, time.monotonic() - started)


def _gptqmodel_build(extension: str) -> None:
    """gptqmodel's public JIT API: builds once, reuses its cache afterwards, raises RuntimeError on failure."""
    require_gptqmodel()
    from gptqmodel import extension as api

    results = api.load(extension)
    if not results.get(extension):
        raise RuntimeError(api.error(extension) or f"{extension} did not load")


def load_with_kernel(choice: KernelChoice, load: Callable[[KernelChoice], Any]) -> tuple[Any, KernelChoice]:
    """Build the chosen kernel and load the model with it; where a build or a load with a compiled kernel fails
    and a compiler-free kernel exists (auto choices carry one), say so and load with that instead."""
    from .machine import release_gpu_memory

    fallback = choice.fallback
    try:
        if choice.extension is not None:
            build_kernel(choice)
        return load(choice), choice
    except Exception as exc:
        if fallback is None:
            raise
        reason = exc.message if isinstance(exc, ModelLoadError) else short_reason(exc)
    # Out of the handler, whose traceback would keep the first attempt's half-loaded weights alive: free them
    # before the fallback loads beside them.
    release_gpu_memory(choice.device)
    log.warning("%s; using the %s kernel instead (%s)", reason, fallback.kernel.name, fallback.reason)
    return load(fallback), fallback


def quantized_module_names(model: torch.nn.Module) -> list[str]:
    """Names of the modules that gptqmodel's AWQ layers replaced (for checks and `internvl doctor`)."""
    try:
        from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    except ImportError:
        return []
    return [name for name, module in model.named_modules() if isinstance(module, BaseQuantLinear)]
