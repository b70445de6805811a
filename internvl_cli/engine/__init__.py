"""Step 3, engines: the one interface tasks use, and the loader that picks a backend for a model."""
from __future__ import annotations

from .base import Constraint, Engine, GenerationRequest, GenerationResult, Sampling

__all__ = ["Constraint", "Engine", "GenerationRequest", "GenerationResult", "Sampling", "load_engine"]


def load_engine(model: str, device: str = "auto", dtype: str = "auto", revision: str | None = None) -> Engine:
    """Resolves `model` (preset, hub id or local path) for the transformers backend; weights load on `load()`
    or on the first `generate()`."""
    from ..models.checkpoints import resolve_checkpoint
    from .hf import TransformersEngine

    model_dir, model_id = resolve_checkpoint(model, revision)
    return TransformersEngine(model_dir, model_id, device=device, dtype=dtype)
