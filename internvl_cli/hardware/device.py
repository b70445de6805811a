"""Hardware, where and how a model runs: device, dtype and attention as pure functions of what the machine reports
(hardware/machine.py), so every case is testable without a GPU."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import DeviceError, UsageError
from .machine import Driver, Gpu, Machine, cuda_major, version_tuple


# The oldest Linux driver each CUDA major version runs on (NVIDIA's CUDA compatibility tables; minor-version
# compatibility lets any 12.x or 13.x runtime use the first driver of its major).
MIN_DRIVER_FOR_CUDA = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# A model bigger than this on the CPU takes minutes per page: `--device auto` warns before starting it there.
CPU_COMFORT_BYTES = 3 * 2**30
# PyTorch's CUDA 12.6 wheels still carry kernels for sm_50 to sm_90 (V100 included); its CUDA 13 wheels start at sm_75.
CUDA_126_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cu126"
CUDA_126_OLDEST = (5, 0)
# The newest builds, for a GPU newer than everything a torch was built for.
NEWEST_TORCH = "pip install --upgrade torch --index-url https://download.pytorch.org/whl/cu130"


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
        index = cuda_index(requested)
        if not machine.gpus:
            why, hint = why_no_cuda(machine)
            raise DeviceError(f"--device {requested}: {why}", hint=hint)
        if index >= len(machine.gpus):
            raise DeviceError(f"--device {requested}: torch sees {len(machine.gpus)} CUDA device(s), "
                              f"numbered 0 to {len(machine.gpus) - 1}", hint="see `internvl doctor`")
        _refuse_without_kernels(machine, machine.gpus[index], f"--device {requested}")
        return DeviceChoice(requested, _describe_gpu(machine.gpus[index]))
    if requested != "auto":
        raise UsageError(f"--device {requested}: use auto, cpu, cuda or cuda:N")
    if machine.gpus:
        _refuse_without_kernels(machine, machine.gpus[0], None, cpu_hint=True)
        return DeviceChoice("cuda", _describe_gpu(machine.gpus[0]))
    if machine.driver.present:
        why, hint = why_no_cuda(machine)
        raise DeviceError(f"an NVIDIA GPU is present but torch cannot use it: {why}",
                          hint=f"{hint}; or run on the CPU on purpose with --device cpu")
    return DeviceChoice("cpu", "no NVIDIA GPU on this machine", cpu_warning(machine, model_bytes))


def arch_problem(capability: tuple[int, int], arch_list: tuple[str, ...] | list[str], torch_cuda: str | None,
                 gpu_name: str = "this GPU") -> DeviceError | None:
    """None when this torch has kernels for a GPU of `capability`, else the error that says which torch does.

    `arch_list` is torch.cuda.get_arch_list(). A `sm_XY` entry (machine code) runs on capability X.Y and later
    minors of major X; an arch-specific `sm_XYa` only on X.Y itself; a `compute_XY` entry (PTX) is compiled by the
    driver for any capability from X.Y on. torch only warns when none fits, and the run then dies at its first
    kernel with "no kernel image is available". An empty list (unknown) is not refused."""
    entries = [_arch_entry(a) for a in arch_list]
    entries = [e for e in entries if e is not None]
    if not entries or any(_runs_on(entry, capability) for entry in entries):
        return None
    cap = f"{capability[0]}.{capability[1]}"
    built = ", ".join(arch_list)
    message = (f"this torch (CUDA {torch_cuda or '?'}) has no kernels for {gpu_name} (compute capability {cap}): "
               f"it is built for {built}")
    oldest = min(kind_cap for _, kind_cap, _ in entries)
    if capability < oldest and capability >= CUDA_126_OLDEST:
        hint = f"install a CUDA 12.6 build of torch, which still has sm_{capability[0]}{capability[1]}: {CUDA_126_TORCH}"
    elif capability < oldest:
        hint = "no current torch build supports this GPU: run on the CPU with --device cpu"
    else:
        hint = f"install a torch built for a newer CUDA: {NEWEST_TORCH}"
    return DeviceError(message, hint=hint)


def _arch_entry(arch: str) -> tuple[str, tuple[int, int], str] | None:
    """'sm_86' -> ('sm', (8, 6), ''), 'compute_90' -> ('compute', (9, 0), ''), 'sm_90a' -> ('sm', (9, 0), 'a')."""
    match = re.fullmatch(r"(sm|compute)_(\d+?)(\d)([a-z]?)", arch.strip())
    if not match:
        return None
    return match.group(1), (int(match.group(2)), int(match.group(3))), match.group(4)


def _runs_on(entry: tuple[str, tuple[int, int], str], capability: tuple[int, int]) -> bool:
    kind, built_for, suffix = entry
    if kind == "compute":
        return capability >= built_for
    if suffix == "a":
        return capability == built_for
    return capability[0] == built_for[0] and capability[1] >= built_for[1]


def _refuse_without_kernels(machine: Machine, gpu: Gpu, asked: str | None, cpu_hint: bool = False) -> None:
    """Stops before anything loads on a GPU this torch has no kernels for (exit 14), instead of at the first kernel."""
    problem = arch_problem(gpu.capability, machine.arch_list, machine.torch_cuda, gpu.name)
    if problem is None:
        return
    hint = problem.hint + ("; or run on the CPU on purpose with --device cpu" if cpu_hint else "")
    raise DeviceError(f"{asked}: {problem.message}" if asked else problem.message, hint=hint)


def cuda_index(device: str) -> int:
    """cuda -> 0, cuda:1 -> 1."""
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not match:
        raise UsageError(f"--device {device}: not a CUDA device name (use cuda or cuda:N)")
    return int(match.group(1) or 0)


def capability_of(machine: Machine, device: str) -> tuple[int, int] | None:
    """The compute capability of the GPU `device` names, or None for the CPU."""
    if not device.startswith("cuda") or not machine.gpus:
        return None
    index = cuda_index(device)
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
    needed = MIN_DRIVER_FOR_CUDA.get(cuda_major(machine.torch_cuda))
    have = version_tuple(driver.version)
    supports = f" (runs CUDA up to {driver.cuda_version})" if driver.cuda_version else ""
    too_old = (have is not None and needed is not None and have < version_tuple(needed)) or (
        driver.cuda_version is not None and cuda_major(driver.cuda_version) < cuda_major(machine.torch_cuda))
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
    major = cuda_major(driver.cuda_version) if driver.cuda_version else None
    if major is None:
        have = version_tuple(driver.version)
        major = max((m for m, need in MIN_DRIVER_FOR_CUDA.items() if have and have >= version_tuple(need)),
                    default=None)
    if major == 12:
        return "CUDA 12: pip install torch --index-url https://download.pytorch.org/whl/cu126"
    return f"CUDA {major}.x" if major else "an older CUDA (see https://pytorch.org/get-started/previous-versions/)"


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


# ---------------------------------------------------------------------------------------------- attention

def choose_attention(device: str, capability: tuple[int, int] | None, dtype: str,
                     installed: frozenset[str] = frozenset()) -> str:
    """transformers' attn_implementation: FlashAttention-2 where it is installed and runs (sm80+, 16-bit),
    PyTorch's fused SDPA otherwise (it picks flash / memory-efficient kernels itself on the GPU)."""
    if (device.startswith("cuda") and "flash_attn" in installed and capability is not None
            and capability >= (8, 0) and dtype in ("float16", "bfloat16")):
        return "flash_attention_2"
    return "sdpa"
