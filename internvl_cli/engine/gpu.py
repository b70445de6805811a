"""Step 3, engines: the transformers engine's choices as pure functions of what the machine reports (device, dtype,
AWQ kernel, attention, batch limits), so every case is testable without a GPU. engine/machine.py gathers the facts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import DeviceError, ModelLoadError, UsageError

# ---------------------------------------------------------------------------------------------- the facts


@dataclass(frozen=True)
class Gpu:
    """One CUDA device as torch sees it."""

    index: int
    name: str
    capability: tuple[int, int]
    total_bytes: int
    free_bytes: int | None = None


@dataclass(frozen=True)
class Driver:
    """What the operating system shows of an NVIDIA driver, whether or not torch can use it."""

    version: str | None = None  # kernel module version, /proc/driver/nvidia/version (or nvidia-smi)
    cuda_version: str | None = None  # the newest CUDA this driver runs, from nvidia-smi's header
    gpus: tuple[str, ...] = ()  # GPU models from /proc/driver/nvidia/gpus/*/information or nvidia-smi
    device_nodes: tuple[str, ...] = ()  # /dev/nvidia0, /dev/nvidia1, ...

    @property
    def present(self) -> bool:
        return bool(self.version or self.gpus)


@dataclass(frozen=True)
class Toolchain:
    """What compiling gptqmodel's CUDA kernels (torch cpp_extension) and Triton's launcher needs."""

    nvcc: str | None = None
    nvcc_version: tuple[int, int] | None = None
    ninja: str | None = None
    cxx: str | None = None  # host C++ compiler for cpp_extension (CXX, c++, g++, clang++)
    cc: str | None = None  # host C compiler Triton builds its launcher with (CC, cc, gcc, clang)
    python_headers: bool = True  # Python.h, which Triton's launcher includes


@dataclass(frozen=True)
class Machine:
    """Everything the engine's choices depend on; engine/machine.py fills it in, tests build it by hand."""

    torch_version: str = "2.13.0"
    torch_cuda: str | None = None  # torch.version.cuda; None for a CPU-only build
    cuda_error: str | None = None  # what torch said when CUDA did not initialise
    gpus: tuple[Gpu, ...] = ()  # the CUDA devices torch can use
    driver: Driver = field(default_factory=Driver)
    toolchain: Toolchain = field(default_factory=Toolchain)
    triton: str | None = None  # Triton's version, when installed (CUDA torch wheels bring it)
    cpu_int4pack: bool = True  # torch has the ATen int4pack CPU matmul (torch >= 2.5)
    cached_kernels: frozenset[str] = frozenset()  # gptqmodel JIT extensions already built for this torch/GPU
    memory_bytes: int | None = None  # system RAM
    installed: frozenset[str] = frozenset()  # optional accelerators found: "flash_attn"


# ---------------------------------------------------------------------------------------------- device

# The oldest Linux driver each CUDA major version runs on (NVIDIA's CUDA compatibility tables; minor-version
# compatibility lets any 12.x or 13.x runtime use the first driver of its major).
MIN_DRIVER_FOR_CUDA = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# A model bigger than this on the CPU takes minutes per page: `--device auto` warns before starting it there.
CPU_COMFORT_BYTES = 3 * 2**30


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda", "cuda:1" or "cpu"
    reason: str
    warning: str | None = None


def choose_device(machine: Machine, requested: str = "auto", model_bytes: int | None = None) -> DeviceChoice:
    """Where a model runs. A GPU the OS shows but torch cannot use stops the run with the reason, unless the
    CPU was asked for; a large model that lands on the CPU through `auto` comes with a warning."""
    if requested == "cpu":
        return DeviceChoice("cpu", "--device cpu")
    if requested.startswith("cuda"):
        index = _cuda_index(requested)
        if not machine.gpus:
            why, hint = why_no_cuda(machine)
            raise DeviceError(f"--device {requested}: {why}", hint=hint)
        if index >= len(machine.gpus):
            raise DeviceError(f"--device {requested}: torch sees {len(machine.gpus)} CUDA device(s), "
                              f"numbered 0 to {len(machine.gpus) - 1}", hint="see `internvl doctor`")
        return DeviceChoice(requested, _describe_gpu(machine.gpus[index]))
    if requested != "auto":
        raise UsageError(f"--device {requested}: use auto, cpu, cuda or cuda:N")
    if machine.gpus:
        return DeviceChoice("cuda", _describe_gpu(machine.gpus[0]))
    if machine.driver.present:
        why, hint = why_no_cuda(machine)
        raise DeviceError(f"an NVIDIA GPU is present but torch cannot use it: {why}",
                          hint=f"{hint}; or run on the CPU on purpose with --device cpu")
    return DeviceChoice("cpu", "no NVIDIA GPU on this machine", cpu_warning(machine, model_bytes))


def _cuda_index(device: str) -> int:
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not match:
        raise UsageError(f"--device {device}: not a CUDA device name (use cuda or cuda:N)")
    return int(match.group(1) or 0)


def capability_of(machine: Machine, device: str) -> tuple[int, int] | None:
    """The compute capability of the GPU `device` names, or None for the CPU."""
    if not device.startswith("cuda") or not machine.gpus:
        return None
    index = _cuda_index(device)
    return machine.gpus[index].capability if index < len(machine.gpus) else None


def _describe_gpu(gpu: Gpu) -> str:
    return f"{gpu.name}, compute capability {gpu.capability[0]}.{gpu.capability[1]}, {gpu.total_bytes / 2**30:.0f} GiB"


def cpu_warning(machine: Machine, model_bytes: int | None) -> str | None:
    """The warning for a model that `auto` is about to start on the CPU, or None when it is small enough."""
    if not model_bytes or model_bytes <= CPU_COMFORT_BYTES:
        return None
    size = f"{model_bytes / 2**30:.1f} GB"
    if machine.memory_bytes and model_bytes > 0.8 * machine.memory_bytes:
        return (f"no GPU: starting a {size} model on the CPU, which has {machine.memory_bytes / 2**30:.0f} GB of "
                f"memory; it may not fit (use a GPU, or a smaller preset such as internvl3-1b-awq)")
    return (f"no GPU: starting a {size} model on the CPU; expect minutes per page (use a GPU or a smaller "
            f"preset such as internvl3-1b-awq; --device cpu says you mean it)")


def why_no_cuda(machine: Machine) -> tuple[str, str]:
    """(reason, hint): why torch has no usable CUDA device, with the versions involved."""
    driver = machine.driver
    if machine.torch_cuda is None:
        found = f"NVIDIA driver {driver.version} found, but " if driver.version else ""
        return (f"{found}this torch ({machine.torch_version}) is a CPU-only build",
                "install a CUDA build of torch, see https://pytorch.org/get-started/locally/")
    if not driver.present:
        return ("no NVIDIA driver is loaded (/proc/driver/nvidia/version is missing)",
                "install the NVIDIA driver; in a container, pass the GPU in (docker run --gpus all)")
    needed = MIN_DRIVER_FOR_CUDA.get(_major(machine.torch_cuda))
    have = _version_tuple(driver.version)
    supports = f" (runs CUDA up to {driver.cuda_version})" if driver.cuda_version else ""
    too_old = (have is not None and needed is not None and have < _version_tuple(needed)) or (
        driver.cuda_version is not None and _major(driver.cuda_version) < _major(machine.torch_cuda))
    if too_old:
        need = f"; needs driver >= {needed}" if needed else ""
        older = _torch_for_driver(driver)
        return (f"NVIDIA driver {driver.version or '?'}{supports} is too old for this torch "
                f"({machine.torch_version}, built for CUDA {machine.torch_cuda}{need})",
                f"update the NVIDIA driver, or install a torch built for {older}")
    if driver.version and not driver.device_nodes:
        return (f"NVIDIA driver {driver.version} is loaded but no /dev/nvidia* device nodes exist",
                "in a container, pass the GPU in (docker run --gpus all); check `nvidia-smi`")
    detail = f" ({machine.cuda_error})" if machine.cuda_error else ""
    return (f"torch (CUDA {machine.torch_cuda}) sees no usable device with NVIDIA driver {driver.version or '?'}"
            f"{detail}", "check `nvidia-smi` and CUDA_VISIBLE_DEVICES")


def _torch_for_driver(driver: Driver) -> str:
    """Which torch build an old driver can still run, as advice."""
    major = _major(driver.cuda_version) if driver.cuda_version else None
    if major is None:
        have = _version_tuple(driver.version)
        major = max((m for m, need in MIN_DRIVER_FOR_CUDA.items() if have and have >= _version_tuple(need)),
                    default=None)
    if major == 12:
        return "CUDA 12: pip install torch --index-url https://download.pytorch.org/whl/cu126"
    return f"CUDA {major}.x" if major else "an older CUDA (see https://pytorch.org/get-started/previous-versions/)"


def _major(version: str | None) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    parts = re.findall(r"\d+", version)
    return tuple(int(p) for p in parts) if parts else None


# ---------------------------------------------------------------------------------------------- dtype

def choose_dtype(requested: str, device: str, capability: tuple[int, int] | None, quantized: bool) -> str:
    """The compute dtype's name. AWQ runs float16 on CUDA (its kernels' dtype; transformers casts bfloat16 there)
    and bfloat16 on the CPU (ATen int4pack); unquantized models get bfloat16 on GPUs that have it (sm80+),
    float16 on older ones, and exact float32 on the CPU."""
    names = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
    requested = names.get(requested, requested)
    cuda = device.startswith("cuda")
    if quantized:
        if cuda:
            return "float16"
        return "float16" if requested == "float16" else "bfloat16"
    if requested != "auto":
        return requested
    if cuda:
        return "bfloat16" if capability is None or capability >= (8, 0) else "float16"
    return "float32"


# ---------------------------------------------------------------------------------------------- AWQ kernel


@dataclass(frozen=True)
class Kernel:
    """One of gptqmodel's AWQ GEMM kernels, as we name it for users."""

    name: str
    backend: str  # the quantization config's `backend` (transformers' AwqBackend; gptqmodel's normalize_backend)
    label: str  # gptqmodel's class, shown by `doctor`
    cuda: bool
    extension: str | None = None  # the gptqmodel torch.ops JIT extension it needs built (fp16 variant)
    build_seconds: int = 0  # gptqmodel's recorded cold build time
    min_capability: tuple[int, int] = (0, 0)


KERNELS: dict[str, Kernel] = {k.name: k for k in (
    Kernel("marlin", "marlin", "AwqMarlinLinear", True, "marlin_fp16", 120, (8, 0)),
    Kernel("machete", "machete", "AwqMacheteLinear", True, "machete", 0, (9, 0)),
    Kernel("exllamav2", "exllama_v2", "AwqExllamaV2Linear", True, "exllamav2_awq", 35),
    Kernel("gemm", "gemm", "AwqGEMMLinear", True, "awq", 60, (7, 5)),
    Kernel("triton", "gemm_triton", "AwqGEMMTritonLinear", True, None, 0, (7, 5)),
    Kernel("torch", "torch_awq", "AwqTorchLinear", False),
    Kernel("cpu-int4", "torch_fused_awq", "TorchFusedAwqLinear", False),
)}
KERNEL_NAMES = ("auto", *KERNELS)
# The compiled kernels `auto` considers, best first. Machete is Hopper-only and its first build downloads
# CUTLASS from GitHub: it is used only when asked for by name.
_COMPILED_ORDER = ("marlin", "exllamav2", "gemm")


@dataclass(frozen=True)
class KernelChoice:
    kernel: Kernel
    device: str
    reason: str
    dtype: str = "float16"
    compile: bool = False  # its extension must be built before loading (minutes, once)
    fallback: KernelChoice | None = None  # the compiler-free kernel to use if that build fails
    note: str | None = None  # something the user should know (a download, a slower kernel)

    @property
    def extension(self) -> str | None:
        return extension_for(self.kernel, self.dtype)

    def describe(self) -> str:
        state = " (compiled on first load, then cached)" if self.compile else ""
        return f"{self.kernel.name} ({self.kernel.label}){state}: {self.reason}"


def extension_for(kernel: Kernel, dtype: str) -> str | None:
    if kernel.extension == "marlin_fp16" and dtype == "bfloat16":
        return "marlin_bf16"
    return kernel.extension


def toolchain_problem(machine: Machine) -> str | None:
    """Why gptqmodel's CUDA kernels cannot be compiled here (torch cpp_extension + nvcc), or None when they can."""
    tools = machine.toolchain
    if machine.torch_cuda is None:
        return "this torch is a CPU-only build"
    if not tools.nvcc:
        return "nvcc (the CUDA toolkit) is not installed"
    if tools.nvcc_version is None:
        return f"cannot read the version of {tools.nvcc}"
    if tools.nvcc_version[0] != _major(machine.torch_cuda):
        have = ".".join(map(str, tools.nvcc_version))
        return f"nvcc {have} does not match torch's CUDA {machine.torch_cuda} (the major versions must agree)"
    if not tools.ninja:
        return "ninja is not installed"
    if not tools.cxx:
        return "no C++ compiler (c++, g++ or clang++) is installed"
    return None


def triton_problem(machine: Machine, gpu: Gpu | None, dtype: str) -> str | None:
    """Why gptqmodel's Triton AWQ kernel cannot run here, or None. It needs no nvcc, but Triton builds a small
    launcher with the host C compiler, against Python's headers."""
    if not machine.triton:
        return "Triton is not installed"
    if dtype != "float16":
        return "the Triton AWQ kernel computes in float16 only"
    if gpu is not None and gpu.capability < (7, 5):
        return f"Triton needs compute capability 7.5 or newer (this GPU: {gpu.capability[0]}.{gpu.capability[1]})"
    if not machine.toolchain.cc:
        return "Triton needs a C compiler (cc, gcc or clang) for its launcher and none is installed"
    if not machine.toolchain.python_headers:
        return "Triton needs Python's C headers for its launcher (Python.h; e.g. apt install python3-dev)"
    return None


def choose_awq_kernel(machine: Machine, device: str, dtype: str = "float16", forced: str = "auto") -> KernelChoice:
    """The AWQ kernel a load on `device` uses, passed to gptqmodel explicitly so that its own selector (which
    may download CUTLASS, or pick Marlin and then fail to compile it) never runs.

    `auto` prefers a compiled kernel when one is cached or the toolchain can build it (with a compiler-free
    fallback should the build fail), then Triton, then the plain torch kernel; `forced` names one, and a
    kernel this machine cannot run is refused with the reason before anything loads.
    """
    if forced not in KERNEL_NAMES:
        raise UsageError(f"--awq-kernel: unknown AWQ kernel '{forced}' (use one of: {', '.join(KERNEL_NAMES)})")
    if not device.startswith("cuda"):
        return _cpu_kernel(machine, dtype, forced)
    gpu = machine.gpus[_cuda_index(device)] if machine.gpus else None
    if forced != "auto":
        return _forced_cuda_kernel(machine, gpu, device, dtype, KERNELS[forced])
    free = _compiler_free_kernel(machine, gpu, device, dtype)
    problem = toolchain_problem(machine)
    for name in _COMPILED_ORDER:
        kernel = KERNELS[name]
        if gpu is not None and gpu.capability < kernel.min_capability:
            continue
        cached = extension_for(kernel, dtype) in machine.cached_kernels
        if cached:
            return KernelChoice(kernel, device, f"{_why_compiled(name, gpu)}; its build for this GPU is cached",
                                dtype=dtype, fallback=free)
        if problem is None:
            return KernelChoice(kernel, device, f"{_why_compiled(name, gpu)}; nvcc "
                                f"{'.'.join(map(str, machine.toolchain.nvcc_version or ()))} builds it once "
                                f"(about {_minutes(kernel.build_seconds)})", compile=True, fallback=free, dtype=dtype)
    return KernelChoice(free.kernel, device, f"{free.reason}; no compiled kernel: {problem}",
                        dtype=dtype, note=free.note)


def _why_compiled(name: str, gpu: Gpu | None) -> str:
    cap = f" (this GPU: {gpu.capability[0]}.{gpu.capability[1]})" if gpu else ""
    return {
        "marlin": f"the fastest AWQ kernel on compute capability 8.0+{cap}",
        "exllamav2": f"the fastest compiled AWQ kernel below compute capability 8.0{cap}",
        "gemm": f"AWQ's own CUDA GEMM kernel{cap}",
    }[name]


def _minutes(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds >= 90 else f"{seconds} s"


def _compiler_free_kernel(machine: Machine, gpu: Gpu | None, device: str, dtype: str) -> KernelChoice:
    problem = triton_problem(machine, gpu, dtype)
    if problem is None:
        return KernelChoice(KERNELS["triton"], device, "Triton's AWQ GEMM needs no nvcc", dtype=dtype)
    return KernelChoice(KERNELS["torch"], device, f"the plain torch kernel (dequantizes on the fly) needs nothing "
                        f"compiled; Triton unavailable: {problem}", dtype=dtype,
                        note="the torch AWQ kernel is several times slower than Marlin or Triton")


def _cpu_kernel(machine: Machine, dtype: str, forced: str) -> KernelChoice:
    if forced != "auto" and KERNELS[forced].cuda:
        raise ModelLoadError(f"--awq-kernel {forced} runs on CUDA GPUs only",
                             hint="on the CPU use cpu-int4, torch or auto")
    if forced == "torch":
        return KernelChoice(KERNELS["torch"], "cpu", "asked for with --awq-kernel torch", dtype=dtype)
    if not machine.cpu_int4pack:
        if forced == "cpu-int4":
            raise ModelLoadError(f"--awq-kernel cpu-int4: torch {machine.torch_version} lacks the ATen int4pack "
                                 f"CPU matmul", hint="use torch >= 2.5, or --awq-kernel torch")
        return KernelChoice(KERNELS["torch"], "cpu", f"torch {machine.torch_version} has no ATen int4pack CPU "
                            f"matmul; the plain torch kernel needs nothing compiled", dtype=dtype)
    return KernelChoice(KERNELS["cpu-int4"], "cpu", "torch's ATen int4pack matmul on the CPU; nothing to compile",
                        dtype=dtype)


def _forced_cuda_kernel(machine: Machine, gpu: Gpu | None, device: str, dtype: str, kernel: Kernel) -> KernelChoice:
    flag = f"--awq-kernel {kernel.name}"
    if kernel.name == "cpu-int4":
        raise ModelLoadError(f"{flag} runs on the CPU only", hint="use --device cpu, or another kernel")
    if gpu is not None and gpu.capability < kernel.min_capability:
        need = ".".join(map(str, kernel.min_capability))
        raise ModelLoadError(f"{flag} needs compute capability {need} or newer; {gpu.name} has "
                             f"{gpu.capability[0]}.{gpu.capability[1]}", hint="use --awq-kernel auto")
    if kernel.name == "machete" and gpu is not None and gpu.capability != (9, 0):
        raise ModelLoadError(f"{flag} runs on Hopper (compute capability 9.0) only; {gpu.name} has "
                             f"{gpu.capability[0]}.{gpu.capability[1]}", hint="use --awq-kernel auto")
    if kernel.name == "triton":
        problem = triton_problem(machine, gpu, dtype)
        if problem:
            raise ModelLoadError(f"{flag}: {problem}", hint="use --awq-kernel torch, or auto")
        return KernelChoice(kernel, device, "asked for with --awq-kernel", dtype=dtype)
    if kernel.extension is None:
        return KernelChoice(kernel, device, "asked for with --awq-kernel", dtype=dtype)
    cached = extension_for(kernel, dtype) in machine.cached_kernels
    problem = toolchain_problem(machine)
    note = None
    if kernel.name == "machete":
        note = ("Machete's first build downloads CUTLASS from GitHub unless GPTQMODEL_CUTLASS_DIR names a "
                "CUTLASS checkout")
    if cached and kernel.name != "machete":
        return KernelChoice(kernel, device, "asked for with --awq-kernel; its build for this GPU is cached",
                            dtype=dtype)
    if problem is not None:
        raise ModelLoadError(f"{flag} must be compiled first and cannot be here: {problem}",
                             hint="install a CUDA toolkit matching torch's CUDA, or use --awq-kernel triton/torch")
    return KernelChoice(kernel, device, "asked for with --awq-kernel", compile=True, dtype=dtype, note=note)


# ---------------------------------------------------------------------------------------------- attention

def choose_attention(device: str, capability: tuple[int, int] | None, dtype: str,
                     installed: frozenset[str] = frozenset()) -> str:
    """transformers' attn_implementation: FlashAttention-2 where it is installed and runs (sm80+, 16-bit),
    PyTorch's fused SDPA otherwise (it picks flash / memory-efficient kernels itself on the GPU)."""
    if (device.startswith("cuda") and "flash_attn" in installed and capability is not None
            and capability >= (8, 0) and dtype in ("float16", "bfloat16")):
        return "flash_attention_2"
    return "sdpa"


# ---------------------------------------------------------------------------------------------- batching


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
