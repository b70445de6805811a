"""`internvl doctor`: what this machine offers (torch, the NVIDIA driver, GPUs, compilers, cached kernels) and what a
run would do with it: the device, dtype, attention and AWQ kernel it would pick, and why; `--warm` builds the kernel.
"""
from __future__ import annotations

import platform
from importlib import metadata

from .errors import InternVLError
from .models.presets import PRESETS

PACKAGES = ("torch", "transformers", "tokenizers", "gptqmodel", "llguidance", "pillow", "typer", "vllm")
PDF_DISTRIBUTIONS = ("pymupdf-lite", "pymupdf")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def diagnose(device: str = "auto", awq_kernel: str = "auto", machine=None, pages: int | None = None) -> dict:
    """A flat report of one-line values (lists for several); never raises for a missing GPU or package, it says
    so instead. `machine` (hardware/machine.py's Machine) replaces probing this one, for tests; `pages` is the
    run `--engine auto` is weighed for (None: of unknown length)."""
    from . import __version__
    from .hardware.device import capability_of, choose_attention, choose_device, choose_dtype

    if machine is None:
        from .hardware.machine import probe_machine

        machine = probe_machine(toolchain=True, cached_kernels=_version("gptqmodel") is not None, smi=True)
    report: dict = {"internvl-cli": __version__, "python": platform.python_version()}
    build = f"CUDA {machine.torch_cuda}" if machine.torch_cuda else "CPU-only build"
    report["torch"] = f"{machine.torch_version} ({build})" + (
        f", kernels for {', '.join(machine.arch_list)}" if machine.arch_list else "")
    report["packages"] = ", ".join(f"{name} {_version(name) or 'not installed'}" for name in PACKAGES[1:])
    report["pdf"] = _pdf_line()
    report["nvidia driver"] = _driver_line(machine.driver)
    report["gpus"] = [f"cuda:{g.index} {g.name}, compute capability {g.capability[0]}.{g.capability[1]}, "
                      f"{g.total_bytes / 2**30:.1f} GiB" + (f" ({g.free_bytes / 2**30:.1f} free)"
                                                            if g.free_bytes is not None else "")
                      for g in machine.gpus] or ["none visible to torch"]
    try:
        choice = choose_device(machine, device)
    except InternVLError as error:
        report["device"] = f"a run with --device {device} stops: {error.one_line()}"
        choice = None
    else:
        report["device"] = f"{choice.device} (--device {device}): {choice.reason}"
    target = choice.device if choice else "cpu"
    capability = capability_of(machine, target)
    report["dtype"] = (f"AWQ: {choose_dtype('auto', target, capability, True)}, "
                       f"unquantized: {choose_dtype('auto', target, capability, False)}")
    report["attention"] = choose_attention(target, capability, choose_dtype("auto", target, capability, False),
                                               machine.installed)
    report["awq kernel"] = _kernel_line(machine, target, awq_kernel)
    report["toolchain"] = _toolchain_line(machine)
    report["awq install"] = _awq_install_line(machine)
    report["compiled kernels"] = _cache_line(machine)
    report["batch defaults"] = ("8 pages, 64 tiles per batch (CPU)" if not target.startswith("cuda") else
                                "from the GPU memory free after the model loads (README: Speed and memory)")
    gpu_gb = machine.gpus[0].total_bytes / 2**30 if machine.gpus else 0.0
    from .engine import engine_status

    for name, state in engine_status().items():
        report[f"engine {name}"] = state
    report["engine auto"] = _auto_line(machine, device, pages)
    report["presets that fit"] = [name for name, p in PRESETS.items() if gpu_gb and p.gpu_memory_gb <= gpu_gb * 0.9]
    return report


def _auto_line(machine, device: str, pages: int | None) -> str:
    """Which engine `--engine auto` would take for a run of `pages` pages here, and why."""
    import importlib.util

    from .engine.auto import choose_engine, cuda_offered

    name, reason = choose_engine(pages, importlib.util.find_spec("vllm") is not None, cuda_offered(machine, device))
    run = f"a run of {pages} pages" if pages is not None else "a run of unknown length (doctor --pages N)"
    return f"{name} for {run}: {reason}"


def _pdf_line() -> str:
    """Which distribution provides the `pymupdf` module; both at once share (and overwrite) its files."""
    installed = [(name, _version(name)) for name in PDF_DISTRIBUTIONS if _version(name)]
    if not installed:
        return "PyMuPDF not installed"
    text = ", ".join(f"{name} {version}" for name, version in installed)
    if len(installed) > 1:
        text += (" (both provide the `pymupdf` module and overwrite each other's files; internvl-cli works with "
                 "either, never imports the full one's layout analyser, and needs one reinstalled if the other "
                 "is uninstalled)")
    return text


def _driver_line(driver) -> str:
    if not driver.present:
        return "none loaded (no /proc/driver/nvidia/version, no nvidia-smi)"
    parts = [driver.version or "version unknown"]
    if driver.cuda_version:
        parts.append(f"runs CUDA up to {driver.cuda_version}")
    parts.append(f"{len(driver.device_nodes)} /dev/nvidia* device node(s)")
    if driver.gpus:
        parts.append(", ".join(driver.gpus))
    return "; ".join(parts)


def _kernel_line(machine, device: str, forced: str) -> str:
    from .hardware.kernels import choose_awq_kernel

    try:
        choice = choose_awq_kernel(machine, device, "float16" if device.startswith("cuda") else "bfloat16", forced)
    except InternVLError as error:
        return f"a run with --awq-kernel {forced} stops: {error.one_line()}"
    line = f"{choice.kernel.name} on {device} ({choice.kernel.label}): {choice.reason}"
    if choice.compile:
        line += "; `internvl doctor --warm` builds it now"
    if choice.fallback is not None:
        line += f"; should that fail: {choice.fallback.kernel.name}"
    if choice.note:
        line += f"; note: {choice.note}"
    if _version("gptqmodel") is None:
        line += "; gptqmodel is not installed (pip install \"internvl-cli[awq]\")"
    return line


def _toolchain_line(machine) -> str:
    from .hardware.kernels import toolchain_problem

    tools = machine.toolchain
    nvcc = (f"nvcc {'.'.join(map(str, tools.nvcc_version))} ({tools.nvcc})" if tools.nvcc and tools.nvcc_version
            else f"nvcc unreadable ({tools.nvcc})" if tools.nvcc else "nvcc not found")
    parts = [nvcc, f"ninja {'found' if tools.ninja else 'not found'}",
             f"c++ {'found' if tools.cxx else 'not found'}", f"cc {'found' if tools.cc else 'not found'}",
             f"Python.h {'found' if tools.python_headers else 'not found'}",
             f"triton {machine.triton}" if machine.triton else "triton not installed"]
    problem = toolchain_problem(machine)
    verdict = ("compiled CUDA kernels (Marlin, ExLlamaV2, AWQ GEMM) can be built here" if problem is None else
               f"compiled CUDA kernels (Marlin, ExLlamaV2, AWQ GEMM) cannot be built here: {problem}")
    return "; ".join(parts) + f" -> {verdict}"


def _awq_install_line(machine) -> str:
    """Whether the `awq` extra is installed, else what installing it needs here (it builds pypcre from source)."""
    from .hardware.awq import awq_install_line
    from .hardware.machine import pcre2_headers_found

    return awq_install_line(_version("gptqmodel"), _version("pypcre"), bool(machine.toolchain.cc),
                            machine.toolchain.python_headers, pcre2_headers_found())


def _cache_line(machine) -> str:
    from .hardware.machine import kernel_cache_dir

    cached = ", ".join(sorted(machine.cached_kernels)) or "none"
    return f"{cached} (in {kernel_cache_dir()})"


def warm(device: str = "auto", awq_kernel: str = "auto", machine=None) -> str:
    """Build the AWQ kernel a run would use now, so that the first real run (a cron job) does not wait for it.
    Returns what was done; raises the build's error."""
    from .hardware.awq import build_kernel, require_gptqmodel
    from .hardware.device import choose_device
    from .hardware.kernels import choose_awq_kernel

    if machine is None:
        from .hardware.machine import probe_machine

        require_gptqmodel()
        machine = probe_machine(toolchain=True, cached_kernels=True)
    target = choose_device(machine, device).device
    choice = choose_awq_kernel(machine, target, "float16" if target.startswith("cuda") else "bfloat16",
                                   awq_kernel)
    if choice.extension is None:
        return f"nothing to build: the {choice.kernel.name} kernel on {target} needs no compiling"
    if not choice.compile:
        return f"nothing to build: the {choice.kernel.name} kernel's build for this GPU is cached"
    build_kernel(choice)
    return f"built the {choice.kernel.name} kernel for {target} (cached for later runs)"
