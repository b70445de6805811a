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


def load_engine(model: str, device: str = "auto", dtype: str = "auto", revision: str | None = None) -> Engine:
    """Resolves `model` (preset, hub id or local path) for the transformers backend; weights load on `load()`
    or on the first `generate()`."""
    from ..models.checkpoints import resolve_checkpoint
    from .hf import TransformersEngine

    model_dir, model_id = resolve_checkpoint(model, revision)
    return TransformersEngine(model_dir, model_id, device=device, dtype=dtype)
