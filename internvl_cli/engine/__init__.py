"""Step 3, engines: the one interface tasks use, and the loader that picks a backend for a model."""
from __future__ import annotations

from .base import Constraint, Engine, GenerationRequest, GenerationResult, Sampling

__all__ = ["Constraint", "Engine", "GenerationRequest", "GenerationResult", "Sampling", "check_constraint",
           "load_engine"]


def check_constraint(constraint: Constraint, source: str = "<schema>") -> tuple[str, ...]:
    """Compiles a constraint as the engines' grammar library will (no tokenizer, no model), so an unsupported
    schema fails before anything loads; returns the compiler's warnings."""
    from .constraints import check_constraint as compile_check

    return compile_check(constraint, source)


def load_engine(model: str, device: str = "auto", dtype: str = "auto", revision: str | None = None,
                awq_kernel: str | None = "auto") -> Engine:
    """Resolves `model` (preset, hub id or local path) for the transformers backend; weights load on `load()`
    or on the first `generate()`. `awq_kernel` forces one of engine/gpu.py's KERNELS for AWQ checkpoints;
    None means the engine will not generate (only its configs are read), so AWQ support is not checked."""
    from ..models.checkpoints import resolve_checkpoint
    from .hf import TransformersEngine

    if awq_kernel is not None:
        _check_awq_support(model)
    model_dir, model_id = resolve_checkpoint(model, revision)
    return TransformersEngine(model_dir, model_id, device=device, dtype=dtype, awq_kernel=awq_kernel or "auto")


def _check_awq_support(model: str) -> None:
    """An AWQ preset without gptqmodel fails here, in one line, before its checkpoint is downloaded."""
    from importlib import metadata

    from ..errors import ModelLoadError
    from ..models.presets import find_preset
    from .awq import INSTALL_HINT

    preset = find_preset(model)
    if preset is None or preset.quantization != "awq":
        return
    try:
        metadata.version("gptqmodel")
    except metadata.PackageNotFoundError:
        raise ModelLoadError(f"{preset.name} is an AWQ checkpoint, which needs the gptqmodel package",
                             hint=INSTALL_HINT) from None
