"""`internvl doctor`: what this machine offers (torch, CUDA, GPU memory, versions, AWQ kernels) and which presets fit."""
from __future__ import annotations

from importlib import metadata

from .models.presets import PRESETS

PACKAGES = ("torch", "transformers", "tokenizers", "gptqmodel", "llguidance", "pymupdf", "pillow", "typer", "vllm")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def diagnose() -> dict:
    """A flat report; never raises for a missing GPU or package, it says so instead."""
    import torch

    report: dict = {name: _version(name) for name in PACKAGES}
    report["cuda"] = torch.version.cuda or "none (CPU build of torch)"
    gpu_gb = 0.0
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu_gb = props.total_memory / 2**30
        report["gpu"] = f"{props.name}, {gpu_gb:.1f} GiB"
    else:
        report["gpu"] = "none visible (CPU works for tiny models only)"
    try:
        from .engine.awq import awq_kernel_status

        ok, detail = awq_kernel_status("cuda" if torch.cuda.is_available() else "cpu")
        report["awq kernels"] = ("ok: " if ok else "unavailable: ") + detail
    except Exception as exc:  # the report must still print when the AWQ stack is broken
        report["awq kernels"] = f"unavailable: {exc}"
    from .engine import engine_status

    for name, state in engine_status().items():
        report[f"engine {name}"] = state
    report["presets that fit"] = [name for name, p in PRESETS.items() if gpu_gb and p.gpu_memory_gb <= gpu_gb * 0.9]
    return report
