"""Hardware, AWQ kernels: the catalogue of gptqmodel's AWQ GEMM kernels as we name them, and the choice of one
from what the machine reports (capability, compiled builds, toolchain, Triton), with its fallback."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelLoadError, UsageError
from .device import cuda_index
from .machine import Gpu, Machine, cuda_major


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
    if tools.nvcc_version[0] != cuda_major(machine.torch_cuda):
        have = ".".join(map(str, tools.nvcc_version))
        return f"nvcc {have} does not match torch's CUDA {machine.torch_cuda} (the major versions must agree)"
    if not tools.ninja:
        return "ninja is not installed"
    if not tools.cxx:
        return "no C++ compiler (c++, g++ or clang++) is installed"
    # Checked here, not met minutes into a build: cpp_extension includes Python.h, the kernels the CUDA libraries'.
    if not tools.python_headers:
        return "Python's C headers (Python.h) are missing (e.g. apt install python3-dev)"
    if tools.missing_cuda_headers:
        package = "cuda-toolkit-" + machine.torch_cuda.replace(".", "-")
        return (f"the CUDA developer headers {', '.join(tools.missing_cuda_headers)} are missing (nvcc alone is "
                f"not enough; a full CUDA toolkit has them, e.g. apt install {package})")
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
    gpu = machine.gpus[cuda_index(device)] if machine.gpus else None
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
